"""A broker that accepts connections but never answers (a SIGSTOPped redis-server):
a submission still returns, marked "not queued", and is audited once the broker is back."""

import os
import signal
import threading
import time

import pytest

from tests import factories
from tests.integration.conftest import PATIENCE, redis_server, wait_for
from tre_audit.submissions.enums import RunStatus, Status
from tre_audit.submissions.services import NOT_QUEUED, submission_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def stoppable_redis(tmp_path_factory):
    """A private redis-server this module may freeze; always woken and stopped at the end."""
    proc, url = redis_server(tmp_path_factory.mktemp("stoppable-redis"))
    yield proc, url
    os.kill(proc.pid, signal.SIGCONT)
    proc.terminate()
    proc.wait(timeout=60)


@pytest.fixture
def redis_url(stoppable_redis):
    """The integration fixtures (broker, workers) use the stoppable server."""
    return stoppable_redis[1]


class Watchdog:
    """Wakes the frozen broker if the code under test is still waiting after ``PATIENCE``
    seconds, so a hang fails the test with its reason instead of hanging the suite."""

    def __init__(self, pid: int):
        self.pid, self.fired_after = pid, None
        self.started = time.monotonic()
        self.timer = threading.Timer(PATIENCE, self._fire)

    def _fire(self) -> None:
        self.fired_after = time.monotonic() - self.started
        os.kill(self.pid, signal.SIGCONT)

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        return False


def test_a_submission_to_a_frozen_broker_returns_and_is_audited_when_it_wakes(
    stoppable_redis, celery_broker, worker_factory, example_files
):
    from tests.tre_audit.api.support import _reset_broker_pools, sending_app

    proc, url = stoppable_redis
    app = sending_app()
    app.conf.broker_url = url
    _reset_broker_pools(app)
    author = factories.create_user(role="researcher")

    os.kill(proc.pid, signal.SIGSTOP)  # TCP still accepts; nothing ever answers
    try:
        with Watchdog(proc.pid) as watchdog:
            submission = submission_create(
                author=author,
                title="SVC",
                label="response",
                declaration=factories.EXACT,
                **example_files,
            )
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    print(f"submission returned {time.monotonic() - watchdog.started:.1f} s into the outage")
    assert watchdog.fired_after is None, (
        f"the submission still waited on the frozen broker after {watchdog.fired_after:.0f} s"
    )
    run = submission.runs.get()
    assert (run.status, run.stage) == (RunStatus.QUEUED, NOT_QUEUED)

    worker = worker_factory()  # a worker coming up resends what was not queued
    wait_for(
        lambda: _finished(submission),
        what="the resent audit to finish once the broker answered again",
        log=worker.log,
    )
    submission.refresh_from_db()
    assert submission.status == Status.AWAITING_REVIEW
    assert submission.runs.get().attempts == 1


def _finished(submission) -> bool:
    run = submission.runs.get()
    assert run.status != RunStatus.FAILED, run.error
    return run.status == RunStatus.DONE
