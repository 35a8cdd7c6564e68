"""``scripts/run``: the whole service on this machine, with demo accounts and a demo audit.

Starts a private redis-server (append-only, under ``var/redis``), a Celery worker
and the web app (gunicorn) on localhost; restarts a worker or the web app that stops
(giving up after a few quick stops in a row); stops them all on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/run", description=__doc__)
    parser.add_argument("--port", type=int, default=8000, help="web port (default 8000)")
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes")
    parser.add_argument("--no-demo", action="store_true", help="no demo accounts or request")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tre_audit.settings")
    os.environ.setdefault("TRE_AUDIT_BASE_URL", f"http://127.0.0.1:{args.port}")  # e-mail links
    if _port_busy(args.port):
        print(f"Port {args.port} is in use: pass --port.", file=sys.stderr)
        return 2
    procs: list[subprocess.Popen] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the children on `kill` too
    try:
        redis = _redis_start(procs)
        return _serve(args, procs, redis)
    except KeyboardInterrupt:
        return 0
    finally:
        try:
            _enclaves_stop()
        finally:
            _stop(procs)  # whatever happened above, no process outlives the command


def _serve(args, procs, redis: _Service) -> int:
    started = time.monotonic()
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from tre_audit.inbox.mail import mail_destination
    from tre_audit.serving.services import endpoints_reconcile
    from tre_audit.submissions.services import audit_chain_verify

    endpoints_reconcile()  # endpoints whose host died with the last run are marked failed
    chain = audit_chain_verify()  # a broken log pauses every change: say so at once
    if not chain.ok:
        print(
            f"The audit log failed verification at entry #{chain.first_bad_id}: "
            f"{chain.problem}. Changes are refused until a TRE admin restores it.",
            flush=True,
        )
    passwords = {} if args.no_demo else _demo_accounts()
    services = [_Service("worker", WORKER_COMMAND) for _ in range(args.workers)]
    services.append(_Service("web", [*WEB_COMMAND, "--bind", f"127.0.0.1:{args.port}"]))
    for service in services:
        service.start(procs)
    services.insert(0, redis)
    url = f"http://127.0.0.1:{args.port}/"
    _page_wait(url, alive=lambda: _keep_up(services, procs))
    _banner(url, passwords, seconds=time.monotonic() - started)
    print(mail_destination(), flush=True)
    if not args.no_demo and not _demo_request(url, keep_up=lambda: _keep_up(services, procs)):
        return 1
    print("Running. Press Ctrl-C to stop.", flush=True)
    while _keep_up(services, procs):
        time.sleep(1)
    return 1


WORKER_COMMAND = [
    sys.executable,
    "-m",
    "celery",
    "-A",
    "tre_audit.celery",
    "worker",
    "--concurrency",
    "1",
    "--loglevel",
    "WARNING",
]
WEB_COMMAND = [
    sys.executable,
    "-m",
    "gunicorn",
    "tre_audit.wsgi",
    "--preload",  # the app is imported once and forked: half the start-up CPU of two imports
    "--workers",
    "2",
    "--threads",
    "4",
    "--access-logfile",
    "-",
    "--log-level",
    "warning",
]
#: A process that stops sooner than this after it started stopped "quickly"...
QUICK_DEATH_SECONDS = 30
#: ...and after this many quick stops in a row it is not started again.
MAX_QUICK_DEATHS = 5


@dataclass
class _Service:
    """A worker or the web server, restarted (after a growing pause) when it stops."""

    name: str
    command: list[str]
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None

    def start(self, procs: list[subprocess.Popen]) -> None:
        self.proc = _spawn(self.command, self.name)
        self.started_at, self.restart_at = time.monotonic(), None
        procs.append(self.proc)

    def check(self, procs: list[subprocess.Popen], now: float) -> bool:
        """Restart the process if it stopped and its pause is over; False to give up."""
        if self.restart_at is None and self.proc.poll() is None:
            return True
        if self.restart_at is None:
            return self._stopped(procs, now)
        if now >= self.restart_at:
            self.start(procs)
            print(f"The {self.name} was restarted.", file=sys.stderr, flush=True)
        return True

    def _stopped(self, procs: list[subprocess.Popen], now: float) -> bool:
        _killpg(self.proc)  # what it started (pool children) goes with it
        procs.remove(self.proc)
        quick = now - self.started_at < QUICK_DEATH_SECONDS
        self.quick_deaths = self.quick_deaths + 1 if quick else 0
        stopped = f"The {self.name} stopped (exit {self.proc.returncode})"
        if self.quick_deaths >= MAX_QUICK_DEATHS:
            print(
                f"{stopped}, {self.quick_deaths} times in a row within {QUICK_DEATH_SECONDS} s "
                f"of starting: giving up; see var/log/{self.name}.log.",
                file=sys.stderr,
                flush=True,
            )
            return False
        pause = min(2**self.quick_deaths, 30)
        print(f"{stopped}; restarting it in {pause} s.", file=sys.stderr, flush=True)
        self.restart_at = now + pause
        return True


def _keep_up(services: list[_Service], procs: list[subprocess.Popen]) -> bool:
    """Restart what stopped; False once one keeps stopping (the command then ends)."""
    return all(service.check(procs, time.monotonic()) for service in services)


def _enclaves_stop() -> None:
    """Enclave hosts were started by the web app; they stop with the service."""
    from django.apps import apps

    if apps.ready:
        from tre_audit.serving.services import enclave_endpoints_stop_all

        enclave_endpoints_stop_all(reason="the service was stopped")


def _redis_start(procs) -> _Service:
    """A private Redis with append-only persistence: queued audits survive a restart."""
    if shutil.which("redis-server") is None:
        raise SystemExit(
            "redis-server is missing: run scripts/bootstrap (apt-get install redis-server)."
        )
    port = 6379 if not _port_busy(6379) else _free_port()
    data = ROOT / "var" / "redis"
    data.mkdir(parents=True, exist_ok=True)
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)]
    redis = _Service("redis", [*command, "--appendonly", "yes", "--save", ""])
    redis.start(procs)
    _wait(lambda: _port_busy(port), 20, "redis-server")
    os.environ["CELERY_BROKER_URL"] = f"redis://127.0.0.1:{port}/0"
    return redis


def _demo_accounts() -> dict[str, str]:
    from tre_audit.demo import demo_users_ensure

    return demo_users_ensure()


def _demo_request(url: str, *, keep_up) -> bool:
    from tre_audit.demo import demo_request_ensure
    from tre_audit.submissions.enums import Status

    submission = demo_request_ensure()
    print(f"Demo request #{submission.pk}: {url}requests/{submission.pk}/", flush=True)
    start = time.monotonic()
    while submission.status in (Status.SUBMITTED, Status.AUDITING):
        if not keep_up():
            return False
        time.sleep(1)
        submission.refresh_from_db()
        print(f"\r  auditing: {_demo_progress(submission.runs.first())}   ", end="", flush=True)
    run = submission.runs.first()
    outcome = f"{run.risk} risk" if run.risk else submission.get_status_display().lower()
    print(
        f"\r  audited in {time.monotonic() - start:.0f} s: {outcome}, "
        f"{submission.get_status_display().lower()}.{' ' * 20}",
        flush=True,
    )
    return True


def _demo_progress(run) -> str:
    """``RMIA 58%, about 20 s left``: the demo audit's stage in words, or "queued"."""
    from django.utils import timezone

    from tre_audit.submissions.selectors import run_progress

    if run is None or not run.stage:
        return "queued"
    shown = run_progress(run=run, now=timezone.now())
    left = f", {shown['eta_text']}" if shown["eta_text"] else ""
    return f"{shown['stage']} {run.progress:.0%}{left}"


def _banner(url: str, passwords: dict[str, str], *, seconds: float) -> None:
    print(f"\ntre-audit is up (its first page answered after {seconds:.0f} s): {url}", flush=True)
    if passwords:
        print("Demo accounts (new passwords each start):")
        for username, password in passwords.items():
            print(f"  {username:<11} {password}")
        print(
            "Sign in as researcher to follow the demo request, as checker1 and checker2 to\n"
            "review it, as admin for the dashboard.",
            flush=True,
        )


def _spawn(command: list[str], name: str) -> subprocess.Popen:
    log_dir = ROOT / "var" / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = (log_dir / f"{name}.log").open("ab")
    stdout = log if name != "web" else subprocess.DEVNULL
    return subprocess.Popen(command, cwd=ROOT, stdout=stdout, stderr=log, start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in reversed(procs):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        _killpg(proc)


def _killpg(proc: subprocess.Popen) -> None:
    """SIGKILL what is left of the process group a service was started in.

    Its leader has been waited for; Linux does not reuse a pid while a process group of
    that id exists, so this reaches only the service's own leftovers.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start within {timeout:.0f} s; see var/log/.")
        time.sleep(0.2)


#: Seconds the web app may take to answer its first page (a loaded machine needs many)...
PAGE_TIMEOUT = 180
#: ...and after how many seconds of waiting the command says what it waits for.
PAGE_PATIENCE = 10


def _page_wait(
    url: str,
    *,
    alive=lambda: True,
    timeout: float = PAGE_TIMEOUT,
    opener=None,
    clock=time.monotonic,
    sleep=time.sleep,
) -> float:
    """Wait until ``url`` answers (any status below 500); the seconds it took.

    Says once why it waits when that takes more than :data:`PAGE_PATIENCE` seconds;
    SystemExit with a sentence if the page does not answer within ``timeout`` or a
    service gave up meanwhile (``alive`` false).
    """
    opener = opener or urllib.request.urlopen
    start, told = clock(), False
    while not _page_answers(url, opener):
        waited = clock() - start
        if not alive():
            raise SystemExit("The web app stopped before its first page answered; see var/log/.")
        if waited > timeout:
            raise SystemExit(f"{url} did not answer within {timeout:.0f} s; see var/log/web.log.")
        if waited > PAGE_PATIENCE and not told:
            print(
                f"Waiting for the web app to answer at {url} ({waited:.0f} s so far; "
                "its first start loads the audit libraries, slower on a busy machine).",
                flush=True,
            )
            told = True
        sleep(0.5)
    return clock() - start


def _page_answers(url: str, opener) -> bool:
    try:
        with opener(url, timeout=10) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):  # refused, reset, timed out: not up yet
        return False


def _port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
