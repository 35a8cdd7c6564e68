"""Build state through the services, so a test cannot reach a state the app cannot."""

from __future__ import annotations

import itertools

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from tre_audit.submissions.enums import RunStatus, Status
from tre_audit.submissions.models import AuditRun, Submission
from tre_audit.submissions.services import submission_set_status

_names = itertools.count()

#: A path of allowed transitions from SUBMITTED to each status.
PATHS = {
    Status.SUBMITTED: [],
    Status.AUDITING: [Status.AUDITING],
    Status.AUDIT_FAILED: [Status.AUDITING, Status.AUDIT_FAILED],
    Status.AWAITING_REVIEW: [Status.AUDITING, Status.AWAITING_REVIEW],
    Status.CHANGES_REQUESTED: [Status.AUDITING, Status.AWAITING_REVIEW, Status.CHANGES_REQUESTED],
    Status.APPROVED: [Status.AUDITING, Status.AWAITING_REVIEW, Status.APPROVED],
    Status.REJECTED: [Status.AUDITING, Status.AWAITING_REVIEW, Status.REJECTED],
    Status.WITHDRAWN: [Status.WITHDRAWN],
    Status.RELEASED: [Status.AUDITING, Status.AWAITING_REVIEW, Status.APPROVED, Status.RELEASED],
}


def create_user(username: str | None = None, role: str | None = None):
    name = username or f"user{next(_names)}"
    user = get_user_model().objects.create_user(name, email=f"{name}@tre.example", password="pw")
    if role is not None:
        user.groups.add(Group.objects.get(name=role))
    return user


def create_submission_at_status(status: Status, author=None, risk: str = "low") -> Submission:
    """A request walked to ``status``; from AUDITING on, it has a finished audit of ``risk``."""
    submission = Submission.objects.create(title="A model", author=author or create_user())
    for step in PATHS[status]:
        if step == Status.AWAITING_REVIEW:
            AuditRun.objects.create(
                submission=submission,
                status=RunStatus.DONE,
                progress=1.0,
                report={"verdict": {"risk": risk, "reasons": []}},
                risk=risk,
            )
        submission_set_status(submission=submission, to=step, by=None, reason="test")
    return submission
