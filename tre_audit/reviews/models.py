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
    signed_off_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    signed_off_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "reviewer"], name="one_review_per_checker_per_audit"
            )
        ]


class Comment(models.Model):
    """A remark on one finding of an audit (or on the request), and the replies to it."""

    submission = models.ForeignKey(Submission, on_delete=models.PROTECT, related_name="comments")
    run = models.ForeignKey(AuditRun, on_delete=models.PROTECT, related_name="comments")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    #: The report source it is about, e.g. ``attack:lira_online`` or ``rule:embedded_rows``;
    #: empty for the request as a whole.
    finding = models.CharField(max_length=100, blank=True)
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
