"""Web pages' actions on secure endpoints: deploy from a request, stop from anywhere."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from tre_audit.serving import selectors, services
from tre_audit.serving.enums import EndpointKind
from tre_audit.serving.exceptions import ServingError, ServingNotAllowed
from tre_audit.submissions.views import _visible


@login_required
@require_POST
def endpoint_deploy(request, submission_id: int):
    submission = _visible(request, submission_id)
    kind = request.POST.get("kind", "")
    if kind not in EndpointKind.values:
        messages.error(request, "Choose how to serve the model.")
        return redirect(submission)
    try:
        endpoint = services.endpoint_deploy(submission=submission, kind=kind, by=request.user)
    except ServingNotAllowed as exc:
        raise PermissionDenied(str(exc)) from None
    except ServingError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, f"{endpoint.get_kind_display()} endpoint #{endpoint.pk} is running."
        )
    return redirect(f"{submission.get_absolute_url()}#serving")


@login_required
@require_POST
def endpoint_stop(request, endpoint_id: int):
    try:
        endpoint = selectors.endpoint_get_visible(user=request.user, endpoint_id=endpoint_id)
        services.endpoint_stop(endpoint=endpoint, by=request.user, reason="stopped from the web")
    except ServingNotAllowed:
        raise Http404("There is no endpoint with that number you can stop.") from None
    messages.success(request, f"Endpoint #{endpoint_id} stopped.")
    back = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        return redirect(back)
    return redirect(endpoint.submission)
