"""Notifications: an inbox row per person and an e-mail copy, once the change is committed."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.mail import EmailMessage, get_connection
from django.db import transaction
from django.utils import timezone

from tre_audit.inbox.enums import Kind
from tre_audit.inbox.mail import absolute_url
from tre_audit.inbox.models import Notification

logger = logging.getLogger(__name__)


def notification_send(
    *, users: Iterable[AbstractBaseUser], kind: Kind, subject: str, body: str, url: str
) -> None:
    """Tell ``users`` (each once) after the current transaction commits: an inbox row each,
    and an e-mail to those with an address. ``url`` is the path of the page it is about.

    Nothing is sent if the change is rolled back; a failure to deliver is logged and
    never undoes or fails the change.
    """
    people = list({user.pk: user for user in users}.values())
    if people:
        transaction.on_commit(lambda: _deliver(people, kind, subject, body, url), robust=True)


def _deliver(people: list, kind: Kind, subject: str, body: str, url: str) -> None:
    Notification.objects.bulk_create(
        Notification(user=user, kind=kind, subject=subject, body=body, url=url) for user in people
    )
    _email(people, kind, subject, f"{body}\n\nOpen it here: {absolute_url(url)}\n")


def _email(people: list, kind: Kind, subject: str, body: str) -> None:
    """One message per address (no one sees who else was told); failures are logged."""
    addresses = sorted({user.email for user in people if user.email})
    messages = [
        EmailMessage(f"[tre-audit] {subject}", body, settings.DEFAULT_FROM_EMAIL, [address])
        for address in addresses
    ]
    try:
        get_connection().send_messages(messages)
    except Exception as exc:  # SMTP down, refused, timed out: the inbox row still tells them
        logger.warning("The %s e-mail to %d people was not sent: %s", kind, len(messages), exc)


def notification_open(*, notification: Notification, now: datetime | None = None) -> Notification:
    """Mark ``notification`` read (the first time it is opened); its page is next."""
    if notification.read_at is None:
        notification.read_at = now or timezone.now()
        notification.save(update_fields=["read_at"])
    return notification


def notifications_mark_all_read(*, user: AbstractBaseUser, now: datetime | None = None) -> int:
    """Mark every unread notification of ``user`` read; how many there were."""
    unread = Notification.objects.filter(user=user, read_at__isnull=True)
    return unread.update(read_at=now or timezone.now())
