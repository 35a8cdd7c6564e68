"""One answer for a broken audit log, whichever view met it."""

from django.http import JsonResponse
from django.shortcuts import render

from tre_audit.submissions.exceptions import AuditLogBroken


class AuditLogBrokenMiddleware:
    """While the audit log fails verification every change is refused: a 503 with its reason.

    The services raise :class:`AuditLogBroken` wherever a change would be logged, so no
    view needs to catch it: the web gets a page saying so, the API one JSON sentence.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, AuditLogBroken):
            return None
        if request.path.startswith("/api/"):
            return JsonResponse({"detail": str(exception)}, status=503)
        return render(request, "audit_log_broken.html", {"reason": str(exception)}, status=503)
