from django.conf import settings
from django.db import models
from django.utils import timezone

from tre_audit.inbox.enums import Kind


class Notification(models.Model):
    """One message to one person in their in-app inbox (the e-mail, if any, is its copy)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    kind = models.CharField(max_length=32, choices=Kind.choices)
    subject = models.CharField(max_length=200)
    body = models.TextField()
    #: A path on this service (the request page); e-mails carry it made absolute.
    url = models.CharField(max_length=500)
    created_at = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # the header's unread count on every page, and each inbox page
        indexes = [models.Index(fields=["user", "read_at"], name="inbox_user_unread")]

    def __str__(self):
        return self.subject
