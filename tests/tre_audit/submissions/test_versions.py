"""A request over time: new versions, withdrawal, retry, resending audits the broker
never got, and versions of the risk policy."""

import pytest

from attacks.audit import Upload
from attacks.policy import default_policy_text, load_policy
from tests import factories
from tre_audit.reviews.enums import Decision, Role
from tre_audit.reviews.models import Review
from tre_audit.reviews.selectors import review_list_visible_to
from tre_audit.reviews.services import review_submit, user_can_review
from tre_audit.submissions.enums import FileRole, RunStatus, Status
from tre_audit.submissions.exceptions import (
    InvalidTransition,
    NotAllowed,
    SubmissionError,
    UploadRefused,
)
from tre_audit.submissions.models import (
    AuditEntry,
    AuditRun,
    PolicyVersion,
    StoredFile,
    Submission,
    SubmissionFile,
)
from tre_audit.submissions.selectors import current_run, version_compare
from tre_audit.submissions.services import (
    NOT_QUEUED,
    audit_chain_verify,
    audit_run_retry,
    audit_runs_requeue,
    policy_current,
    policy_version_create,
    submission_create,
    submission_new_version,
    submission_withdraw,
)
from tre_audit.submissions.tasks import audit_run_execute_task

pytestmark = pytest.mark.django_db


def snapshot():
    """What a refused change must leave exactly as it was."""
    return [
        model.objects.count()
        for model in (Submission, SubmissionFile, StoredFile, AuditRun, AuditEntry, Review)
    ]


def status_of(submission):
    submission.refresh_from_db()
    return submission.status


def other_people():
    return [
        factories.create_user(role=Role.RESEARCHER),
        factories.create_user(role=Role.CHECKER),
        factories.create_user(role=Role.TRE_ADMIN),
    ]


# New versions ------------------------------------------------------------------------

NEW_VERSION_FROM = {Status.AUDIT_FAILED, Status.AWAITING_REVIEW, Status.CHANGES_REQUESTED}


@pytest.mark.parametrize("status", list(Status))
def test_a_new_version_is_taken_only_before_a_decision_stands(
    status, example_files, django_capture_on_commit_callbacks, enqueued
):
    submission = factories.create_audited_submission(status)
    if status not in NEW_VERSION_FROM:
        before = snapshot()
        with pytest.raises(InvalidTransition, match="cannot take a new version"):
            submission_new_version(submission=submission, by=submission.author, **example_files)
        assert snapshot() == before and status_of(submission) == status
        return
    with django_capture_on_commit_callbacks(execute=True):
        new = submission_new_version(
            submission=submission, by=submission.author, note="leaf 20", **example_files
        )
    assert (new.version, new.status) == (2, Status.SUBMITTED)
    run = new.runs.get(version=2)
    assert run.status == RunStatus.QUEUED
    assert enqueued == [run.id]  # the audit of version 2 is sent once committed
    entry = AuditEntry.objects.filter(submission=new).last()
    assert (entry.before, entry.after, entry.reason) == (
        status,
        Status.SUBMITTED,
        "version 2: leaf 20",
    )


def test_only_the_author_sends_a_new_version(example_files):
    submission = factories.create_audited_submission(Status.CHANGES_REQUESTED)
    before = snapshot()
    for user in other_people():
        with pytest.raises(NotAllowed):
            submission_new_version(submission=submission, by=user, **example_files)
    assert snapshot() == before
    submission.refresh_from_db()
    assert submission.version == 1


def test_a_refused_new_version_stores_nothing(example_files):
    submission = factories.create_audited_submission(Status.CHANGES_REQUESTED)
    before = snapshot()
    bad = Upload(name="test.csv", data=b"diabetes\n1\n")
    with pytest.raises(UploadRefused, match="label"):
        submission_new_version(
            submission=submission, by=submission.author, **(example_files | {"test": bad})
        )
    assert snapshot() == before
    submission.refresh_from_db()
    assert (submission.version, submission.status) == (1, Status.CHANGES_REQUESTED)


def test_a_new_version_keeps_the_old_one_and_its_reviews_start_over(example_files):
    submission = factories.create_audited_submission()
    first_checker = factories.create_user(role=Role.CHECKER)
    old_review = review_submit(
        submission=submission,
        run_id=current_run(submission).id,
        reviewer=first_checker,
        decision=Decision.REQUEST_CHANGES,
        reason="Leaves are too small.",
        evidence=["rule:min_leaf_records"],
        comment="Set min_samples_leaf to 20.",
    )
    old_run = current_run(submission)
    old_files = dict(submission.files.values_list("role", "stored_id"))

    new = submission_new_version(submission=submission, by=submission.author, **example_files)
    assert current_run(new) is None  # nothing to review until version 2 is audited
    run = factories.complete_audit(new, risk="low")
    new.refresh_from_db()

    assert current_run(new) == run and run.version == 2
    assert not Review.objects.filter(run=run).exists()
    assert review_list_visible_to(user=new.author, submission=new) == []
    assert Review.objects.get() == old_review and old_review.run == old_run
    assert user_can_review(first_checker, new)
    assert dict(new.files.filter(version=1).values_list("role", "stored_id")) == old_files
    new_files = dict(new.files.filter(version=2).values_list("role", "stored_id"))
    assert new_files[FileRole.MODEL] == example_files["model"].sha256
    assert AuditRun.objects.filter(pk=old_run.pk).exists()
    rows = version_compare(submission=new)
    assert [(r["version"], r["run"], r["risk"]) for r in rows] == [
        (1, old_run.id, "medium"),
        (2, run.id, "low"),
    ]
    assert [r["files"] for r in rows] == [old_files, new_files]
    assert rows[0]["auc"] == {"lira": 0.712, "rmia": 0.655, "shadow": None}
    assert audit_chain_verify().ok


# Withdrawal --------------------------------------------------------------------------

WITHDRAWABLE = {
    Status.SUBMITTED,
    Status.AUDIT_FAILED,
    Status.AWAITING_REVIEW,
    Status.CHANGES_REQUESTED,
    Status.APPROVED,
}


@pytest.mark.parametrize("status", list(Status))
def test_the_author_withdraws_a_request_not_yet_decided_for_good(status):
    submission = factories.create_audited_submission(status)
    if status not in WITHDRAWABLE:
        with pytest.raises(InvalidTransition):
            submission_withdraw(submission=submission, by=submission.author, reason="Wrong data")
        assert status_of(submission) == status
        return
    submission_withdraw(submission=submission, by=submission.author, reason="  Wrong data ")
    assert status_of(submission) == Status.WITHDRAWN
    entry = AuditEntry.objects.last()
    assert (entry.actor, entry.after, entry.reason) == (
        submission.author,
        Status.WITHDRAWN,
        "Wrong data",
    )


def test_only_the_author_withdraws_and_says_why():
    submission = factories.create_audited_submission()
    for user in other_people():
        with pytest.raises(NotAllowed):
            submission_withdraw(submission=submission, by=user, reason="Not mine to say")
    with pytest.raises(SubmissionError, match="Say why"):
        submission_withdraw(submission=submission, by=submission.author, reason="  ")
    assert status_of(submission) == Status.AWAITING_REVIEW
    assert not AuditEntry.objects.filter(after=Status.WITHDRAWN).exists()


# Retry -------------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["author", "admin"])
def test_a_failed_audit_is_retried_by_its_author_or_an_admin(
    by, django_capture_on_commit_callbacks, enqueued
):
    submission = factories.create_audited_submission(Status.AUDIT_FAILED)
    user = submission.author if by == "author" else factories.create_user(role=Role.TRE_ADMIN)
    failed = submission.runs.get()
    with django_capture_on_commit_callbacks(execute=True):
        run = audit_run_retry(submission=submission, by=user)
    assert status_of(submission) == Status.SUBMITTED
    assert (run.version, run.status) == (1, RunStatus.QUEUED) and run != failed
    assert AuditRun.objects.get(pk=failed.pk).status == RunStatus.FAILED
    assert enqueued == [run.id]
    assert AuditEntry.objects.last().actor == user


def test_nobody_else_retries_an_audit():
    submission = factories.create_audited_submission(Status.AUDIT_FAILED)
    before = snapshot()
    for user in other_people()[:2]:
        with pytest.raises(NotAllowed):
            audit_run_retry(submission=submission, by=user)
    assert snapshot() == before and status_of(submission) == Status.AUDIT_FAILED


@pytest.mark.parametrize("status", [s for s in Status if s != Status.AUDIT_FAILED])
def test_only_a_failed_audit_is_retried(status):
    submission = factories.create_audited_submission(status)
    before = snapshot()
    with pytest.raises(InvalidTransition, match="failed"):
        audit_run_retry(submission=submission, by=submission.author)
    assert snapshot() == before and status_of(submission) == status


# Audits the broker never got ---------------------------------------------------------


def test_an_audit_sent_while_the_broker_is_down_is_resent_later(
    example_files, django_capture_on_commit_callbacks, monkeypatch
):
    author = factories.create_user(role=Role.RESEARCHER)
    with factories.broker_unreachable(), django_capture_on_commit_callbacks(execute=True):
        submission = submission_create(
            author=author,
            title="SVC",
            label="response",
            declaration=factories.EXACT,
            **example_files,
        )
    run = submission.runs.get()
    assert (run.status, run.stage) == (RunStatus.QUEUED, NOT_QUEUED)

    with factories.broker_unreachable():
        assert audit_runs_requeue() == 0  # nothing could be sent
    run.refresh_from_db()
    assert run.stage == NOT_QUEUED  # still down: still marked, not lost

    sent = []
    monkeypatch.setattr(audit_run_execute_task, "delay", sent.append)
    assert audit_runs_requeue() == 1
    run.refresh_from_db()
    assert sent == [run.id] and run.stage == ""
    assert audit_runs_requeue() == 0 and sent == [run.id]


def test_the_next_successful_send_resends_what_an_outage_held_back(
    example_files, django_capture_on_commit_callbacks, monkeypatch
):
    author = factories.create_user(role=Role.RESEARCHER)
    args = {"author": author, "label": "response", "declaration": factories.EXACT}
    with factories.broker_unreachable(), django_capture_on_commit_callbacks(execute=True):
        held = submission_create(title="during the outage", **args, **example_files)
    sent = []
    monkeypatch.setattr(audit_run_execute_task, "delay", sent.append)
    with django_capture_on_commit_callbacks(execute=True):
        later = submission_create(title="after it", **args, **example_files)
    assert sent == [later.runs.get().id, held.runs.get().id]
    assert not AuditRun.objects.filter(stage=NOT_QUEUED).exists()


def test_a_retry_while_the_broker_is_down_is_marked_too(django_capture_on_commit_callbacks):
    submission = factories.create_audited_submission(Status.AUDIT_FAILED)
    with factories.broker_unreachable(), django_capture_on_commit_callbacks(execute=True):
        run = audit_run_retry(submission=submission, by=submission.author)
    run.refresh_from_db()
    assert run.stage == NOT_QUEUED


def test_only_queued_runs_are_resent(monkeypatch):
    done = factories.create_audited_submission().runs.get()
    AuditRun.objects.filter(pk=done.pk).update(stage=NOT_QUEUED)  # as if it ran meanwhile
    sent = []
    monkeypatch.setattr(audit_run_execute_task, "delay", sent.append)
    assert audit_runs_requeue() == 0 and sent == []


# Policy versions ---------------------------------------------------------------------


def _policy(auc_high: str) -> str:
    text = default_policy_text()
    assert "auc_high = 0.8\n" in text
    return text.replace("auc_high = 0.8\n", f"auc_high = {auc_high}\n")


def test_the_shipped_policy_applies_until_one_is_saved():
    assert policy_current() == load_policy()


def test_saved_policies_are_numbered_from_2_and_the_newest_applies():
    admin = factories.create_user(role=Role.TRE_ADMIN)
    second = policy_version_create(text=_policy("0.75"), note=" Stricter ", by=admin)
    third = policy_version_create(text=_policy("0.7"), note="Stricter still", by=admin)
    assert (second.version, third.version) == (2, 3)
    assert second.note == "Stricter" and second.created_by == admin
    policy = policy_current()
    assert policy.version == "3" and policy.sections["attacks"]["auc_high"] == 0.7
    assert policy.sha256 == third.sha256
    entries = AuditEntry.objects.filter(action="policy").order_by("id")
    assert [(e.after, e.actor) for e in entries] == [("2", admin), ("3", admin)]
    assert PolicyVersion.objects.get(version=2).text == _policy("0.75")


@pytest.mark.parametrize(
    "text, note, message",
    [
        ("[attacks\nauc_high = 0.8", "typo", "not valid TOML"),
        (_policy("2.0"), "out of range", "auc_high in \\[attacks\\] must lie between"),
        (_policy("0.5"), "medium above high", "auc_medium must not exceed auc_high"),
        (_policy("0.75"), "  ", "Say what changed"),
    ],
)
def test_a_refused_policy_saves_nothing(text, note, message):
    admin = factories.create_user(role=Role.TRE_ADMIN)
    with pytest.raises(SubmissionError, match=message):
        policy_version_create(text=text, note=note, by=admin)
    assert not PolicyVersion.objects.exists()
    assert not AuditEntry.objects.filter(action="policy").exists()
    assert policy_current() == load_policy()
