"""Real processes: a redis-server and Celery workers, started and stopped by the tests."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from tests.postgres import database_url

if TYPE_CHECKING:
    from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: How long an integration test waits for a real process before it gives up. Generous:
#: these tests share a loaded machine, and the wait ends as soon as the thing happens.
PATIENCE = 600


def wait_for(
    predicate,
    *,
    what: str,
    timeout: float = PATIENCE,
    interval: float = 0.2,
    log: Path | None = None,
):
    """Poll ``predicate`` until it is truthy; on timeout say what was awaited, with the
    tail of the process's ``log``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{log_tail(log)}")


def log_tail(log: Path | None, *, n_lines: int = 40) -> str:
    """The last lines of a process's log, to print with a failure ("" without a log)."""
    if log is None or not log.exists():
        return ""
    lines = log.read_text(errors="replace").splitlines()[-n_lines:]
    return f"\n--- last {len(lines)} lines of {log} ---\n" + "\n".join(lines)


def redis_server(workdir: Path) -> tuple[subprocess.Popen, str]:
    """Start a private redis-server (no persistence); its process and URL once it answers."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run scripts/bootstrap")
    port = free_port()
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
    wait_for(lambda: _pings(client), what="redis-server to answer PING")
    return proc, f"redis://127.0.0.1:{port}/0"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    proc, url = redis_server(tmp_path_factory.mktemp("redis"))
    yield url
    proc.terminate()
    proc.wait(timeout=60)


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

    def tail(self) -> str:
        return log_tail(self.log)

    def kill(self) -> None:
        """SIGKILL the worker and everything it started, as a crash would."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=PATIENCE)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def celery_broker(redis_url, settings):
    """Point this process's Celery app at the test broker."""
    from tre_audit.celery import app

    settings.CELERY_BROKER_URL = redis_url
    app.conf.broker_url = redis_url
    app.conf.broker_transport_options = {
        **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        "visibility_timeout": 8,
    }
    app._pool = app.amqp._producer_pool = None  # pools are cached per URL
    redis.Redis.from_url(redis_url).flushdb()
    return redis_url


@pytest.fixture
def worker_factory(celery_broker, settings, tmp_path):
    from django.db import connection

    env = {
        **os.environ,
        "CELERY_BROKER_URL": celery_broker,
        "DATABASE_URL": database_url(connection.settings_dict),
        # on PostgreSQL the settings require a key of their own (the embedded SQLite
        # default makes one): the worker shares the test process's
        "TRE_AUDIT_SECRET_KEY": settings.SECRET_KEY,
        "TRE_AUDIT_FILE_ROOT": str(settings.TRE_AUDIT_FILE_ROOT),
        "TRE_AUDIT_ANCHOR_FILE": str(settings.TRE_AUDIT_ANCHOR_FILE),
        "TRE_AUDIT_SHADOW_MODELS": "4",
        "TRE_AUDIT_SWEEP": "false",
        "TRE_AUDIT_JOBS": "1",
        "TRE_AUDIT_VISIBILITY_TIMEOUT": "8",
    }
    workers = []

    def start(**more_env: str) -> Worker:
        """A worker on the test's broker, ``more_env`` added to its environment."""
        log = tmp_path / f"worker-{len(workers)}.log"
        workers.append(Worker({**env, **more_env}, log).start())
        return workers[-1]

    yield start
    for worker in workers:
        worker.stop()


def pytest_collection_modifyitems(config, items):
    """Real processes (workers, a live server, a browser) on the database run in the
    PostgreSQL pass of scripts/test, production's database; the SQLite pass leaves them
    out (``-m "not production_db"``): the embedded default is run end to end by the run
    command's test. Run by hand, any of them still runs on SQLite."""
    here = Path(__file__).parent
    for item in items:
        if item.get_closest_marker("django_db") and Path(item.fspath).parent == here:
            item.add_marker(pytest.mark.production_db)


# A real browser --------------------------------------------------------------

#: Debian's Chromium (scripts/bootstrap installs it); Playwright never downloads one.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
#: Screenshots, traces and downloads of the browser tests, kept for a person to look at.
BROWSER_ARTIFACTS = ROOT / "test-artifacts" / "browser"


@pytest.fixture(scope="session")
def browser_artifacts() -> Path:
    """test-artifacts/browser/, emptied of an earlier run's files once per run, so that
    every browser test's screenshots are there to look at afterwards."""
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
def browser_context(chromium, browser_artifacts, live_server, request):
    """Make a traced browser context on the live server, one per person signing in.

    Each context's trace is saved as test-artifacts/browser/trace-<test>-<name>.zip,
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
        test = request.node.name.removeprefix("test_")[:40]
        context.tracing.stop(path=browser_artifacts / f"trace-{test}-{name}.zip")
        context.close()


#: The widths each page is screenshotted at: a desktop and a phone.
WIDTHS = (1280, 390)


#: What sticks out past the right edge of the window, unless a scrolling box holds it:
#: a page that scrolls sideways on a phone hides its right-hand columns.
OVERFLOWING = """() => {
  const width = document.documentElement.clientWidth;
  const scrolls = (e) => {
    for (let p = e.parentElement; p; p = p.parentElement) {
      if (["auto", "scroll"].includes(getComputedStyle(p).overflowX)) return true;
    }
    return false;
  };
  return [...document.querySelectorAll("main *, header *")]
    .filter((e) => e.getBoundingClientRect().right > width + 1 && !scrolls(e))
    .filter((e) => ![...e.children].some((c) => c.getBoundingClientRect().right > width + 1))
    .map((e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "")
      + (e.className && typeof e.className === "string" ? "." + e.className.split(" ")[0] : "")
      + " " + JSON.stringify((e.textContent || "").trim().slice(0, 40)));
}"""


class Screenshots:
    """Numbered full-page screenshots at each of WIDTHS, in the order the flow takes
    them; each page must fit each width (nothing to scroll sideways for)."""

    def __init__(self, directory, prefix: str = "flow"):
        self.directory, self.prefix, self.count = directory, prefix, 0

    def __call__(self, page: Page, step: str) -> None:
        self.count += 1
        size = page.viewport_size
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": size["height"]})
            name = f"{self.prefix}-{self.count:02d}-{step}-{width}.png"
            page.screenshot(path=self.directory / name, full_page=True)
            overflowing = page.evaluate(OVERFLOWING)
            assert overflowing == [], f"{name}: wider than {width} px: {overflowing[:5]}"
        page.set_viewport_size(size)


def sign_in_as(new_context, username: str, violations: list[str], width: int = 1280):
    """A page signed in as ``username`` (password "pw") in a context of its own, whose
    Content-Security-Policy refusals land in ``violations``."""
    from playwright.sync_api import expect

    page = new_context(username).new_page()
    page.set_viewport_size({"width": width, "height": 900})
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.goto("/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw")
    page.get_by_role("button", name="Sign in").click()
    expect(page).not_to_have_url(re.compile(r"/accounts/login/"))
    expect(page.locator("header .signout")).to_contain_text(username)
    return page
