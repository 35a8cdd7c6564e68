"""Creating a request and running its audit, without a broker (the task is tested live
in the integration tests)."""

import pickle

import pytest

from attacks.audit import AuditConfig, Upload
from tests import factories
from tre_audit.submissions.enums import FileRole, RunStatus, Status
from tre_audit.submissions.exceptions import UploadRefused
from tre_audit.submissions.models import AuditEntry, AuditRun, StoredFile, Submission
from tre_audit.submissions.services import (
    audit_chain_verify,
    audit_run_execute,
    file_read,
    submission_create,
)

pytestmark = pytest.mark.django_db
FAST = AuditConfig(n_shadow_models=4, n_jobs=2, sweep=False)


def _create(files, **overrides):
    args = {
        "author": factories.create_user(role="researcher"),
        "declaration": factories.EXACT,
        "title": "Drug response SVC",
        "label": "response",
        **files,
        **overrides,
    }
    return submission_create(**args)


def test_a_valid_request_is_stored_by_hash_and_queued(example_files):
    submission = _create(example_files)
    assert submission.status == Status.SUBMITTED
    stored = {f.role: f for f in submission.files.all()}
    assert set(stored) == {FileRole.MODEL, FileRole.TRAIN, FileRole.TEST}
    assert file_read(stored=stored[FileRole.TRAIN].stored) == example_files["train"].data
    assert AuditRun.objects.get(submission=submission).status == RunStatus.QUEUED
    assert AuditEntry.objects.filter(submission=submission, action="submitted").exists()


@pytest.mark.parametrize(
    "role, data, message",
    [
        ("model", pickle.dumps({"x": 1}), "Pickle"),
        ("train", b"diabetes,asthma\n1,2\n", "label"),
        ("test", b"", "empty"),
    ],
)
def test_refused_uploads_store_nothing(example_files, role, data, message):
    files = {**example_files, role: Upload(name=example_files[role].name, data=data)}
    with pytest.raises(UploadRefused, match=message):
        _create(files)
    assert not Submission.objects.exists() and not StoredFile.objects.exists()


def test_an_oversized_upload_is_refused(example_files, settings):
    settings.TRE_AUDIT_MAX_UPLOAD_BYTES = 1000
    with pytest.raises(UploadRefused, match="larger than the upload limit"):
        _create(example_files)
    assert not StoredFile.objects.exists()


def test_running_the_audit_attaches_json_and_pdf_and_awaits_review(example_files):
    submission = _create(example_files)
    run = audit_run_execute(run=submission.runs.get(), config=FAST)
    submission.refresh_from_db()
    assert submission.status == Status.AWAITING_REVIEW
    assert run.status == RunStatus.DONE and run.progress == 1.0
    assert run.report["verdict"]["risk"] == "high"
    assert file_read(stored=run.report_pdf).startswith(b"%PDF")
    assert [e.after for e in submission.audit_entries.order_by("id")] == [
        Status.SUBMITTED,
        Status.AUDITING,
        Status.AWAITING_REVIEW,
    ]
    assert audit_chain_verify().ok


def test_a_finished_run_is_not_run_again(example_files):
    submission = _create(example_files)
    run = audit_run_execute(run=submission.runs.get(), config=FAST)
    n_entries = AuditEntry.objects.count()
    audit_run_execute(run=run, config=FAST)
    assert AuditEntry.objects.count() == n_entries
    assert AuditRun.objects.get(id=run.id).attempts == 1


def test_an_audit_that_cannot_run_fails_the_request_with_a_reason(example_files):
    submission = _create(example_files)
    run = audit_run_execute(
        run=submission.runs.get(), config=AuditConfig(attacks=("nope",), sweep=False)
    )
    submission.refresh_from_db()
    assert run.status == RunStatus.FAILED and "Unknown attack" in run.error
    assert submission.status == Status.AUDIT_FAILED


@pytest.mark.parametrize(
    "overrides, refusal",
    [
        ({"author": "checker"}, "Only researchers"),
        ({"author": None}, "Only researchers"),
        ({"declaration": "unticked"}, "Declare that the files are exactly"),
    ],
)
def test_the_service_itself_enforces_role_and_declaration(example_files, overrides, refusal):
    from tre_audit.submissions.exceptions import SubmissionError
    from tre_audit.submissions.services import Declaration

    if "author" in overrides:
        overrides["author"] = factories.create_user(role=overrides["author"])
    if "declaration" in overrides:
        overrides["declaration"] = Declaration(files_are_exact=False)
    with pytest.raises(SubmissionError, match=refusal):
        _create(example_files, **overrides)
    assert not Submission.objects.exists() and not StoredFile.objects.exists()
