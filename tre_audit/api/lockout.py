"""What a locked-out sign-in sees: one sentence, as JSON on the API, on the login page else."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render

LOCKED = 429  # Too Many Requests, like the throttles


def lockout_response(request, original_response=None, credentials=None) -> HttpResponse:
    """Axes' lockout answer (``AXES_LOCKOUT_CALLABLE``)."""
    message = settings.AXES_COOLOFF_MESSAGE
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=LOCKED)
    context = {"form": AuthenticationForm(request), "locked_out": message}
    return render(request, "registration/login.html", context, status=LOCKED)
