"""Review decisions and the two-checker rule."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from tre_audit.reviews.enums import Decision, ReleaseCondition, Role
from tre_audit.reviews.exceptions import ReviewInvalid, ReviewNotAllowed
from tre_audit.reviews.models import Comment, Review
from tre_audit.submissions.enums import AuditAction, Status
from tre_audit.submissions.models import AuditRun, Submission
from tre_audit.submissions.notifications import (
    notify_decision,
    notify_released,
    notify_sign_off_waits,
    notify_signed_off,
)
from tre_audit.submissions.selectors import current_run, user_is_author_or_admin
from tre_audit.submissions.services import (
    audit_entry_append,
    release_bundle_build,
    submission_lock,
    submission_set_status,
)

#: Approvals by different checkers, neither the author, before a request is approved.
APPROVALS_NEEDED = 2

_OUTCOME = {Decision.REJECT: Status.REJECTED, Decision.REQUEST_CHANGES: Status.CHANGES_REQUESTED}


def user_has_role(user: AbstractBaseUser, role: Role) -> bool:
    return user.is_authenticated and user.groups.filter(name=role).exists()


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
    run_id: int,
    decision: Decision,
    reason: str,
    evidence: list[str] = (),
    comment: str = "",
    justification: str = "",
    condition: str = "",
) -> Review:
    """Record a checker's decision on audit run ``run_id`` (the one they read) and move
    the request on when the rule is met; decided on the request's locked row."""
    submission_lock(submission=submission)
    run = AuditRun.objects.filter(submission=submission, pk=run_id).first()
    _check_not_superseded(submission, run)
    check_user_can_review(reviewer, submission)
    if run is None or run != current_run(submission):
        raise ReviewInvalid("That audit is not the one under review: reload the page.")
    high_risk = (run.report or {}).get("verdict", {}).get("risk") == "high"
    _check_review(decision, reason, comment, justification, high_risk)
    _check_evidence(evidence, finding_sources(run))
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
    notify_decision(submission, reason=reason, comment=comment)
    notify_sign_off_waits(review)
    return review


def _check_not_superseded(submission: Submission, run: AuditRun | None) -> None:
    """A review of an earlier version's audit is refused: the evidence has changed."""
    if run is not None and run.version < submission.version:
        raise ReviewInvalid(
            f"Version {submission.version} has been submitted since you opened this page; "
            "read its report before deciding."
        )


def _check_review(decision, reason, comment, justification, high_risk) -> None:
    if not reason.strip():
        raise ReviewInvalid(
            "Give the reason for your decision and the evidence it relies on.", field="reason"
        )
    if decision == Decision.REQUEST_CHANGES and not comment.strip():
        raise ReviewInvalid(
            "Say what should change: a comment is required to request changes.", field="comment"
        )
    if decision == Decision.APPROVE and high_risk and not justification.strip():
        raise ReviewInvalid(
            "Approving against a high-risk verdict needs a written justification.",
            field="justification",
        )


def _check_evidence(evidence, sources) -> None:
    if sources and not evidence:
        raise ReviewInvalid(
            "Cite the findings of the report your decision relies on.", field="evidence"
        )
    unknown = sorted(set(evidence) - set(sources))
    if unknown:
        raise ReviewInvalid(f"{unknown[0]} is not a finding of this audit's report.")


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


def check_user_can_sign_off(user: AbstractBaseUser, review: Review) -> None:
    """Raise ReviewNotAllowed unless ``user`` may countersign this high-risk approval."""
    if not user_has_role(user, Role.TRE_ADMIN):
        raise ReviewNotAllowed("Only TRE admins can sign off a high-risk approval.")
    if not review.needs_admin_signoff or review.signed_off_at is not None:
        raise ReviewNotAllowed("This review does not await an admin's sign-off.")
    submission = review.submission
    if submission.status not in (Status.AWAITING_REVIEW, Status.APPROVED):
        raise ReviewNotAllowed("Only approvals of a request still under review can be signed off.")
    if review.run_id != getattr(current_run(submission), "id", None):
        raise ReviewNotAllowed("This approval is of an earlier audit: the evidence has changed.")
    if user.pk in (review.reviewer_id, review.submission.author_id):
        raise ReviewNotAllowed("Sign-off must come from someone other than the checker or author.")


@transaction.atomic
def review_sign_off(*, review: Review, admin: AbstractBaseUser, reason: str) -> Review:
    """An admin countersigns an approval given against a high-risk verdict."""
    check_user_can_sign_off(admin, review)
    if not reason.strip():
        raise ReviewInvalid("Say why you sign off this approval.")
    review.signed_off_by = admin
    review.signed_off_at = timezone.now()
    review.save(update_fields=["signed_off_by", "signed_off_at"])
    audit_entry_append(
        submission=review.submission, action="sign-off", by=admin, reason=reason.strip()
    )
    notify_signed_off(review)
    return review


def pending_sign_offs(submission: Submission) -> list[Review]:
    """Approvals of the current audit that still wait for an admin's sign-off."""
    return list(
        Review.objects.filter(
            run=current_run(submission),
            decision=Decision.APPROVE,
            needs_admin_signoff=True,
            signed_off_at__isnull=True,
        )
    )


def release_condition(submission: Submission) -> str:
    """The strictest condition any approval of the current audit set."""
    conditions = set(
        Review.objects.filter(run=current_run(submission), decision=Decision.APPROVE).values_list(
            "condition", flat=True
        )
    )
    if ReleaseCondition.ENDPOINT_ONLY in conditions:
        return ReleaseCondition.ENDPOINT_ONLY
    return ReleaseCondition.AS_FILE


def check_approval_signed_off(submission: Submission) -> None:
    """Raise ReviewNotAllowed while an approval of the current audit awaits an admin's sign-off.

    Release and secure serving both wait for it: the model leaves by neither way before.
    """
    if pending_sign_offs(submission):
        raise ReviewNotAllowed("A high-risk approval still waits for a TRE admin's sign-off.")


def check_user_can_release(user: AbstractBaseUser, submission: Submission) -> None:
    if not user_is_author_or_admin(user, submission):
        raise ReviewNotAllowed("Only the author or a TRE admin can release a request.")
    if submission.status != Status.APPROVED:
        raise ReviewNotAllowed("Only an approved request can be released.")
    check_approval_signed_off(submission)


def user_can_release(user: AbstractBaseUser, submission: Submission) -> bool:
    try:
        check_user_can_release(user, submission)
    except ReviewNotAllowed:
        return False
    return True


@transaction.atomic
def submission_release(*, submission: Submission, by: AbstractBaseUser) -> Submission:
    """Release an approved request: build its bundle and mark it RELEASED.

    When an approval says the model may leave only behind a secure endpoint, the
    bundle holds the report and manifest but never the weights.
    """
    submission_lock(submission=submission)
    check_user_can_release(by, submission)
    with_model = release_condition(submission) == ReleaseCondition.AS_FILE
    submission.release_bundle = release_bundle_build(
        submission=submission, run=current_run(submission), with_model=with_model
    )
    submission.save(update_fields=["release_bundle", "updated_at"])
    reason = "released as a file" if with_model else "released behind a secure endpoint only"
    submission_set_status(submission=submission, to=Status.RELEASED, by=by, reason=reason)
    notify_released(submission, with_model=with_model)
    return submission


def user_can_comment(user: AbstractBaseUser, submission: Submission) -> bool:
    """Checkers (not the author) and the author answering them may comment on an audit."""
    if current_run(submission) is None or submission.status in (Status.WITHDRAWN,):
        return False
    if submission.author_id == user.pk:
        return True
    return user_has_role(user, Role.CHECKER) or user_has_role(user, Role.TRE_ADMIN)


@transaction.atomic
def comment_add(
    *, submission: Submission, author: AbstractBaseUser, text: str, finding: str = ""
) -> Comment:
    """A remark on one finding of the current audit, or the author's answer to one."""
    if not user_can_comment(author, submission):
        raise ReviewNotAllowed("You cannot comment on this request.")
    if not text.strip():
        raise ReviewInvalid("Write the comment first.", field="text")
    run = current_run(submission)
    if finding and finding not in finding_sources(run):
        raise ReviewInvalid("Comment on a finding of this audit's report.")
    comment = Comment.objects.create(
        submission=submission, run=run, author=author, finding=finding, text=text.strip()
    )
    audit_entry_append(submission=submission, action="comment", by=author, reason=finding)
    return comment


def finding_sources(run: AuditRun | None) -> list[str]:
    """The report's findings a review or comment may cite, e.g. ``attack:rmia``."""
    if run is None or not run.report:
        return []
    sources = [f"attack:{a.get('name')}" for a in run.report.get("attacks", [])]
    sources += [f"rule:{r.get('rule')}" for r in run.report.get("rules", [])]
    sources += [r.get("source", "") for r in run.report.get("verdict", {}).get("reasons", [])]
    if run.report.get("sweep"):
        sources.append("sweep")
    return sorted({s for s in sources if s})


@transaction.atomic
def user_roles_set(*, user: AbstractBaseUser, roles: set[str], by: AbstractBaseUser) -> None:
    """Give ``user`` exactly ``roles``; logged. Admins cannot remove their own admin role."""
    from django.contrib.auth.models import Group

    if not user_has_role(by, Role.TRE_ADMIN):
        raise ReviewNotAllowed("Only TRE admins manage roles.")
    if user.pk == by.pk and Role.TRE_ADMIN not in roles:
        raise ReviewNotAllowed("You cannot remove your own admin role.")
    unknown = set(roles) - set(Role.values)
    if unknown:
        raise ReviewInvalid(f"There is no role called {sorted(unknown)[0]}.")
    user.groups.set(Group.objects.filter(name__in=roles))
    audit_entry_append(
        submission=None,
        action="roles",
        by=by,
        reason=f"{user.get_username()}: {', '.join(sorted(roles)) or 'no role'}",
    )


@transaction.atomic
def user_create(
    *,
    username: str,
    password: str,
    roles: set[str],
    by: AbstractBaseUser,
    email: str = "",
) -> AbstractBaseUser:
    """An admin creates a user with an initial password and roles; logged like role changes."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError

    if not user_has_role(by, Role.TRE_ADMIN):
        raise ReviewNotAllowed("Only TRE admins create users.")
    unknown = set(roles) - set(Role.values)
    if unknown:
        raise ReviewInvalid(f"There is no role called {sorted(unknown)[0]}.")
    model = get_user_model()
    user = model(username=username.strip(), email=email.strip())
    try:
        model.username_validator(user.username)
        validate_password(password, user)
    except ValidationError as exc:
        raise ReviewInvalid(" ".join(exc.messages)) from None
    if model.objects.filter(username__iexact=user.username).exists():
        raise ReviewInvalid(f"There is already a user called {user.username}.")
    user.set_password(password)
    user.save()
    user.groups.set(Group.objects.filter(name__in=roles))
    audit_entry_append(
        submission=None,
        action="user-created",
        by=by,
        reason=f"{user.get_username()}: {', '.join(sorted(roles)) or 'no role'}",
    )
    return user


# Claims: "I'm on it" in the review queue -------------------------------------------------


@transaction.atomic
def submission_claim(
    *, submission: Submission, by: AbstractBaseUser, now: datetime | None = None
) -> Submission:
    """``by`` says they are reviewing ``submission``: shown to the other checkers, logged.

    A hint, never a lock: another checker may still review (two independent reviews
    are needed). Of two checkers claiming at once one wins, in one conditional
    UPDATE; the other is told who has it. Claiming one's own claim again is a no-op.
    """
    check_user_can_review(by, submission)
    claimed = Submission.objects.filter(pk=submission.pk, claimed_by__isnull=True).update(
        claimed_by=by, claimed_at=now or timezone.now()
    )
    submission.refresh_from_db(fields=["claimed_by", "claimed_at"])
    if not claimed:
        if submission.claimed_by_id == by.pk:
            return submission
        raise ReviewInvalid(
            f"{submission.claimed_by.get_username()} has been on request #{submission.pk} "
            f"since {submission.claimed_at:%d %b %Y %H:%M}; you may still review it."
        )
    audit_entry_append(submission=submission, action=AuditAction.CLAIM, by=by)
    return submission


@transaction.atomic
def submission_unclaim(*, submission: Submission, by: AbstractBaseUser) -> Submission:
    """Release the claim: by the checker who holds it, or by a TRE admin; logged."""
    submission.refresh_from_db(fields=["claimed_by", "claimed_at"])
    if submission.claimed_by_id is None:
        return submission
    if submission.claimed_by_id != by.pk and not user_has_role(by, Role.TRE_ADMIN):
        raise ReviewNotAllowed("Only the checker who claimed a request, or an admin, releases it.")
    holder = submission.claimed_by
    released = Submission.objects.filter(pk=submission.pk, claimed_by=holder).update(
        claimed_by=None, claimed_at=None
    )
    submission.claimed_by, submission.claimed_at = None, None
    if not released:  # released meanwhile by someone else, who logged it
        return submission
    audit_entry_append(
        submission=submission,
        action=AuditAction.UNCLAIM,
        by=by,
        reason=f"claimed by {holder.get_username()}",
    )
    return submission
