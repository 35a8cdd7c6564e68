"""Web pages' actions on secure endpoints: deploy from a request, stop from anywhere,
and (TRE admins, from the dashboard) grant or revoke a partner's right to call."""

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from tre_audit.serving import selectors, services
from tre_audit.serving.enums import EndpointKind
from tre_audit.serving.exceptions import ServingError, ServingNotAllowed
from tre_audit.submissions.selectors import user_is_author_or_admin
from tre_audit.submissions.views import _visible


@login_required
@require_POST
def endpoint_deploy(request, submission_id: int):
    submission = _visible(request, submission_id)
    kind = request.POST.get("kind", "")
    if kind not in EndpointKind.values:
        messages.error(request, "Choose how to serve the model.", extra_tags="serving")
        return redirect(f"{submission.get_absolute_url()}#serving")
    try:
        endpoint = services.endpoint_deploy(submission=submission, kind=kind, by=request.user)
    except ServingNotAllowed as exc:
        raise PermissionDenied(str(exc)) from None
    except ServingError as exc:
        messages.error(request, str(exc), extra_tags="serving")
    else:
        messages.success(
            request,
            f"{endpoint.get_kind_display()} endpoint #{endpoint.pk} is running.",
            extra_tags="serving",
        )
    return redirect(f"{submission.get_absolute_url()}#serving")


@login_required
def enclave_root_certificate(request, submission_id: int):
    """The TRE's enclave root certificate (PEM), for the author or an admin to give the
    partners who call the request's enclave; they pin its fingerprint."""
    submission = _visible(request, submission_id)
    if not user_is_author_or_admin(request.user, submission):
        raise PermissionDenied("Only the author or a TRE admin can download the root certificate.")
    pem = selectors.enclave_root_pem()
    if pem is None:
        raise Http404("No enclave has been deployed here yet, so there is no root certificate.")
    response = HttpResponse(pem, content_type="application/x-pem-file")
    name = selectors.ROOT_DOWNLOAD_NAME
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@login_required
@require_POST
def endpoint_stop(request, endpoint_id: int):
    try:
        endpoint = selectors.endpoint_get_visible(user=request.user, endpoint_id=endpoint_id)
        services.endpoint_stop(endpoint=endpoint, by=request.user, reason="stopped from the web")
    except ServingNotAllowed:
        raise Http404("There is no endpoint with that number you can stop.") from None
    messages.success(request, f"Endpoint #{endpoint_id} stopped.")
    return _back(request, endpoint)


@login_required
@require_POST
def endpoint_callers(request, endpoint_id: int):
    try:
        endpoint = selectors.endpoint_get_visible(user=request.user, endpoint_id=endpoint_id)
    except ServingNotAllowed:
        raise Http404("There is no endpoint with that number.") from None
    caller = get_user_model().objects.filter(username=request.POST.get("username", "")).first()
    revoke = request.POST.get("action") == "revoke"
    change = services.endpoint_caller_revoke if revoke else services.endpoint_caller_grant
    try:
        if caller is None:
            raise ServingError("There is no user with that name.")
        change(
            endpoint=endpoint, caller=caller, by=request.user, reason=request.POST.get("reason", "")
        )
    except ServingNotAllowed as exc:
        raise PermissionDenied(str(exc)) from None
    except ServingError as exc:
        messages.error(request, str(exc))
    else:
        verb = "may no longer call" if revoke else "may now call"
        messages.success(request, f"{caller.get_username()} {verb} endpoint #{endpoint.pk}.")
    return _back(request, endpoint)


def _back(request, endpoint):
    back = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        return redirect(back)
    return redirect(endpoint.submission)
