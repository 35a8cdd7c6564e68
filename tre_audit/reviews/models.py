from django.conf import settings
from django.db import models

from tre_audit.reviews.enums import Decision, ReleaseCondition
from tre_audit.submissions.models import AuditRun, Submission


class Review(models.Model):
    """One checker's decision on one audit of a request."""

    submission = models.ForeignKey(Submission, on_delete=models.PROTECT, related_name="reviews")
    run = models.ForeignKey(AuditRun, on_delete=models.PROTECT, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    decision = models.CharField(max_length=32, choices=Decision.choices)
    reason = models.TextField()
    evidence = models.JSONField(default=list, blank=True)  # report sources the reason relies on
    comment = models.TextField(blank=True)
    justification = models.TextField(blank=True)  # required to approve against a high risk
    needs_admin_signoff = models.BooleanField(default=False)
    condition = models.CharField(max_length=32, choices=ReleaseCondition.choices, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "reviewer"], name="one_review_per_checker_per_audit"
            )
        ]
