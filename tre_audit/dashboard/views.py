"""The TRE admin dashboard: pages gather selectors; each form posts to one service."""

from __future__ import annotations

from functools import wraps

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from tre_audit import charts
from tre_audit.dashboard import selectors
from tre_audit.dashboard.forms import PolicyForm, SignOffForm, UserCreateForm, UserRolesForm
from tre_audit.reviews.enums import Role
from tre_audit.reviews.exceptions import ReviewInvalid, ReviewNotAllowed
from tre_audit.reviews.models import Review
from tre_audit.reviews.services import (
    review_sign_off,
    user_create,
    user_has_role,
    user_roles_set,
)
from tre_audit.serving.selectors import endpoint_list_running
from tre_audit.submissions.exceptions import SubmissionError
from tre_audit.submissions.services import policy_version_create


def tre_admin_required(view):
    """Anonymous users go to the login page; signed-in users without the admin role get 403."""

    @login_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not user_has_role(request.user, Role.TRE_ADMIN):
            raise PermissionDenied("Only TRE admins see the dashboard.")
        return view(request, *args, **kwargs)

    return wrapped


# The overview ----------------------------------------------------------------


@tre_admin_required
@require_GET
def index(request):
    return render(request, "dashboard/index.html", _index_context(request))


def _index_context(request, *, sign_off_errors: dict | None = None) -> dict:
    return {
        "chain_broken": selectors.audit_chain_broken(),
        "status_counts": selectors.submission_counts_by_status(),
        "broker": selectors.broker_overview(),
        "active": selectors.audit_run_list_active(),
        "failed": selectors.audit_run_list_failed(),
        "retried": selectors.audit_run_list_retried(),
        "decision_times": selectors.decision_time_stats(),
        "risks": selectors.risk_distribution(),
        "refusal_reasons": selectors.rejection_reason_counts(),
        "sign_offs": selectors.sign_off_list_pending(admin=request.user),
        "endpoints": endpoint_list_running(),
        "sign_off_errors": sign_off_errors or {},
        "charts": _charts(now=timezone.now()),
    }


def _charts(*, now) -> list[charts.Panel]:
    return charts.dashboard_charts(
        activity=selectors.submission_activity_by_week(now=now),
        decision_times=selectors.decision_time_histogram(now=now),
        risks=selectors.risk_distribution(),
    )


@tre_admin_required
@require_POST
def sign_off(request, review_id: int):
    review = get_object_or_404(Review.objects.select_related("submission"), id=review_id)
    form = SignOffForm(request.POST)
    try:
        if not form.is_valid():
            raise ReviewInvalid("Say why you sign off this approval.")
        review_sign_off(review=review, admin=request.user, reason=form.cleaned_data["reason"])
    except ReviewNotAllowed as exc:
        raise PermissionDenied(str(exc)) from None
    except ReviewInvalid as exc:
        context = _index_context(request, sign_off_errors={review.id: str(exc)})
        return render(request, "dashboard/index.html", context, status=400)
    messages.success(request, f"You signed off the approval of request #{review.submission_id}.")
    return redirect("dashboard:index")


# The audit log -----------------------------------------------------------------


@tre_admin_required
@require_GET
def audit_log(request):
    context = {
        "chain": selectors.audit_chain_status(),
        "entries": selectors.audit_entry_list_newest(limit=200),
    }
    return render(request, "dashboard/audit_log.html", context)


# Users -------------------------------------------------------------------------


@tre_admin_required
@require_GET
def users(request):
    return render(request, "dashboard/users.html", _users_context(request))


def _users_context(request, *, create_form=None, roles_errors: dict | None = None) -> dict:
    return {
        "users": selectors.user_list_with_roles(),
        "roles": [{"value": role.value, "label": role.label} for role in Role],
        "create_form": create_form or UserCreateForm(),
        "roles_errors": roles_errors or {},
    }


@tre_admin_required
@require_POST
def user_roles(request, user_id: int):
    user = get_object_or_404(get_user_model(), pk=user_id)
    form = UserRolesForm(request.POST)
    try:
        if not form.is_valid():
            raise ReviewInvalid("Choose roles from the list.")
        user_roles_set(user=user, roles=set(form.cleaned_data["roles"]), by=request.user)
    except ReviewNotAllowed as exc:
        if request.user.pk == user.pk:  # removing one's own admin role: a fixable mistake
            return _users_page_error(request, roles_errors={user.pk: str(exc)})
        raise PermissionDenied(str(exc)) from None
    except ReviewInvalid as exc:
        return _users_page_error(request, roles_errors={user.pk: str(exc)})
    messages.success(request, f"Roles of {user.get_username()} saved.")
    return redirect("dashboard:users")


@tre_admin_required
@require_POST
def user_new(request):
    form = UserCreateForm(request.POST)
    if not form.is_valid():
        return _users_page_error(request, create_form=form)
    try:
        user = user_create(
            username=form.cleaned_data["username"],
            email=form.cleaned_data["email"],
            password=form.cleaned_data["password"],
            roles=set(form.cleaned_data["roles"]),
            by=request.user,
        )
    except ReviewNotAllowed as exc:
        raise PermissionDenied(str(exc)) from None
    except ReviewInvalid as exc:
        form.add_error(None, str(exc))
        return _users_page_error(request, create_form=form)
    messages.success(request, f"User {user.get_username()} created.")
    return redirect("dashboard:users")


def _users_page_error(request, **context):
    return render(request, "dashboard/users.html", _users_context(request, **context), status=400)


# The risk policy ---------------------------------------------------------------


@tre_admin_required
@require_GET
def policy(request):
    overview = selectors.policy_overview()
    form = PolicyForm(initial={"text": overview["current"]["text"]})
    return render(request, "dashboard/policy.html", {"policy": overview, "form": form})


@tre_admin_required
@require_POST
def policy_new(request):
    form = PolicyForm(request.POST)
    if form.is_valid():
        try:
            saved = policy_version_create(
                text=form.cleaned_data["text"], note=form.cleaned_data["note"], by=request.user
            )
        except SubmissionError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Policy version {saved.version} saved: new audits use it.")
            return redirect("dashboard:policy")
    context = {"policy": selectors.policy_overview(), "form": form}
    return render(request, "dashboard/policy.html", context, status=400)
