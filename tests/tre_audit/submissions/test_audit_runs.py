"""Creating a request and running its audit, without a broker (the task is tested live
in the integration tests)."""

import logging
import pickle
import subprocess
from datetime import timedelta

import pytest

from attacks.audit import AuditConfig, Upload
from tests import factories
from tre_audit.reviews.enums import Role
from tre_audit.submissions import services
from tre_audit.submissions.enums import FileRole, RunStatus, Status
from tre_audit.submissions.exceptions import (
    InvalidTransition,
    NotAllowed,
    SubmissionError,
    UploadRefused,
)
from tre_audit.submissions.models import AuditEntry, AuditRun, StoredFile, Submission
from tre_audit.submissions.services import (
    REQUEUED,
    STOPPED_TWICE,
    audit_chain_verify,
    audit_run_execute,
    audit_run_retry,
    audit_run_stop,
    audit_runs_reconcile,
    file_read,
    submission_create,
    submission_withdraw,
)
from tre_audit.submissions.tasks import audit_run_execute_task

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
    assert f"Request #{submission.pk}: Drug response SVC (version 1)" in _page_one(run)
    assert [e.after for e in submission.audit_entries.order_by("id")] == [
        Status.SUBMITTED,
        Status.AUDITING,
        Status.AWAITING_REVIEW,
    ]
    assert audit_chain_verify().ok


def _page_one(run: AuditRun) -> str:
    pdf = file_read(stored=run.report_pdf)
    command = ["pdftotext", "-f", "1", "-l", "1", "-", "-"]
    return subprocess.run(command, input=pdf, capture_output=True, check=True).stdout.decode()


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


def test_a_deployment_configured_with_an_impossible_job_count_fails_with_the_sentence(
    example_files, settings
):
    settings.TRE_AUDIT_JOBS = -1
    submission = _create(example_files)
    run = audit_run_execute(run=submission.runs.get())
    assert run.status == RunStatus.FAILED
    assert run.error == "The number of jobs must be a whole number of at least 1, not -1."


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


# Lost workers, stuck runs, and stopping a run -------------------------------------------


class WorkerDied(BaseException):
    """Raised from inside an audit to leave it as a killed worker process would."""


def _die_mid_audit(run, monkeypatch, *, task_id="task-1") -> AuditRun:
    """Start the audit under ``task_id`` and let its process "die" at the first progress."""

    def saver(run):
        def save(stage, done):
            raise WorkerDied

        return save

    with monkeypatch.context() as patched, pytest.raises(WorkerDied):
        patched.setattr(services, "_progress_saver", saver)
        audit_run_execute(run=run, config=FAST, task_id=task_id)
    return AuditRun.objects.get(id=run.id)


def _sent(monkeypatch) -> list[int]:
    sent = []
    monkeypatch.setattr(audit_run_execute_task, "delay", sent.append)
    return sent


def test_a_running_audit_carries_its_task_attempts_and_heartbeat(example_files, monkeypatch):
    run = _die_mid_audit(_create(example_files).runs.get(), monkeypatch)
    assert (run.status, run.attempts, run.task_id) == (RunStatus.RUNNING, 1, "task-1")
    assert run.heartbeat_at is not None and run.heartbeat_at >= run.started_at


def test_another_task_never_runs_an_audit_that_is_running(example_files, monkeypatch):
    run = _die_mid_audit(_create(example_files).runs.get(), monkeypatch)
    audit_run_execute(run=run, config=FAST, task_id="task-2")  # e.g. a late duplicate
    run.refresh_from_db()
    assert (run.status, run.attempts, run.task_id) == (RunStatus.RUNNING, 1, "task-1")


def test_the_same_task_redelivered_after_its_worker_died_audits_again(example_files, monkeypatch):
    run = _die_mid_audit(_create(example_files).runs.get(), monkeypatch)
    run = audit_run_execute(run=run, config=FAST, task_id="task-1")
    assert (run.status, run.attempts) == (RunStatus.DONE, 2)
    assert Submission.objects.get(id=run.submission_id).status == Status.AWAITING_REVIEW


def test_an_audit_that_stopped_twice_fails_with_the_reason_and_can_be_withdrawn(
    example_files, monkeypatch
):
    submission = _create(example_files)
    run = _die_mid_audit(submission.runs.get(), monkeypatch)
    run = _die_mid_audit(run, monkeypatch)  # redelivered, and the model crashed it again
    assert run.attempts == 2
    run = audit_run_execute(run=run, config=FAST, task_id="task-1")  # the third delivery
    submission.refresh_from_db()
    assert (run.status, run.error, run.attempts) == (RunStatus.FAILED, STOPPED_TWICE, 2)
    assert submission.status == Status.AUDIT_FAILED
    submission_withdraw(submission=submission, by=submission.author, reason="it crashes")
    assert Submission.objects.get(id=submission.id).status == Status.WITHDRAWN


def test_reconcile_requeues_a_run_whose_heartbeat_is_stale(example_files, monkeypatch, settings):
    run = _die_mid_audit(_create(example_files).runs.get(), monkeypatch)
    sent = _sent(monkeypatch)
    fresh = run.heartbeat_at + timedelta(seconds=settings.TRE_AUDIT_STALE_SECONDS - 1)
    assert audit_runs_reconcile(now=fresh) == 0 and sent == []
    stale = run.heartbeat_at + timedelta(seconds=settings.TRE_AUDIT_STALE_SECONDS + 1)
    assert audit_runs_reconcile(now=stale) == 1 and sent == [run.id]
    run.refresh_from_db()
    assert (run.status, run.stage) == (RunStatus.QUEUED, REQUEUED)
    assert audit_runs_reconcile(now=stale) == 0 and sent == [run.id]  # sent once
    run = audit_run_execute(run=run, config=FAST, task_id="task-new")
    assert (run.status, run.attempts) == (RunStatus.DONE, 2)


def test_reconcile_fails_a_stale_run_that_already_stopped_twice(example_files, monkeypatch):
    submission = _create(example_files)
    run = _die_mid_audit(_die_mid_audit(submission.runs.get(), monkeypatch), monkeypatch)
    sent = _sent(monkeypatch)
    assert audit_runs_reconcile(now=run.heartbeat_at + timedelta(hours=1)) == 0 and sent == []
    run.refresh_from_db()
    assert (run.status, run.error) == (RunStatus.FAILED, STOPPED_TWICE)
    assert Submission.objects.get(id=submission.id).status == Status.AUDIT_FAILED


@pytest.mark.django_db(
    transaction=True
)  # the beating thread writes: no test transaction holding SQLite
def test_the_heartbeat_is_written_while_the_audit_runs(example_files, monkeypatch, settings):
    settings.TRE_AUDIT_HEARTBEAT_SECONDS = 0.25  # a few beats, not 100 writes a second
    beats = []
    real_update = AuditRun.objects.filter

    def counting_filter(*args, **kwargs):
        queryset = real_update(*args, **kwargs)
        beat = {"id", "status", "attempts"}
        if kwargs.get("status") == RunStatus.RUNNING and set(kwargs) == beat:
            beats.append(kwargs["id"])
        return queryset

    run = _create(example_files).runs.get()
    monkeypatch.setattr(AuditRun.objects, "filter", counting_filter)
    run = audit_run_execute(run=run, config=FAST)
    assert run.status == RunStatus.DONE
    assert beats and set(beats) == {run.id}


@pytest.fixture
def revoked(monkeypatch):
    calls = []
    control = audit_run_execute_task.app.control
    monkeypatch.setattr(control, "revoke", lambda task_id, **kw: calls.append((task_id, kw)))
    return calls


def test_an_admin_stops_a_stuck_audit_and_its_task_is_killed(example_files, monkeypatch, revoked):
    submission = _create(example_files)
    run = _die_mid_audit(submission.runs.get(), monkeypatch)
    admin = factories.create_user(role=Role.TRE_ADMIN)
    run = audit_run_stop(run=run, by=admin, reason="  it hangs the worker ")
    submission.refresh_from_db()
    assert (run.status, run.error) == (RunStatus.FAILED, "Stopped by an admin: it hangs the worker")
    assert submission.status == Status.AUDIT_FAILED
    assert revoked == [("task-1", {"terminate": True, "signal": "SIGKILL"})]
    entry = submission.audit_entries.order_by("-id").first()
    assert (entry.actor, entry.after, entry.reason) == (admin, Status.AUDIT_FAILED, run.error)
    assert audit_run_execute(run=run, config=FAST, task_id="task-1").status == RunStatus.FAILED
    retried = audit_run_retry(submission=submission, by=submission.author)
    assert retried.status == RunStatus.QUEUED


def test_an_admin_stops_an_audit_that_never_started(example_files, revoked):
    submission = _create(example_files)
    admin = factories.create_user(role=Role.TRE_ADMIN)
    run = audit_run_stop(run=submission.runs.get(), by=admin, reason="wrong files")
    submission.refresh_from_db()
    assert run.status == RunStatus.FAILED and submission.status == Status.AUDIT_FAILED
    assert revoked == []  # no task ever ran it
    submission_withdraw(submission=submission, by=submission.author, reason="wrong files")


@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.CHECKER])
def test_only_an_admin_stops_an_audit(example_files, role, revoked):
    submission = _create(example_files)
    user = submission.author if role == Role.RESEARCHER else factories.create_user(role=role)
    with pytest.raises(NotAllowed):
        audit_run_stop(run=submission.runs.get(), by=user, reason="mine")
    assert submission.runs.get().status == RunStatus.QUEUED and revoked == []


def test_a_stop_needs_a_reason_and_a_live_run(example_files, revoked):
    admin = factories.create_user(role=Role.TRE_ADMIN)
    submission = _create(example_files)
    with pytest.raises(SubmissionError, match="Say why"):
        audit_run_stop(run=submission.runs.get(), by=admin, reason=" ")
    done = audit_run_execute(run=submission.runs.get(), config=FAST)
    with pytest.raises(InvalidTransition, match="queued or running"):
        audit_run_stop(run=done, by=admin, reason="late")
    assert AuditRun.objects.get(id=done.id).status == RunStatus.DONE


# Unexpected errors: the reason and the logs name the problem, never the data ------------


def test_an_unseen_category_fails_the_run_without_the_value(caplog, settings):
    settings.TRE_AUDIT_SHADOW_MODELS, settings.TRE_AUDIT_SWEEP = 2, False
    submission = _create(factories.unseen_category_uploads())
    run = submission.runs.get()
    with caplog.at_level(logging.INFO):
        audit_run_execute_task.apply(args=[run.id])
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "ValueError: Found unknown categories [<value>] in column 0" in run.error
    assert factories.JANE not in run.error and "Jane" not in caplog.text
    assert "unknown categories" in caplog.text  # the failure was logged, without the value


# The audit loads and runs the model in a sandbox ---------------------------------------


def test_a_stored_model_that_would_crash_fails_one_audit_with_its_reason():
    """A model stored before it could be validated (an older intake): the audit's sandbox
    refuses it with the reason, once; the worker process running the test lives on."""
    import io

    import pandas as pd
    import skops.io
    from sklearn.tree import DecisionTreeClassifier

    from tests.safe_model import crafted_models

    train, test, label = crafted_models.matching_tables()
    table = pd.read_csv(io.BytesIO(train))
    honest = DecisionTreeClassifier(max_depth=2).fit(table.drop(columns=[label]), table[label])
    files = {
        "model": Upload("model.skops", skops.io.dumps(honest)),
        "train": Upload("train.csv", train),
        "test": Upload("test.csv", test),
    }
    submission = _create(files, label=label)
    stored = submission.files.get(role=FileRole.MODEL)
    stored.stored = services.file_store(data=crafted_models.tree_latent_bad_node())
    stored.save(update_fields=["stored"])
    run = audit_run_execute(run=submission.runs.get(), config=FAST)
    assert run.status == RunStatus.FAILED and run.attempts == 1
    assert "RandomForestClassifier is inconsistent" in run.error
    submission.refresh_from_db()
    assert submission.status == Status.AUDIT_FAILED
    assert audit_run_execute(run=run, config=FAST).attempts == 1  # never runs again
