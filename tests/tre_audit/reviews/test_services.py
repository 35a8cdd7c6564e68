import pytest

from tests import factories
from tre_audit.reviews.enums import Decision, ReleaseCondition, Role
from tre_audit.reviews.exceptions import ReviewInvalid, ReviewNotAllowed
from tre_audit.reviews.models import Review
from tre_audit.reviews.selectors import review_list_visible_to
from tre_audit.reviews.services import review_submit, user_can_review
from tre_audit.submissions.enums import Status
from tre_audit.submissions.selectors import current_run
from tre_audit.submissions.services import audit_chain_verify, submission_new_version

pytestmark = pytest.mark.django_db


def checker():
    return factories.create_user(role=Role.CHECKER)


def awaiting(risk="low", author=None):
    return factories.create_submission_at_status(Status.AWAITING_REVIEW, author=author, risk=risk)


def approve(submission, reviewer, **extra):
    run = current_run(submission)  # None before an audit: the page then offers no review
    return review_submit(
        submission=submission,
        run_id=run.id if run else 0,
        reviewer=reviewer,
        decision=Decision.APPROVE,
        reason="AUCs near 0.5, no rules",
        **extra,
    )


def _status(submission):
    submission.refresh_from_db()
    return submission.status


def test_two_different_checkers_approve_a_request():
    submission = awaiting()
    approve(submission, checker())
    assert _status(submission) == Status.AWAITING_REVIEW
    approve(submission, checker())
    assert _status(submission) == Status.APPROVED
    assert audit_chain_verify().ok


def test_the_same_checker_cannot_approve_twice():
    submission, first = awaiting(), checker()
    approve(submission, first)
    with pytest.raises(ReviewNotAllowed, match="already reviewed"):
        approve(submission, first)
    assert _status(submission) == Status.AWAITING_REVIEW


def test_checker_cannot_review_own_submission():
    author = checker()
    submission = awaiting(author=author)
    with pytest.raises(ReviewNotAllowed, match="own requests"):
        approve(submission, author)
    assert not user_can_review(author, submission)


@pytest.mark.parametrize("role", [None, Role.RESEARCHER, Role.TRE_ADMIN])
def test_only_checkers_review(role):
    user = factories.create_user(role=role)
    with pytest.raises(ReviewNotAllowed, match="Only output checkers"):
        approve(awaiting(), user)


@pytest.mark.parametrize("status", [s for s in Status if s != Status.AWAITING_REVIEW])
def test_only_requests_awaiting_review_can_be_reviewed(status):
    submission = factories.create_submission_at_status(status)
    with pytest.raises(ReviewNotAllowed, match="not awaiting review"):
        approve(submission, checker())


def test_one_rejection_rejects():
    submission = awaiting()
    approve(submission, checker())
    review_submit(
        submission=submission,
        run_id=current_run(submission).id,
        reviewer=checker(),
        decision=Decision.REJECT,
        reason="LiRA flags 20% of members at 1% FPR",
    )
    assert _status(submission) == Status.REJECTED


def test_requesting_changes_needs_a_comment():
    submission = awaiting()
    with pytest.raises(ReviewInvalid, match="comment is required"):
        review_submit(
            submission=submission,
            run_id=current_run(submission).id,
            reviewer=checker(),
            decision=Decision.REQUEST_CHANGES,
            reason="leaky leaves",
        )
    assert not Review.objects.exists()
    review_submit(
        submission=submission,
        run_id=current_run(submission).id,
        reviewer=checker(),
        decision=Decision.REQUEST_CHANGES,
        reason="leaky leaves",
        comment="Set min_samples_leaf to 20 and resubmit.",
    )
    assert _status(submission) == Status.CHANGES_REQUESTED


def test_approving_against_high_risk_needs_justification_and_admin_signoff():
    submission = awaiting(risk="high")
    with pytest.raises(ReviewInvalid, match="justification"):
        approve(submission, checker())
    review = approve(
        submission,
        checker(),
        justification="Only served behind HE.",
        condition=ReleaseCondition.ENDPOINT_ONLY,
    )
    assert review.needs_admin_signoff and review.condition == ReleaseCondition.ENDPOINT_ONLY


def test_a_blank_reason_is_refused():
    with pytest.raises(ReviewInvalid, match="reason"):
        submission = awaiting()
        review_submit(
            submission=submission,
            run_id=current_run(submission).id,
            reviewer=checker(),
            decision=Decision.APPROVE,
            reason="   ",
        )


def test_reviews_stay_independent_until_a_checker_has_submitted():
    submission, first, second = awaiting(), checker(), checker()
    approve(submission, first)
    assert review_list_visible_to(user=second, submission=submission) == []
    assert len(review_list_visible_to(user=first, submission=submission)) == 1
    assert len(review_list_visible_to(user=submission.author, submission=submission)) == 1
    admin = factories.create_user(role=Role.TRE_ADMIN)
    assert len(review_list_visible_to(user=admin, submission=submission)) == 1


def test_a_review_of_a_superseded_version_is_refused(example_files, enqueued):
    submission = factories.create_audited_submission(Status.AWAITING_REVIEW)
    read = current_run(submission)
    submission_new_version(submission=submission, by=submission.author, **example_files)
    for audited in (False, True):  # while version 2 is audited, and once it awaits review
        if audited:
            factories.complete_audit(submission)
        with pytest.raises(ReviewInvalid) as refused:
            review_submit(
                submission=submission,
                run_id=read.id,
                reviewer=checker(),
                decision=Decision.APPROVE,
                reason="fine",
                evidence=["attack:lira"],
            )
        assert str(refused.value) == (
            "Version 2 has been submitted since you opened this page; "
            "read its report before deciding."
        )
    assert not submission.reviews.exists()


def test_a_review_names_a_run_of_its_own_request():
    submission, other = awaiting(), awaiting()
    with pytest.raises(ReviewInvalid, match="not the one under review"):
        review_submit(
            submission=submission,
            run_id=current_run(other).id,
            reviewer=checker(),
            decision=Decision.APPROVE,
            reason="fine",
        )
    assert not submission.reviews.exists()
