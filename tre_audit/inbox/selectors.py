"""What a person may read of their own notifications (and nobody else's)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from tre_audit.inbox.models import Notification


def notification_list_for(*, user: AbstractBaseUser) -> QuerySet[Notification]:
    """``user``'s notifications, newest first."""
    return Notification.objects.filter(user=user)


def notification_unread_count(*, user: AbstractBaseUser) -> int:
    """How many of ``user``'s notifications are unread: one COUNT on an index."""
    return Notification.objects.filter(user=user, read_at__isnull=True).count()
