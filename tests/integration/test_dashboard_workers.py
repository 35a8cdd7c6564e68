"""The dashboard's view of a real Redis broker and a real Celery worker."""

import pytest

from tests import factories
from tests.integration.conftest import wait_for
from tre_audit.dashboard.selectors import broker_overview
from tre_audit.submissions.models import AuditRun
from tre_audit.submissions.services import submission_create
from tre_audit.submissions.tasks import audit_run_execute_task

pytestmark = pytest.mark.django_db(transaction=True)

#: Run ids no run has: a worker takes each such task and finishes it at once.
MISSING_RUNS = (10**9, 10**9 + 1, 10**9 + 2)


def test_queue_depth_counts_waiting_audits_and_an_idle_broker_has_no_workers(celery_broker):
    assert broker_overview().queue_depth == 0  # Redis has no key for an empty queue

    for run_id in MISSING_RUNS:
        audit_run_execute_task.delay(run_id)

    overview = broker_overview()
    assert overview.reachable
    assert overview.queue == "celery"
    assert overview.queue_depth == len(MISSING_RUNS)
    assert overview.workers == []


def test_a_running_worker_is_listed_with_the_audit_it_runs(worker_factory, example_files):
    worker = worker_factory(TRE_AUDIT_FANOUT="false")  # the audit task itself runs throughout
    submission = submission_create(
        author=factories.create_user(role="researcher"),
        title="SVC",
        label="response",
        declaration=factories.EXACT,
        **example_files,
    )
    run = AuditRun.objects.get(submission=submission)

    seen = wait_for(
        lambda: _worker_running(broker_overview(), run.id),
        what=f"a worker to report audit run {run.id} as running",
        interval=0,
        log=worker.log,
    )

    assert seen["worker"].startswith("celery@")
    assert seen["task"]["name"] == "submissions.audit_run_execute"
    assert seen["task"]["since"] is not None
    worker.kill()  # the audit's result is not what this test is about


def _worker_running(overview, run_id):
    for worker in overview.workers:
        for task in worker["tasks"]:
            if task["run_id"] == run_id:
                return {"worker": worker["name"], "task": task}
    return None
