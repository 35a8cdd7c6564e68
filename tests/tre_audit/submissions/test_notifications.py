import pytest

from attacks.audit import AuditConfig
from tests import factories
from tre_audit.reviews.enums import Decision, Role
from tre_audit.reviews.exceptions import ReviewInvalid
from tre_audit.reviews.services import review_submit
from tre_audit.submissions.enums import Status
from tre_audit.submissions.selectors import current_run
from tre_audit.submissions.services import audit_run_execute, submission_create

pytestmark = pytest.mark.django_db


def test_the_author_hears_when_the_audit_finishes(
    example_files, mailoutbox, django_capture_on_commit_callbacks
):
    author = factories.create_user(role="researcher")
    submission = submission_create(
        author=author, title="SVC", label="response", declaration=factories.EXACT, **example_files
    )
    with django_capture_on_commit_callbacks(execute=True):
        audit_run_execute(
            run=submission.runs.get(),
            config=AuditConfig(n_shadow_models=2, n_jobs=2, sweep=False, attacks=("rmia",)),
        )
    (mail,) = mailoutbox
    assert mail.to == [author.email]
    assert f"#{submission.pk} finished" in mail.subject and "risk" in mail.subject


def test_the_author_hears_of_requested_changes_with_the_comment(
    mailoutbox, django_capture_on_commit_callbacks
):
    submission = factories.create_submission_at_status(Status.AWAITING_REVIEW)
    with django_capture_on_commit_callbacks(execute=True):
        review_submit(
            submission=submission,
            run_id=current_run(submission).id,
            reviewer=factories.create_user(role=Role.CHECKER),
            decision=Decision.REQUEST_CHANGES,
            reason="small leaves",
            comment="Use min_samples_leaf=20.",
        )
    (mail,) = mailoutbox
    assert mail.to == [submission.author.email]
    assert "changes requested" in mail.body and "min_samples_leaf=20" in mail.body


def test_a_first_approval_sends_nothing_the_second_announces_approval(
    mailoutbox, django_capture_on_commit_callbacks
):
    submission = factories.create_submission_at_status(Status.AWAITING_REVIEW)
    for expected in (0, 1):
        with django_capture_on_commit_callbacks(execute=True):
            review_submit(
                submission=submission,
                run_id=current_run(submission).id,
                decision=Decision.APPROVE,
                reason="fine",
                reviewer=factories.create_user(role=Role.CHECKER),
            )
        assert len(mailoutbox) == expected
    assert "approved" in mailoutbox[0].body


def test_a_refused_review_sends_nothing(mailoutbox, django_capture_on_commit_callbacks):
    submission = factories.create_submission_at_status(Status.AWAITING_REVIEW)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(ReviewInvalid):
        review_submit(
            submission=submission,
            run_id=current_run(submission).id,
            decision=Decision.REJECT,
            reason=" ",
            reviewer=factories.create_user(role=Role.CHECKER),
        )
    assert mailoutbox == []
