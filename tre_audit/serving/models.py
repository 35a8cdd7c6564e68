from django.conf import settings
from django.db import models

from tre_audit.serving.enums import EndpointKind, EndpointStatus, MpcSessionStatus
from tre_audit.submissions.models import Submission


class Endpoint(models.Model):
    """An approved model served without exposing either side's data."""

    submission = models.ForeignKey(Submission, on_delete=models.PROTECT, related_name="endpoints")
    kind = models.CharField(max_length=16, choices=EndpointKind.choices)
    status = models.CharField(
        max_length=16, choices=EndpointStatus.choices, default=EndpointStatus.STARTING
    )
    #: Why a FAILED endpoint stopped serving (one sentence, shown as is).
    failure_reason = models.CharField(max_length=500, blank=True)
    model_sha256 = models.CharField(max_length=64)
    #: Besides the author, who may send data: granted by a TRE admin, logged.
    callers = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+")
    preset = models.CharField(max_length=16, blank=True)  # HE parameter preset
    socket_path = models.CharField(max_length=255, blank=True)  # enclave host
    pid = models.IntegerField(null=True, blank=True)  # enclave host; MPC: the owner's host
    #: MPC: the dealer host started for this endpoint (None: the TRE's own dealer).
    dealer_pid = models.IntegerField(null=True, blank=True)
    #: MPC: where partners reach the model owner's and the dealer's hosts ("host:port").
    owner_address = models.CharField(max_length=300, blank=True)
    dealer_address = models.CharField(max_length=300, blank=True)
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


class CallerUsage(models.Model):
    """What one caller spent on one request's endpoints on one UTC day (its query budget).

    Counted with conditional UPDATEs, so concurrent calls never overspend.
    """

    submission = models.ForeignKey(Submission, on_delete=models.CASCADE, related_name="+")
    caller = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    n_calls = models.PositiveIntegerField(default=0)
    n_rows = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["submission", "caller", "day"], name="one_usage_per_caller_and_day"
            )
        ]


class MpcSession(models.Model):
    """One partner's secure-inference session on an MPC endpoint: counts, never data.

    Its rows are reserved in the caller's budget when it opens; closing it reads
    what the model owner's host recorded and refunds a session that never ran.
    """

    endpoint = models.ForeignKey(Endpoint, on_delete=models.PROTECT, related_name="mpc_sessions")
    caller = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    session = models.CharField(max_length=32, unique=True)  # secrets.token_hex(16)
    usage = models.ForeignKey(CallerUsage, on_delete=models.PROTECT, related_name="+")
    n_rows = models.PositiveIntegerField()  # reserved at opening; what ran, once done
    status = models.CharField(
        max_length=16, choices=MpcSessionStatus.choices, default=MpcSessionStatus.OPEN
    )
    n_bytes = models.PositiveBigIntegerField(default=0)  # received by the model owner
    rounds = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
