from django.db import models


class Kind(models.TextChoices):
    """What a notification is about; who gets which is decided in submissions.notifications."""

    AUDIT_DONE = "audit_done", "Audit finished"
    AUDIT_FAILED = "audit_failed", "Audit failed"
    DECISION = "decision", "Decision"
    SIGN_OFF = "sign_off", "Sign-off given"
    RELEASE = "release", "Released"
    QUEUE = "queue", "Entered the review queue"
    SIGN_OFF_WAITS = "sign_off_waits", "Sign-off waits"
