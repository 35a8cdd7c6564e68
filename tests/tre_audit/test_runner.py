"""The run command's supervision of its processes, on a clock the tests set (the whole
command, for real, is in tests/integration/test_runner.py)."""

import sys

import pytest

from tre_audit import runner
from tre_audit.runner import MAX_QUICK_DEATHS, QUICK_DEATH_SECONDS, _Service


@pytest.fixture(autouse=True)
def _logs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "ROOT", tmp_path)  # var/log/ of the test, not the repo's


def _stopping(code: int = 3) -> _Service:
    return _Service("worker", [sys.executable, "-c", f"raise SystemExit({code})"])


def _started(service: _Service, procs: list) -> _Service:
    service.start(procs)
    service.proc.wait(timeout=600)
    return service


def test_a_stopped_process_is_restarted_after_a_pause_and_logged(capsys):
    procs = []
    service = _started(_stopping(), procs)
    first = service.proc
    assert service.check(procs, service.started_at + 1)
    assert "The worker stopped (exit 3); restarting it in 2 s." in capsys.readouterr().err
    assert service.check(procs, service.started_at + 2) and service.proc is first  # pausing
    assert service.check(procs, service.restart_at)
    assert service.proc is not first and procs == [service.proc]
    assert "The worker was restarted." in capsys.readouterr().err
    service.proc.wait(timeout=600)


def test_the_pause_grows_and_quick_stops_in_a_row_give_up(capsys):
    procs = []
    service = _started(_stopping(), procs)
    pauses = []
    while service.check(procs, service.started_at + 1):
        pauses.append(service.restart_at - service.started_at - 1)
        service.check(procs, service.restart_at)
        service.proc.wait(timeout=600)
    assert pauses == [2**n for n in range(1, MAX_QUICK_DEATHS)]
    err = capsys.readouterr().err
    assert f"{MAX_QUICK_DEATHS} times in a row within {QUICK_DEATH_SECONDS} s" in err
    assert "giving up; see var/log/worker.log." in err
    assert procs == []  # the last one is gone, with whatever it started


def test_a_process_that_ran_a_while_starts_counting_again():
    procs = []
    service = _started(_stopping(), procs)
    service.quick_deaths = MAX_QUICK_DEATHS - 1
    assert service.check(procs, service.started_at + QUICK_DEATH_SECONDS + 1)
    assert service.quick_deaths == 0 and service.restart_at > service.started_at


def test_a_running_process_is_left_alone():
    procs = []
    service = _Service("web", [sys.executable, "-c", "import time; time.sleep(600)"])
    service.start(procs)
    try:
        first = service.proc
        assert service.check(procs, service.started_at + 10**6)
        assert service.proc is first and service.restart_at is None
    finally:
        runner._stop(procs)
    assert first.poll() is not None
