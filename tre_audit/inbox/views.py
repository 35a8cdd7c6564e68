"""The inbox page: a person's notifications, newest first; opening one marks it read."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from tre_audit.inbox import selectors, services
from tre_audit.inbox.models import Notification

#: Notifications on one inbox page.
PAGE_SIZE = 20


@login_required
@require_GET
def inbox_list(request):
    paginator = Paginator(selectors.notification_list_for(user=request.user), PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    return render(request, "inbox/list.html", {"page": page})


@login_required
@require_GET
def inbox_open(request, notification_id: int):
    notification = get_object_or_404(Notification, pk=notification_id, user=request.user)
    services.notification_open(notification=notification)
    if not url_has_allowed_host_and_scheme(notification.url, allowed_hosts=None):
        return redirect("inbox:list")  # only ever a path on this service
    return redirect(notification.url)


@login_required
@require_POST
def inbox_mark_all_read(request):
    n_marked = services.notifications_mark_all_read(user=request.user)
    messages.success(request, f"{n_marked} notification{'s' if n_marked != 1 else ''} marked read.")
    return redirect("inbox:list")
