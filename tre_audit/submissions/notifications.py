"""Emails to the people a change concerns, sent only once the change is committed."""

from __future__ import annotations

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction

from tre_audit.submissions.models import Submission


def notification_send(*, users, subject: str, body: str) -> None:
    """Email ``users`` (those with an address) after the current transaction commits."""
    recipients = sorted({u.email for u in users if u.email})
    if not recipients:
        return
    transaction.on_commit(
        lambda: send_mail(f"[tre-audit] {subject}", body, settings.DEFAULT_FROM_EMAIL, recipients)
    )


def notify_audit_finished(submission: Submission, *, risk: str | None, error: str = "") -> None:
    if error:
        subject = f"Audit of request #{submission.pk} failed"
        body = f"The audit of '{submission.title}' could not finish: {error}"
    else:
        subject = f"Audit of request #{submission.pk} finished: {risk} risk"
        body = f"The audit of '{submission.title}' finished and awaits output checking."
    notification_send(users=[submission.author], subject=subject, body=body)


def notify_decision(
    submission: Submission, *, decision: str, reason: str, comment: str = ""
) -> None:
    subject = f"Request #{submission.pk}: {decision}"
    body = f"'{submission.title}' is now {submission.get_status_display().lower()}.\n\n{reason}"
    if comment:
        body += f"\n\nWhat to change:\n{comment}"
    notification_send(users=[submission.author], subject=subject, body=body)
