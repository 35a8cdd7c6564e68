"""Real processes: a redis-server and Celery workers, started and stopped by the tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.postgres import database_url

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, *, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run scripts/bootstrap")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    client = redis.Redis(port=port)
    wait_for(lambda: _pings(client), timeout=20, what="redis-server")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.exceptions.ConnectionError:
        return False


class Worker:
    """A `celery worker` process on the test's broker and database."""

    def __init__(self, env: dict, log: Path):
        self.env, self.log, self.proc = env, log, None

    def start(self) -> Worker:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tre_audit.celery",
                "worker",
                "--concurrency",
                "1",
                "--pool",
                "prefork",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        """SIGKILL the worker and everything it started, as a crash would."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def celery_broker(redis_url, settings):
    """Point this process's Celery app at the test broker."""
    from tre_audit.celery import app

    settings.CELERY_BROKER_URL = redis_url
    app.conf.broker_url = redis_url
    app.conf.broker_transport_options = {"visibility_timeout": 8}
    redis.Redis.from_url(redis_url).flushdb()
    return redis_url


@pytest.fixture
def worker_factory(celery_broker, settings, tmp_path):
    from django.db import connection

    env = {
        **os.environ,
        "CELERY_BROKER_URL": celery_broker,
        "DATABASE_URL": database_url(connection.settings_dict),
        "TRE_AUDIT_FILE_ROOT": str(settings.TRE_AUDIT_FILE_ROOT),
        "TRE_AUDIT_ANCHOR_FILE": str(settings.TRE_AUDIT_ANCHOR_FILE),
        "TRE_AUDIT_SHADOW_MODELS": "4",
        "TRE_AUDIT_SWEEP": "false",
        "TRE_AUDIT_JOBS": "1",
        "TRE_AUDIT_VISIBILITY_TIMEOUT": "8",
    }
    workers = []

    def start() -> Worker:
        workers.append(Worker(env, tmp_path / "worker.log").start())
        return workers[-1]

    yield start
    for worker in workers:
        worker.stop()


# A real browser --------------------------------------------------------------

#: Debian's Chromium (scripts/bootstrap installs it); Playwright never downloads one.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
#: Screenshots, traces and downloads of the browser tests, kept for a person to look at.
BROWSER_ARTIFACTS = ROOT / "test-artifacts" / "browser"


@pytest.fixture
def browser_artifacts() -> Path:
    """test-artifacts/browser/, emptied of an earlier run's files."""
    BROWSER_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in BROWSER_ARTIFACTS.iterdir():
        if old.is_file():
            old.unlink()
    return BROWSER_ARTIFACTS


@pytest.fixture
def chromium(monkeypatch):
    """Headless Chromium driven by Playwright's sync API.

    That API keeps an event loop running in this thread, so Django would refuse
    ORM calls from the test as unsafe; the test never runs them concurrently.
    """
    if not CHROMIUM.exists():
        pytest.fail("chromium is not installed: run scripts/bootstrap")
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def browser_context(chromium, browser_artifacts, live_server):
    """Make a traced browser context on the live server, one per person signing in.

    Each context's trace is saved as test-artifacts/browser/trace-<name>.zip,
    also when the test fails: open it with `playwright show-trace`.
    """
    contexts = []

    def new(name: str):
        context = chromium.new_context(
            base_url=live_server.url,
            accept_downloads=True,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(15_000)
        context.tracing.start(screenshots=True, snapshots=True, title=name)
        contexts.append((name, context))
        return context

    yield new
    for name, context in contexts:
        context.tracing.stop(path=browser_artifacts / f"trace-{name}.zip")
        context.close()
