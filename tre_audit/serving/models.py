from django.conf import settings
from django.db import models

from tre_audit.serving.enums import EndpointKind, EndpointStatus
from tre_audit.submissions.models import Submission


class Endpoint(models.Model):
    """An approved model served without exposing either side's data."""

    submission = models.ForeignKey(Submission, on_delete=models.PROTECT, related_name="endpoints")
    kind = models.CharField(max_length=16, choices=EndpointKind.choices)
    status = models.CharField(
        max_length=16, choices=EndpointStatus.choices, default=EndpointStatus.RUNNING
    )
    model_sha256 = models.CharField(max_length=64)
    #: Besides the author, who may send data (a partner's account).
    callers = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+")
    preset = models.CharField(max_length=16, blank=True)  # HE parameter preset
    socket_path = models.CharField(max_length=255, blank=True)  # enclave host
    pid = models.IntegerField(null=True, blank=True)
    n_calls = models.PositiveBigIntegerField(default=0)
    n_bytes_in = models.PositiveBigIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.get_kind_display()} endpoint #{self.pk} for request #{self.submission_id}"
