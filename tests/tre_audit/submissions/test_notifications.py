"""Who hears of each event of a request: an inbox row and an e-mail each, nobody else."""

import pytest
from django.contrib.auth.models import Group

from attacks.audit import AuditConfig, Upload
from tests import factories
from tre_audit.inbox.enums import Kind
from tre_audit.inbox.models import Notification
from tre_audit.reviews.enums import Decision, Role
from tre_audit.reviews.exceptions import ReviewInvalid
from tre_audit.reviews.models import Review
from tre_audit.reviews.services import (
    pending_sign_offs,
    review_sign_off,
    review_submit,
    submission_release,
)
from tre_audit.submissions import services
from tre_audit.submissions.enums import RunStatus, Status
from tre_audit.submissions.models import AuditRun
from tre_audit.submissions.selectors import current_run
from tre_audit.submissions.services import (
    audit_run_execute,
    audit_run_fail,
    submission_new_version,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run the block's on-commit callbacks, as its transaction committing would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def _told(kind: Kind) -> dict:
    """Who got a notification of ``kind``: username -> its (subject, url)."""
    rows = Notification.objects.filter(kind=kind).select_related("user")
    return {r.user.get_username(): (r.subject, r.url) for r in rows}


def _mailed(mailoutbox) -> list[str]:
    return sorted(address for mail in mailoutbox for address in mail.to)


def _review(submission, decision=Decision.APPROVE, **extra):
    return review_submit(
        submission=submission,
        run_id=current_run(submission).id,
        reviewer=extra.pop("reviewer", None) or factories.create_user(role=Role.CHECKER),
        decision=decision,
        reason="Judged on the attacks and the leaf rule.",
        evidence=["attack:lira"],
        **extra,
    )


@pytest.fixture
def audit_gives_high_risk(monkeypatch):
    """The audit returns a stored report at once (a real one: tests/integration)."""
    monkeypatch.setattr(services, "uploads_audit", lambda **_: factories.realistic_report("high"))
    monkeypatch.setattr(services, "render_pdf", lambda report, identity=None: factories.REPORT_PDF)


def test_an_audit_done_tells_its_author_and_every_other_active_checker(
    audit_gives_high_risk, mailoutbox, committed
):
    author = factories.create_user("author", role=Role.RESEARCHER)
    author.groups.add(Group.objects.get_or_create(name=Role.CHECKER)[0])  # also a checker
    checkers = [factories.create_user(f"checker{i}", role=Role.CHECKER) for i in (1, 2)]
    retired = factories.create_user("retired", role=Role.CHECKER)
    retired.is_active = False
    retired.save()
    factories.create_user("admin", role=Role.TRE_ADMIN)
    submission = factories.create_audited_submission(Status.SUBMITTED, author=author)
    run = AuditRun.objects.create(submission=submission, version=submission.version)
    with committed():
        audit_run_execute(run=run, config=AuditConfig())
    page = f"/requests/{submission.pk}/"
    assert _told(Kind.AUDIT_DONE) == {
        "author": (f"Request #{submission.pk}: audit finished, high risk", page)
    }
    assert set(_told(Kind.QUEUE)) == {"checker1", "checker2"}
    assert Notification.objects.count() == 3
    assert _mailed(mailoutbox) == sorted(u.email for u in [author, *checkers])
    assert all(f"http://127.0.0.1:8000{page}" in mail.body for mail in mailoutbox)


def test_a_new_versions_audit_enters_the_queue_again(
    monkeypatch, enqueued, audit_gives_high_risk, committed
):
    monkeypatch.setattr(services, "_check_uploads", lambda *_, **__: None)  # tested on their own
    submission = factories.create_audited_submission(Status.CHANGES_REQUESTED)
    (checker,) = Review.objects.values_list("reviewer__username", flat=True)
    files = {role: Upload(name=f"{role}.csv", data=b"v2") for role in ("model", "train", "test")}
    submission_new_version(submission=submission, by=submission.author, **files)
    with committed():
        audit_run_execute(run=submission.runs.get(version=2), config=AuditConfig())
    (row,) = Notification.objects.filter(kind=Kind.QUEUE)
    assert (row.user.get_username(), row.url) == (checker, submission.get_absolute_url())
    assert row.body.startswith("Version 2 of 'Readmission forest'")


def test_a_failed_audit_tells_its_author_only(mailoutbox, committed):
    factories.create_user(role=Role.CHECKER)
    submission = factories.create_submission_at_status(Status.AUDITING)
    run = AuditRun.objects.create(submission=submission, status=RunStatus.RUNNING)
    with committed():
        audit_run_fail(run=run, error="The model file is not a skops file.")
    (row,) = Notification.objects.all()
    assert (row.user, row.kind) == (submission.author, Kind.AUDIT_FAILED)
    assert "not a skops file" in row.body
    assert _mailed(mailoutbox) == [submission.author.email]


def test_the_author_hears_of_requested_changes_with_the_comment(mailoutbox, committed):
    submission = factories.create_submission_at_status(Status.AWAITING_REVIEW)
    with committed():
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
    assert mail.subject == f"[tre-audit] Request #{submission.pk}: changes requested"
    assert "min_samples_leaf=20" in mail.body
    assert list(_told(Kind.DECISION)) == [submission.author.get_username()]


def test_a_rejection_tells_the_author(mailoutbox, committed):
    submission = factories.create_audited_submission()
    with committed():
        _review(submission, Decision.REJECT)
    assert list(_told(Kind.DECISION)) == [submission.author.get_username()]
    assert "is now rejected" in mailoutbox[0].body


def test_a_first_approval_says_a_second_is_needed_the_second_announces_approval(
    mailoutbox, committed
):
    submission = factories.create_submission_at_status(Status.AWAITING_REVIEW)
    for _ in (1, 2):
        with committed():
            review_submit(
                submission=submission,
                run_id=current_run(submission).id,
                decision=Decision.APPROVE,
                reason="fine",
                reviewer=factories.create_user(role=Role.CHECKER),
            )
    first, second = mailoutbox
    assert first.subject.endswith("approved by one checker")
    assert "a second checker must approve too" in first.body
    assert second.subject.endswith(": approved") and "is now approved" in second.body
    assert Notification.objects.filter(kind=Kind.DECISION).count() == 2


def test_a_high_risk_approval_tells_the_admins_who_may_sign_it_off(mailoutbox, committed):
    submission = factories.create_audited_submission(risk="high")
    checker_admin = factories.create_user("checker-admin", role=Role.CHECKER)
    checker_admin.groups.add(Group.objects.get_or_create(name=Role.TRE_ADMIN)[0])
    factories.create_user("admin", role=Role.TRE_ADMIN)
    with committed():
        _review(submission, reviewer=checker_admin, justification="Endpoint only.")
    (subject, url) = _told(Kind.SIGN_OFF_WAITS)["admin"]
    assert list(_told(Kind.SIGN_OFF_WAITS)) == ["admin"]  # not the approving checker
    assert "waits for your sign-off" in subject and url == submission.get_absolute_url()
    assert _mailed(mailoutbox) == sorted(["admin@tre.example", submission.author.email])


def test_a_low_risk_approval_needs_no_admin(committed):
    factories.create_user(role=Role.TRE_ADMIN)
    submission = factories.create_audited_submission(risk="low")
    with committed():
        _review(submission)
    assert not Notification.objects.exclude(user=submission.author).exists()
    assert not Notification.objects.filter(kind=Kind.SIGN_OFF_WAITS).exists()


def test_the_author_hears_of_the_sign_off_and_the_release(mailoutbox, committed):
    submission = factories.create_audited_submission(Status.APPROVED, risk="high")
    admin = factories.create_user(role=Role.TRE_ADMIN)
    with committed():
        for pending in pending_sign_offs(submission):
            review_sign_off(review=pending, admin=admin, reason="Endpoint reviewed.")
        submission_release(submission=submission, by=admin)
    author = submission.author.get_username()
    assert list(_told(Kind.SIGN_OFF)) == [author]  # once per signed approval, one row each
    assert Notification.objects.filter(kind=Kind.SIGN_OFF).count() == 2
    assert _told(Kind.RELEASE) == {
        author: (f"Request #{submission.pk}: released", submission.get_absolute_url())
    }
    assert _mailed(mailoutbox) == [submission.author.email] * 3


def test_a_refused_review_sends_nothing(mailoutbox, committed):
    submission = factories.create_submission_at_status(Status.AWAITING_REVIEW)
    with committed(), pytest.raises(ReviewInvalid):
        review_submit(
            submission=submission,
            run_id=current_run(submission).id,
            decision=Decision.REJECT,
            reason=" ",
            reviewer=factories.create_user(role=Role.CHECKER),
        )
    assert mailoutbox == [] and not Notification.objects.exists()
