"""A real Redis broker and real Celery worker processes audit a submitted request."""

import pytest

from tests import factories
from tests.integration.conftest import wait_for
from tre_audit.submissions.enums import RunStatus, Status
from tre_audit.submissions.models import AuditRun
from tre_audit.submissions.services import audit_chain_verify, submission_create

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
    first = worker_factory()
    submission = _submit(example_files)
    wait_for(
        lambda: _run(submission).status == RunStatus.RUNNING,
        what="the audit to start",
        interval=0.05,
        log=first.log,
    )
    first.kill()
    assert _run(submission).status == RunStatus.RUNNING  # died mid-audit
    second = worker_factory()
    run = wait_for(lambda: _done(submission), what="the redelivered audit", log=second.log)
    submission.refresh_from_db()
    assert submission.status == Status.AWAITING_REVIEW
    assert run.attempts == 2
    assert audit_chain_verify().ok


def _done(submission):
    run = _run(submission)
    assert run.status != RunStatus.FAILED, run.error
    return run if run.status == RunStatus.DONE else None
