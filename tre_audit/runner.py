"""``scripts/run``: the whole service on this machine, with demo accounts and a demo audit.

Starts a private redis-server (append-only, under ``var/redis``), a Celery worker
and the web app (gunicorn) on localhost; stops them all on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/run", description=__doc__)
    parser.add_argument("--port", type=int, default=8000, help="web port (default 8000)")
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes")
    parser.add_argument("--no-demo", action="store_true", help="no demo accounts or request")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tre_audit.settings")
    if _port_busy(args.port):
        print(f"Port {args.port} is in use: pass --port.", file=sys.stderr)
        return 2
    procs: list[subprocess.Popen] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the children on `kill` too
    try:
        os.environ["CELERY_BROKER_URL"] = _redis_start(procs)
        return _serve(args, procs)
    except KeyboardInterrupt:
        return 0
    finally:
        try:
            _enclaves_stop()
        finally:
            _stop(procs)  # whatever happened above, no process outlives the command


def _serve(args, procs) -> int:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from tre_audit.serving.services import endpoints_reconcile

    endpoints_reconcile()  # endpoints whose host died with the last run are marked failed
    passwords = {} if args.no_demo else _demo_accounts()
    for _ in range(args.workers):
        procs.append(
            _spawn(
                [
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
                ],
                "worker",
            )
        )
    procs.append(
        _spawn(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "tre_audit.wsgi",
                "--bind",
                f"127.0.0.1:{args.port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--access-logfile",
                "-",
                "--log-level",
                "warning",
            ],
            "web",
        )
    )
    url = f"http://127.0.0.1:{args.port}/"
    _wait(lambda: _port_busy(args.port), 30, "the web app")
    _banner(url, passwords)
    if not args.no_demo:
        _demo_request(url)
    print("Running. Press Ctrl-C to stop.", flush=True)
    while all(p.poll() is None for p in procs):
        time.sleep(1)
    print("A service process stopped unexpectedly; see var/log/.", file=sys.stderr)
    return 1


def _enclaves_stop() -> None:
    """Enclave hosts were started by the web app; they stop with the service."""
    from django.apps import apps

    if apps.ready:
        from tre_audit.serving.services import enclave_endpoints_stop_all

        enclave_endpoints_stop_all(reason="the service was stopped")


def _redis_start(procs) -> str:
    """A private Redis with append-only persistence: queued audits survive a restart."""
    if shutil.which("redis-server") is None:
        raise SystemExit(
            "redis-server is missing: run scripts/bootstrap (apt-get install redis-server)."
        )
    port = 6379 if not _port_busy(6379) else _free_port()
    data = ROOT / "var" / "redis"
    data.mkdir(parents=True, exist_ok=True)
    procs.append(
        _spawn(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
            "redis",
        )
    )
    _wait(lambda: _port_busy(port), 20, "redis-server")
    return f"redis://127.0.0.1:{port}/0"


def _demo_accounts() -> dict[str, str]:
    from tre_audit.demo import demo_users_ensure

    return demo_users_ensure()


def _demo_request(url: str) -> None:
    from tre_audit.demo import demo_request_ensure
    from tre_audit.submissions.enums import Status

    submission = demo_request_ensure()
    print(f"Demo request #{submission.pk}: {url}requests/{submission.pk}/", flush=True)
    start = time.monotonic()
    while submission.status in (Status.SUBMITTED, Status.AUDITING):
        time.sleep(1)
        submission.refresh_from_db()
        run = submission.runs.first()
        print(f"\r  auditing: {run.stage or 'queued'} {run.progress:4.0%}   ", end="", flush=True)
    run = submission.runs.first()
    outcome = f"{run.risk} risk" if run.risk else submission.get_status_display().lower()
    print(
        f"\r  audited in {time.monotonic() - start:.0f} s: {outcome}, "
        f"{submission.get_status_display().lower()}.{' ' * 20}",
        flush=True,
    )


def _banner(url: str, passwords: dict[str, str]) -> None:
    print(f"\ntre-audit is up: {url}", flush=True)
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
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start within {timeout:.0f} s; see var/log/.")
        time.sleep(0.2)


def _port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
