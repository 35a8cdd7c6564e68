"""API errors: domain exceptions become 4xx with one sentence, never a traceback.

Every error body has ``detail``, one sentence a script or the CLI can print.
Invalid input also keeps DRF's per-field messages under ``errors``. An unexpected
error is a 500 with one sentence too (``server_error``, the project's handler500).
"""

import math

from django.http import JsonResponse
from django.views import defaults
from rest_framework import status
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler

from tre_audit.reviews.exceptions import ReviewInvalid, ReviewNotAllowed
from tre_audit.submissions.exceptions import (
    AuditLogBroken,
    InvalidTransition,
    NotAllowed,
    SubmissionError,
    UploadRefused,
)

_STATUS = [
    (AuditLogBroken, status.HTTP_503_SERVICE_UNAVAILABLE),
    (NotAllowed, status.HTTP_404_NOT_FOUND),
    (ReviewNotAllowed, status.HTTP_403_FORBIDDEN),
    (InvalidTransition, status.HTTP_409_CONFLICT),
    (UploadRefused, status.HTTP_400_BAD_REQUEST),
    (ReviewInvalid, status.HTTP_400_BAD_REQUEST),
    (SubmissionError, status.HTTP_400_BAD_REQUEST),
]


def api_exception_handler(exc, context):
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            return Response({"detail": str(exc)}, status=code)
    response = exception_handler(exc, context)
    if response is not None and isinstance(exc, ValidationError):
        response.data = {"detail": first_message(exc.detail), "errors": exc.detail}
    if response is not None and isinstance(exc, Throttled):
        wait = f"in {math.ceil(exc.wait)} seconds" if exc.wait else "later"
        response.data = {"detail": f"Too many requests: try again {wait}."}
    return response


def server_error(request):
    """handler500: JSON for the API, Django's plain page for the web; no internals either way."""
    if request.path.startswith("/api/"):
        detail = "The server failed to answer this request; the error has been logged."
        return JsonResponse({"detail": detail}, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    return defaults.server_error(request)


def first_message(detail, field: str = "") -> str:
    """The first message of DRF's nested error detail, prefixed by its field's name."""
    if isinstance(detail, dict):
        name, value = next(iter(detail.items()), ("", ""))
        inner = "" if name in ("non_field_errors", "") else str(name)
        return first_message(value, f"{field}.{inner}" if field and inner else field or inner)
    if isinstance(detail, list):
        return first_message(detail[0], field) if detail else "Invalid input."
    return f"{field}: {detail}" if field else str(detail)
