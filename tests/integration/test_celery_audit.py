"""A real Redis broker and real Celery worker processes audit a submitted request."""

import os
import signal
from pathlib import Path

import pytest

from tests import factories
from tests.integration.conftest import wait_for
from tre_audit.submissions.enums import RunStatus, Status
from tre_audit.submissions.models import AuditRun
from tre_audit.submissions.services import STOPPED_TWICE, audit_chain_verify, submission_create

pytestmark = pytest.mark.django_db(transaction=True)


def _submit(files):
    author = factories.create_user(role="researcher")
    return submission_create(
        author=author, title="SVC", label="response", declaration=factories.EXACT, **files
    )


def _run(submission) -> AuditRun:
    return AuditRun.objects.get(submission=submission)


def test_a_worker_audits_a_submitted_request(worker_factory, example_files):
    worker = worker_factory()
    submission = _submit(example_files)  # commits, so the task is on the broker now
    run = wait_for(lambda: _done(submission), what="the audit to finish", log=worker.log)
    submission.refresh_from_db()
    assert submission.status == Status.AWAITING_REVIEW
    assert run.report["verdict"]["risk"] == "high" and run.report_pdf is not None
    assert run.attempts == 1
    assert audit_chain_verify().ok


def test_an_audit_survives_its_worker_being_killed(worker_factory, example_files):
    """The audit in one task (its shadows fanned out: tests/integration/test_fanout.py)."""
    first = worker_factory(TRE_AUDIT_FANOUT="false")
    submission = _submit(example_files)
    wait_for(
        lambda: _run(submission).status == RunStatus.RUNNING,
        what="the audit to start",
        interval=0.05,
        log=first.log,
    )
    first.kill()
    assert _run(submission).status == RunStatus.RUNNING  # died mid-audit
    second = worker_factory(TRE_AUDIT_FANOUT="false")
    run = wait_for(lambda: _done(submission), what="the redelivered audit", log=second.log)
    submission.refresh_from_db()
    assert submission.status == Status.AWAITING_REVIEW
    assert run.attempts == 2
    assert audit_chain_verify().ok


def test_a_model_that_kills_its_worker_process_fails_after_two_attempts(
    worker_factory, example_files
):
    """The issue's loop (36 redeliveries): the pool process dies under the audit twice,
    and the third delivery fails the run with its reason instead of running it again.
    (Fanned out, a shadow's task is bounded the same way: tests/tre_audit/submissions.)"""
    worker = worker_factory(TRE_AUDIT_FANOUT="false")
    submission = _submit(example_files)
    for attempt in (1, 2):
        wait_for(
            lambda attempt=attempt: _running(submission, attempt),
            what=f"attempt {attempt} of the audit to start",
            interval=0.05,
            log=worker.log,
        )
        os.kill(_pool_process(worker.proc.pid), signal.SIGKILL)  # as a segfault would
    run = wait_for(
        lambda: _run(submission) if _run(submission).status == RunStatus.FAILED else None,
        what="the run to fail after its second lost attempt",
        log=worker.log,
    )
    submission.refresh_from_db()
    assert (run.error, run.attempts) == (STOPPED_TWICE, 2)
    assert submission.status == Status.AUDIT_FAILED
    assert audit_chain_verify().ok


def test_a_model_failing_on_the_data_fails_the_run_and_the_log_holds_no_value(worker_factory):
    worker = worker_factory()
    submission = _submit(factories.unseen_category_uploads())
    run = wait_for(
        lambda: _run(submission) if _run(submission).status == RunStatus.FAILED else None,
        what="the audit to fail on the unseen category",
        log=worker.log,
    )
    assert "ValueError: Found unknown categories [<value>] in column 0" in run.error
    log = worker.log.read_text(errors="replace")
    assert "unknown categories [<value>]" in log  # Celery logged the failure...
    assert "Jane" not in log and factories.JANE not in run.error  # ...without the value


def _running(submission, attempt: int) -> bool:
    run = _run(submission)
    assert run.status != RunStatus.FAILED, run.error
    return run.status == RunStatus.RUNNING and run.attempts == attempt and bool(run.stage)


def _pool_process(main_pid: int) -> int:
    """The worker's prefork pool process (its main process's only child)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == main_pid:
            return int(stat.parent.name)
    raise AssertionError(f"the worker (pid {main_pid}) has no pool process")


def _done(submission):
    run = _run(submission)
    assert run.status != RunStatus.FAILED, run.error
    return run if run.status == RunStatus.DONE else None
