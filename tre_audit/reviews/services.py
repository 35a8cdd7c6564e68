"""Review decisions and the two-checker rule."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from tre_audit.reviews.enums import Decision, ReleaseCondition, Role
from tre_audit.reviews.exceptions import ReviewInvalid, ReviewNotAllowed
from tre_audit.reviews.models import Review
from tre_audit.submissions.enums import RunStatus, Status
from tre_audit.submissions.models import AuditRun, Submission
from tre_audit.submissions.notifications import notify_decision
from tre_audit.submissions.services import audit_entry_append, submission_set_status

#: Approvals by different checkers, neither the author, before a request is approved.
APPROVALS_NEEDED = 2

_OUTCOME = {Decision.REJECT: Status.REJECTED, Decision.REQUEST_CHANGES: Status.CHANGES_REQUESTED}


def user_has_role(user: AbstractBaseUser, role: Role) -> bool:
    return user.is_authenticated and user.groups.filter(name=role).exists()


def current_run(submission: Submission) -> AuditRun | None:
    """The newest finished audit: the evidence reviews are about."""
    return submission.runs.filter(status=RunStatus.DONE).order_by("-created_at").first()


def check_user_can_review(user: AbstractBaseUser, submission: Submission) -> None:
    """Raise ReviewNotAllowed, saying why, unless ``user`` may review ``submission`` now."""
    if not user_has_role(user, Role.CHECKER):
        raise ReviewNotAllowed("Only output checkers can review requests.")
    if submission.author_id == user.pk:
        raise ReviewNotAllowed("Checkers cannot review their own requests.")
    if submission.status != Status.AWAITING_REVIEW:
        raise ReviewNotAllowed("This request is not awaiting review.")
    if Review.objects.filter(run=current_run(submission), reviewer=user).exists():
        raise ReviewNotAllowed("You have already reviewed this audit.")


def user_can_review(user: AbstractBaseUser, submission: Submission) -> bool:
    try:
        check_user_can_review(user, submission)
    except ReviewNotAllowed:
        return False
    return True


@transaction.atomic
def review_submit(
    *,
    submission: Submission,
    reviewer: AbstractBaseUser,
    decision: Decision,
    reason: str,
    evidence: list[str] = (),
    comment: str = "",
    justification: str = "",
    condition: str = "",
) -> Review:
    """Record a checker's decision and move the request on when the rule is met."""
    submission = Submission.objects.select_for_update().get(pk=submission.pk)
    check_user_can_review(reviewer, submission)
    run = current_run(submission)
    high_risk = (run.report or {}).get("verdict", {}).get("risk") == "high"
    _check_review(decision, reason, comment, justification, high_risk)
    review = Review.objects.create(
        submission=submission,
        run=run,
        reviewer=reviewer,
        decision=decision,
        reason=reason.strip(),
        evidence=list(evidence),
        comment=comment.strip(),
        justification=justification.strip(),
        needs_admin_signoff=decision == Decision.APPROVE and high_risk,
        condition=(condition or ReleaseCondition.AS_FILE) if decision == Decision.APPROVE else "",
    )
    audit_entry_append(
        submission=submission, action=f"review:{decision}", by=reviewer, reason=reason.strip()
    )
    _apply_outcome(submission, run, decision, reviewer, reason)
    if submission.status != Status.AWAITING_REVIEW:
        notify_decision(
            submission, decision=Decision(decision).label.lower(), reason=reason, comment=comment
        )
    return review


def _check_review(decision, reason, comment, justification, high_risk) -> None:
    if not reason.strip():
        raise ReviewInvalid("Give the reason for your decision and the evidence it relies on.")
    if decision == Decision.REQUEST_CHANGES and not comment.strip():
        raise ReviewInvalid("Say what should change: a comment is required to request changes.")
    if decision == Decision.APPROVE and high_risk and not justification.strip():
        raise ReviewInvalid("Approving against a high-risk verdict needs a written justification.")


def _apply_outcome(submission, run, decision, reviewer, reason) -> None:
    if decision in _OUTCOME:
        submission_set_status(
            submission=submission, to=_OUTCOME[decision], by=reviewer, reason=reason
        )
        return
    approvers = set(
        Review.objects.filter(run=run, decision=Decision.APPROVE).values_list(
            "reviewer_id", flat=True
        )
    )
    if len(approvers) >= APPROVALS_NEEDED:
        submission_set_status(
            submission=submission,
            to=Status.APPROVED,
            by=reviewer,
            reason=f"approved by {len(approvers)} checkers",
        )
