"""Who hears of what happens to a request, and in what words.

Each ``notify_*`` is called by the service that made the change, inside its
transaction; ``notification_send`` delivers once it commits. Messages name the
request by number and title and link to its page; they never quote a data value.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

from tre_audit.inbox.enums import Kind
from tre_audit.inbox.services import notification_send
from tre_audit.reviews.enums import Role
from tre_audit.submissions.enums import Status
from tre_audit.submissions.models import Submission


def _active_with_role(role: Role, *, but: tuple[int | None, ...] = ()) -> list[AbstractBaseUser]:
    """Active users with ``role``, less those whose ids are in ``but``."""
    users = get_user_model().objects.filter(is_active=True, groups__name=role)
    return list(users.exclude(pk__in=[pk for pk in but if pk is not None]).distinct())


def _to_author(submission: Submission, *, kind: Kind, subject: str, body: str) -> None:
    notification_send(
        users=[submission.author],
        kind=kind,
        subject=f"Request #{submission.pk}: {subject}",
        body=body,
        url=submission.get_absolute_url(),
    )


def notify_audit_finished(submission: Submission, *, risk: str | None, error: str = "") -> None:
    """The author hears how the audit ended; once it succeeded, checkers hear of its review."""
    if error:
        body = f"The audit of '{submission.title}' could not finish: {error}"
        _to_author(submission, kind=Kind.AUDIT_FAILED, subject="audit failed", body=body)
        return
    body = f"The audit of '{submission.title}' finished and awaits output checking."
    _to_author(submission, kind=Kind.AUDIT_DONE, subject=f"audit finished, {risk} risk", body=body)
    notify_review_waits(submission, risk=risk)


def notify_review_waits(submission: Submission, *, risk: str | None) -> None:
    """Every active checker but the author: a version entered the review queue."""
    notification_send(
        users=_active_with_role(Role.CHECKER, but=(submission.author_id,)),
        kind=Kind.QUEUE,
        subject=f"Request #{submission.pk} waits for review ({risk} risk)",
        body=(
            f"Version {submission.version} of '{submission.title}' by "
            f"{submission.author.get_username()} was audited and entered the review queue."
        ),
        url=submission.get_absolute_url(),
    )


def notify_decision(submission: Submission, *, reason: str, comment: str = "") -> None:
    """The author hears each checker's decision: the one that moved the request on, with
    what to change, or a first approval that waits for a second checker."""
    if submission.status == Status.AWAITING_REVIEW:  # approved once, not yet twice
        subject = "approved by one checker"
        body = f"'{submission.title}' has one approval; a second checker must approve too."
    else:
        subject = submission.get_status_display().lower()
        body = f"'{submission.title}' is now {subject}."
    body += f"\n\nThe checker's reason: {reason}"
    if comment:
        body += f"\n\nWhat to change:\n{comment}"
    _to_author(submission, kind=Kind.DECISION, subject=subject, body=body)


def notify_sign_off_waits(review) -> None:
    """TRE admins who may countersign hear of an approval given against a high risk."""
    if not review.needs_admin_signoff:
        return
    submission = review.submission
    notification_send(
        users=_active_with_role(Role.TRE_ADMIN, but=(review.reviewer_id, submission.author_id)),
        kind=Kind.SIGN_OFF_WAITS,
        subject=f"Request #{submission.pk}: a high-risk approval waits for your sign-off",
        body=(
            f"{review.reviewer.get_username()} approved '{submission.title}' against a "
            "high-risk verdict. It can be neither released nor served until a TRE admin "
            "other than the checker and the author signs the approval off."
        ),
        url=submission.get_absolute_url(),
    )


def notify_signed_off(review) -> None:
    body = (
        f"{review.signed_off_by.get_username()} signed off the high-risk approval of "
        f"'{review.submission.title}' by {review.reviewer.get_username()}."
    )
    _to_author(review.submission, kind=Kind.SIGN_OFF, subject="approval signed off", body=body)


def notify_released(submission: Submission, *, with_model: bool) -> None:
    how = "as a file" if with_model else "behind a secure endpoint only (no model weights)"
    body = f"'{submission.title}' was released {how}; its bundle is on the request page."
    _to_author(submission, kind=Kind.RELEASE, subject="released", body=body)
