"""Dashboard test data, built through the services (with the clock set where it matters)."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from unittest import mock

from tests import factories
from tests.attacks.report_fixture import sample_report
from tre_audit.reviews.enums import Decision, Role
from tre_audit.reviews.services import review_submit
from tre_audit.submissions.enums import RunStatus, Status
from tre_audit.submissions.models import AuditRun, Submission
from tre_audit.submissions.selectors import current_run
from tre_audit.submissions.services import audit_entry_append, submission_set_status

#: A fixed start for requests whose timing a test checks.
T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


@contextmanager
def clock(at: datetime):
    """Entries and rows written inside are stamped ``at``."""
    with mock.patch("django.utils.timezone.now", return_value=at):
        yield


def submitted_request(*, at: datetime = T0, author=None) -> Submission:
    """A request as submission_create leaves it: SUBMITTED, with its "submitted" entry."""
    with clock(at):
        submission = factories.create_submission_at_status(Status.SUBMITTED, author=author)
        audit_entry_append(
            submission=submission,
            action="submitted",
            after=Status.SUBMITTED,
            by=submission.author,
            reason=submission.title,
        )
    return submission


def audited(submission: Submission, *, report: dict | None = None, at: datetime | None = None):
    """Audit ``submission`` (SUBMITTED -> AUDITING -> AWAITING_REVIEW) with ``report``."""
    report = report or sample_report()
    with clock(at or T0 + timedelta(minutes=30)):
        submission_set_status(submission=submission, to=Status.AUDITING, by=None)
        AuditRun.objects.create(
            submission=submission,
            version=submission.version,
            status=RunStatus.DONE,
            progress=1.0,
            report=report,
        )
        submission_set_status(submission=submission, to=Status.AWAITING_REVIEW, by=None)
    return submission


def decided_after(hours: float, to: Status = Status.REJECTED, *, start: datetime = T0):
    """A request submitted at ``start`` and decided (``to``) ``hours`` later."""
    submission = audited(submitted_request(at=start), at=start + timedelta(minutes=1))
    with clock(start + timedelta(hours=hours)):
        submission_set_status(submission=submission, to=to, by=None, reason="decided")
    return submission


def review(submission: Submission, decision: Decision, evidence: list[str], **extra):
    """One review by a fresh checker, with the fields the decision requires."""
    checker = factories.create_user(role=Role.CHECKER)
    if decision == Decision.REQUEST_CHANGES:
        extra.setdefault("comment", "Raise min_samples_leaf.")
    if decision == Decision.APPROVE:
        extra.setdefault("justification", "Released behind a query-only endpoint.")
    return review_submit(
        submission=submission,
        run_id=current_run(submission).id,
        reviewer=checker,
        decision=decision,
        reason="Members are exposed.",
        evidence=evidence,
        **extra,
    )


@contextmanager
def broker_connects(port: int):
    """Record the socket timeout of every connection attempt to ``port``.

    How long a page may wait on a dead broker is a property of these attempts (how
    many, and the timeout each carries), not of a stopwatch on a loaded machine.
    """
    import socket

    attempts: list[float | None] = []
    connect = socket.socket.connect

    def recording(sock, address):
        if isinstance(address, tuple) and address[1] == port:
            attempts.append(sock.gettimeout())
        return connect(sock, address)

    with mock.patch.object(socket.socket, "connect", recording):
        yield attempts
