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


class _Answer:
    def __init__(self, status: int):
        self.status = status

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Page:
    """A web app that refuses connections, then answers 502 (a proxy's), then 200;
    each try takes a second of a clock the test owns."""

    def __init__(self, answers):
        self.answers, self.now, self.tries = list(answers), 0.0, 0

    def open(self, url, timeout):
        self.tries += 1
        self.now += 1.0
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return _Answer(answer)

    def sleep(self, seconds):
        self.now += seconds


def _page_wait(page, **kwargs):
    return runner._page_wait(
        "http://127.0.0.1:1/", opener=page.open, clock=lambda: page.now, sleep=page.sleep, **kwargs
    )


def test_up_is_only_once_the_first_page_answers_and_a_slow_start_says_why(capsys):
    page = _Page([ConnectionRefusedError()] * 8 + [502, 200])
    assert _page_wait(page) == pytest.approx(9 * 1.5 + 1)  # the 502 is not up either
    assert page.tries == 10
    said = capsys.readouterr().out
    assert said.count("Waiting for the web app to answer") == 1  # once, past 10 s


def test_a_quick_page_is_up_without_a_word(capsys):
    page = _Page([302])
    assert _page_wait(page) == 1.0
    assert capsys.readouterr().out == ""


def test_a_page_that_never_answers_ends_the_command_in_one_sentence():
    page = _Page([ConnectionRefusedError()] * 100)
    with pytest.raises(SystemExit, match="did not answer within 20 s; see var/log/web.log"):
        _page_wait(page, timeout=20)


def test_a_web_app_that_gave_up_ends_the_wait():
    page = _Page([ConnectionRefusedError()] * 3)
    with pytest.raises(SystemExit, match="stopped before its first page answered"):
        _page_wait(page, alive=lambda: False)
