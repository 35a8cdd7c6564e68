"""A request over time: new versions, withdrawal, retry, resending audits the broker
never got, and versions of the risk policy."""

import re

import pytest
from django.urls import reverse

from attacks.audit import Upload
from attacks.policy import default_policy_text, load_policy
from tests import factories
from tre_audit.reviews.enums import Decision, Role
from tre_audit.reviews.models import Review
from tre_audit.reviews.selectors import review_list_visible_to
from tre_audit.reviews.services import comment_add, review_submit, user_can_review
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
    SubmissionVersion,
)
from tre_audit.submissions.selectors import current_run, version_compare
from tre_audit.submissions.services import (
    NOT_QUEUED,
    Declaration,
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


# Versions as a history -----------------------------------------------------------------

DECLARED = Declaration(
    model_type="SVC", preprocessing="none", purpose="Teaching", files_are_exact=True
)


def submitted(example_files, author=None):
    """A request sent through the service and audited: version 1, awaiting review."""
    submission = submission_create(
        author=author or factories.create_user(role=Role.RESEARCHER),
        title="SVC",
        label="response",
        declaration=DECLARED,
        **example_files,
    )
    factories.complete_audit(submission)
    submission.refresh_from_db()
    return submission


def decide(submission, checker, decision, reason, **extra):
    return review_submit(
        submission=submission,
        run_id=current_run(submission).id,
        reviewer=checker,
        decision=decision,
        reason=reason,
        evidence=["rule:min_leaf_records"],
        **extra,
    )


def test_the_first_version_is_recorded_with_its_declaration(example_files):
    submission = submitted(example_files)
    record = submission.versions.get()
    assert (record.number, record.note, record.purpose, record.label) == (
        1,
        "",
        "Teaching",
        "response",
    )


def test_a_new_version_may_change_the_declaration_and_the_old_one_is_kept(example_files):
    submission = submitted(example_files)
    new = submission_new_version(
        submission=submission,
        by=submission.author,
        note="leaf 20",
        declared={"purpose": "Teaching and a paper", "hosting": "query_only", "model_type": " "},
        **example_files,
    )
    new.refresh_from_db()
    assert (new.purpose, new.hosting, new.model_type) == (
        "Teaching and a paper",
        "query_only",
        "SVC",
    )
    first, second = SubmissionVersion.objects.filter(submission=new).order_by("number")
    assert (first.purpose, first.hosting) == ("Teaching", "public_file")
    assert (second.number, second.note, second.purpose) == (2, "leaf 20", "Teaching and a paper")
    entry = AuditEntry.objects.filter(submission=new, action="status").last()
    assert entry.reason == "version 2: leaf 20 (declaration changed: purpose, hosting)"
    assert audit_chain_verify().ok


@pytest.mark.parametrize(
    "declared, message",
    [
        ({"files_are_exact": False}, "cannot change files_are_exact"),
        ({"hosting": "cloud"}, "hosted"),
    ],
)
def test_a_new_version_refuses_a_declaration_it_cannot_take(example_files, declared, message):
    submission = submitted(example_files)
    before = snapshot() + [SubmissionVersion.objects.count()]
    with pytest.raises(SubmissionError, match=message):
        submission_new_version(
            submission=submission, by=submission.author, declared=declared, **example_files
        )
    assert snapshot() + [SubmissionVersion.objects.count()] == before


def test_a_new_label_is_checked_against_the_new_files(example_files):
    submission = submitted(example_files)
    with pytest.raises(UploadRefused, match="outcome"):
        submission_new_version(
            submission=submission,
            by=submission.author,
            declared={"label": "outcome"},
            **example_files,
        )
    submission.refresh_from_db()
    assert (submission.version, submission.label) == (1, "response")


@pytest.fixture
def two_versions(example_files):
    """Version 1 commented on and sent back by one checker; version 2 (which changed the
    purpose) approved once by another."""
    submission = submitted(example_files, author=factories.create_user("ada", Role.RESEARCHER))
    first, second = (factories.create_user(name, Role.CHECKER) for name in ("cleo", "dan"))
    comment_add(
        submission=submission,
        author=first,
        text="Leaves hold one record.",
        finding="rule:min_leaf_records",
    )
    comment_add(submission=submission, author=submission.author, text="Raising the leaf size.")
    decide(
        submission,
        first,
        Decision.REQUEST_CHANGES,
        "Leaves too small on v1.",
        comment="Set min_samples_leaf to 20.",
    )
    submission_new_version(
        submission=submission,
        by=submission.author,
        note="min_samples_leaf=20 as asked",
        declared={"purpose": "Teaching and a paper"},
        **example_files,
    )
    factories.complete_audit(submission, risk="low")
    submission.refresh_from_db()
    decide(submission, second, Decision.APPROVE, "Version 2 is within policy.")
    return submission, first, second


def page(client, user, submission) -> str:
    client.force_login(user)
    response = client.get(reverse("submissions:detail", args=[submission.pk]))
    assert response.status_code == 200
    return response.content.decode()


def version_block(body: str, number: int) -> tuple[bool, str]:
    """Whether version ``number``'s block is open, and its text."""
    found = re.search(
        rf'<details class="card version" id="version-{number}"( open)?>(.*?)</details>', body, re.S
    )
    assert found, f"no block for version {number}"
    return bool(found.group(1)), found.group(2)


@pytest.mark.parametrize("reader", ["author", "first checker", "admin"])
def test_version_1s_review_and_comments_stay_on_the_page_under_it_folded(
    client, two_versions, reader
):
    submission, first, _ = two_versions
    user = {
        "author": submission.author,
        "first checker": first,
        "admin": factories.create_user(role=Role.TRE_ADMIN),
    }[reader]
    body = page(client, user, submission)
    is_open, old = version_block(body, 1)
    assert not is_open
    assert "Leaves too small on v1." in old and "Set min_samples_leaf to 20." in old
    assert "Leaves hold one record." in old and "Raising the leaf size." in old
    assert "on Leaves can hold one record" in old  # the finding by its title, not its id
    assert "Version 2 is within policy." not in old
    current_open, current = version_block(body, 2)
    assert current_open and "min_samples_leaf=20 as asked" in current
    assert "Declaration changed: Purpose." in current


def test_a_checker_who_has_not_reviewed_version_2_sees_version_1_but_not_version_2s_review(
    client, two_versions
):
    submission, _, second = two_versions
    newcomer = factories.create_user("eve", Role.CHECKER)
    body = page(client, newcomer, submission)
    _, old = version_block(body, 1)
    assert "Leaves too small on v1." in old and "Leaves hold one record." in old
    assert "Version 2 is within policy." not in body
    assert "Version 2 is within policy." in page(client, second, submission)


def test_a_project_member_reads_only_the_authors_comments_of_earlier_versions(client, two_versions):
    from tre_audit.submissions.models import Project

    submission, _, _ = two_versions
    member = factories.create_user(role=Role.RESEARCHER)
    project = Project.objects.create(name="SVCs")
    project.members.add(submission.author, member)
    Submission.objects.filter(pk=submission.pk).update(project=project)
    _, old = version_block(page(client, member, submission), 1)
    assert "Raising the leaf size." in old
    assert "Leaves hold one record." not in old and "Leaves too small on v1." not in old


def test_the_declaration_shows_the_current_version_and_what_it_changed(client, two_versions):
    submission, _, _ = two_versions
    body = page(client, submission.author, submission)
    assert "Changed since version 1: Purpose." in body
    purpose_row = re.search(r"<th scope=\"row\">Purpose</th><td>(.*?)</td>", body, re.S).group(1)
    assert "Teaching and a paper" in purpose_row and "changed in version 2" in purpose_row
    model_row = re.search(r"<th scope=\"row\">Model type</th><td>(.*?)</td>", body, re.S).group(1)
    assert "changed in version" not in model_row


def test_a_single_version_has_no_history_section(client, example_files):
    submission = submitted(example_files)
    assert 'id="versions-h"' not in page(client, submission.author, submission)


def test_the_new_version_form_is_filled_with_the_current_declaration(client, example_files):
    submission = submitted(example_files)
    body = page(client, submission.author, submission)
    form = body[body.index('id="new-version-form"') :]
    assert re.search(r'name="model_type"[^>]*value="SVC"', form)
    assert re.search(r'<textarea name="purpose"[^>]*>\s*Teaching</textarea>', form)


def test_the_web_form_sends_a_changed_declaration(client, example_files):
    from django.core.files.uploadedfile import SimpleUploadedFile

    submission = submitted(example_files)
    client.force_login(submission.author)
    files = {role: SimpleUploadedFile(u.name, u.data) for role, u in example_files.items()}
    data = {"note": "query only now", "hosting": "query_only", "purpose": "", **files}
    response = client.post(reverse("submissions:new_version", args=[submission.pk]), data)
    assert response.status_code == 302
    submission.refresh_from_db()
    assert (submission.version, submission.hosting, submission.purpose) == (
        2,
        "query_only",
        "Teaching",
    )


# The researcher's banner ---------------------------------------------------------------

BANNER = "The checkers asked for changes:"


def test_the_author_reads_what_the_checkers_asked_for_at_the_top(client, example_files):
    submission = submitted(example_files)
    checker = factories.create_user("cleo", Role.CHECKER)
    review = decide(
        submission,
        checker,
        Decision.REQUEST_CHANGES,
        "Too small leaves.",
        comment="Set min_samples_leaf to 20.",
    )
    body = page(client, submission.author, submission)
    date = f"{review.created_at:%-d %b %Y}"
    assert f"{BANNER}</strong> Set min_samples_leaf to 20. — cleo, {date}" in body
    assert body.index(BANNER) < body.index('id="status-label"')  # right under the title
    assert 'href="?new_version=1#new-version-form"' in body
    client.force_login(submission.author)
    url = reverse("submissions:detail", args=[submission.pk])
    opened = client.get(url, {"new_version": "1"}).content.decode()
    assert re.search(r'<details class="card" open><summary>Submit a new version', opened)
    assert not re.search(r'<details class="card" open><summary>Submit a new version', body)
    assert BANNER not in page(client, checker, submission)
    assert BANNER not in page(client, factories.create_user(role=Role.TRE_ADMIN), submission)


@pytest.mark.parametrize("status", [Status.AWAITING_REVIEW, Status.REJECTED, Status.APPROVED])
def test_no_banner_when_no_change_is_asked_for(client, status):
    submission = factories.create_audited_submission(status)
    assert BANNER not in page(client, submission.author, submission)


def test_the_banner_goes_once_a_new_version_is_sent(client, two_versions):
    submission, _, _ = two_versions
    assert BANNER not in page(client, submission.author, submission)


def test_the_migration_records_each_earlier_version_with_its_logged_note(example_files):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("tre_audit.submissions.migrations.0008_submission_versions")
    submission = factories.create_audited_submission(Status.CHANGES_REQUESTED)
    submission_new_version(
        submission=submission, by=submission.author, note="leaf 20: as asked", **example_files
    )
    SubmissionVersion.objects.all().delete()  # as before the migration
    migration.versions_record(apps, None)
    records = SubmissionVersion.objects.filter(submission=submission).order_by("number")
    assert [(r.number, r.note, r.label) for r in records] == [
        (1, "", "response"),
        (2, "leaf 20: as asked", "response"),
    ]
    sent = AuditEntry.objects.get(
        submission=submission, after=Status.SUBMITTED, before=Status.CHANGES_REQUESTED
    )
    assert [r.created_at for r in records] == [submission.created_at, sent.created_at]


def test_a_version_still_in_its_audit_says_so_and_version_1_stays_readable(client, example_files):
    submission = submitted(example_files)
    checker = factories.create_user(role=Role.CHECKER)
    decide(submission, checker, Decision.REQUEST_CHANGES, "Too small.", comment="Raise it.")
    submission_new_version(submission=submission, by=submission.author, **example_files)
    body = page(client, checker, submission)
    current_open, current = version_block(body, 2)
    assert current_open and "being audited" in current and "The author gave no note" in current
    assert "Too small." in version_block(body, 1)[1]
