"""Throughput of the whole service: many submissions at once through the REST API.

Run ``.venv/bin/python benchmarks/service_bench.py [--submissions 50] [--readers 20]
[--workers 2]`` (``--submissions 4 --readers 2`` for a quick smoke run).

It starts everything itself, in a fresh temporary folder, and stops it all at
the end: a private redis-server on a free port, a new SQLite database
(``DATABASE_URL``, ``TRE_AUDIT_FILE_ROOT`` and ``TRE_AUDIT_VAR_DIR`` all point
into the folder, so nothing touches ``var/``), ``migrate``, a researcher with an
API token and an output checker, gunicorn (2 workers x 4 threads) and
``--workers`` Celery worker processes with ``--concurrency 1`` each.

Then:

- **submit**: ``--submissions`` POSTs to ``/api/v1/requests/`` at once (one thread
  each, token auth), each with the famous-patient teaching example (the leaky
  SVC, gamma=3) and its declaration. Accepted means a 2xx answer.
- **read**: as soon as every POST has answered, ``--readers`` threads, each
  signed in as the checker through ``/accounts/login/``, GET ``/review/queue/``
  one request after another for ``--read-seconds`` (or until the audits have
  drained), recording each request's latency.
- **drain**: the database is polled until every request is awaiting review or
  audit failed (or ``--timeout``). Lost = accepted - (completed + failed).
  Every accepted request must have exactly one audit run, DONE or FAILED, and
  ``GET /api/v1/requests/{id}/`` must report the same status as the database.
- **read again**: once drained, the same readers for ``--full-queue-seconds``,
  with every request in the queue and no audit running (``full_queue_*``).
  ``p50_ms`` and ``p95_ms`` are from the first window, while audits run.

Audits are kept small so that a run takes minutes on two cores: the workers get
``TRE_AUDIT_SHADOW_MODELS=4``, ``TRE_AUDIT_SWEEP=false`` and
``TRE_AUDIT_JOBS=1`` (printed with the figures). Everything shares the machine's
cores, the bench's own threads included, and the load average is printed before
and after: another load on the machine inflates every figure.

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

API_REQUESTS = "/api/v1/requests/"
QUEUE_PAGE = "/review/queue/"
LOGIN_PAGE = "/accounts/login/"
TITLE_PREFIX = "service bench request"
#: Audit sizing for the workers: small, so 50 audits drain in minutes on 2 cores.
AUDIT_ENV = {"TRE_AUDIT_SHADOW_MODELS": "4", "TRE_AUDIT_SWEEP": "false", "TRE_AUDIT_JOBS": "1"}
GUNICORN_WORKERS, GUNICORN_THREADS = 2, 4
HTTP_TIMEOUT = 300
#: Log lines worth reporting: lock waits that gave up, and every traceback's last line.
PROBLEM_PATTERNS = ("database is locked", "Traceback", "ERROR")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="tre-audit-service-bench-"))
    procs: list[subprocess.Popen] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the children on `kill` too
    try:
        figures = _bench(args, tmp, procs)
    finally:
        _stop(procs)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    figures["bench_seconds"] = round(time.monotonic() - started, 1)
    figures["load_average_end"] = _load()
    print(f"bench: {figures['bench_seconds']:.0f} s in all")
    print(json.dumps(figures))
    return 0 if figures["lost"] == 0 and figures["duplicate_runs"] == 0 else 1


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=50)
    parser.add_argument("--readers", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--read-seconds", type=float, default=20.0)
    parser.add_argument(
        "--full-queue-seconds", type=float, default=10.0, help="readers again once drained"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to drain")
    parser.add_argument("--debug", action="store_true", help="TRE_AUDIT_DEBUG=true (tracebacks)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and logs")
    return parser.parse_args(argv)


def _bench(args, tmp: Path, procs: list[subprocess.Popen]) -> dict:
    setup_start, load_start = time.monotonic(), _load()
    env = _service_env(args, tmp)
    print(f"bench: folder {tmp}; load average {_load()} on {os.cpu_count()} cores")
    print("bench: audit settings " + ", ".join(f"{k}={v}" for k, v in AUDIT_ENV.items()))
    env["CELERY_BROKER_URL"] = _redis_start(tmp, procs)
    os.environ.update(env)
    token, checker = _database_prepare()
    base = _web_start(env, tmp, procs)
    _workers_start(env, tmp, procs, args.workers)
    sessions = [_login(base, *checker) for _ in range(args.readers)]
    uploads = _uploads(tmp)
    setup = time.monotonic() - setup_start
    print(f"bench: service up after {setup:.0f} s; submitting {args.submissions}")
    t0 = time.time()
    submitted = _submit_all(base, token, uploads, args.submissions)
    readers = _Readers(base, sessions).start()
    drained = _drain(args, procs, t0, readers, stop_after=args.read_seconds)
    readers.stop()
    figures = _figures(args, submitted, readers, drained, t0)
    figures |= _full_queue_read(base, sessions, args.full_queue_seconds)
    figures |= _api_check(base, token, submitted)
    figures |= _log_problems(tmp / "logs")
    figures |= {"setup_seconds": round(setup, 1), "load_average_start": load_start}
    return figures


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------


def _service_env(args, tmp: Path) -> dict[str, str]:
    """One environment for this process, gunicorn and the workers: all in ``tmp``."""
    return {
        "DJANGO_SETTINGS_MODULE": "tre_audit.settings",
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "TRE_AUDIT_VAR_DIR": str(tmp / "var"),
        "TRE_AUDIT_FILE_ROOT": str(tmp / "files"),
        "TRE_AUDIT_DEBUG": "true" if args.debug else "false",
        "TRE_AUDIT_SECRET_KEY": secrets.token_urlsafe(40),
        "TRE_AUDIT_ALLOWED_HOSTS": "127.0.0.1,localhost",
        **AUDIT_ENV,
    }


def _spawn(command: list[str], name: str, env: dict, tmp: Path, procs: list) -> None:
    logs = tmp / "logs"
    logs.mkdir(exist_ok=True)
    log = (logs / f"{name}.log").open("ab")
    procs.append(
        subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with all its children
        )
    )


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM every process group, newest first; SIGKILL what is left after 20 s."""
    for proc in reversed(procs):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in reversed(procs):
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _wait(predicate, timeout: float, what: str, procs: list) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        dead = [p.args[0] for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start ({dead or f'{timeout:.0f} s'}): see logs")
        time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _redis_start(tmp: Path, procs: list) -> str:
    """A private redis-server with append-only persistence, as in production."""
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is missing: run scripts/bootstrap")
    port = _free_port()
    (tmp / "redis").mkdir()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--dir", str(tmp / "redis"), "--appendonly", "yes", "--save", ""]
    _spawn(command, "redis", {}, tmp, procs)
    _wait(lambda: _port_open(port), 20, "redis-server", procs)
    return f"redis://127.0.0.1:{port}/0"


def _web_start(env: dict, tmp: Path, procs: list) -> str:
    port = _free_port()
    command = [sys.executable, "-m", "gunicorn", "tre_audit.wsgi", "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", str(GUNICORN_WORKERS), "--threads", str(GUNICORN_THREADS)]
    _spawn(command, "web", env, tmp, procs)
    _wait(lambda: _port_open(port), 60, "gunicorn", procs)
    return f"http://127.0.0.1:{port}"


def _workers_start(env: dict, tmp: Path, procs: list, n: int) -> None:
    """``n`` Celery workers, one task at a time each (every queue); returns once all say
    ready."""
    for i in range(1, n + 1):
        command = [sys.executable, "-m", "celery", "-A", "tre_audit.celery", "worker"]
        command += ["--concurrency", "1", "--loglevel", "INFO", "-n", f"bench{i}@%h"]
        command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        _spawn(command, f"worker{i}", env, tmp, procs)
    logs = [tmp / "logs" / f"worker{i}.log" for i in range(1, n + 1)]
    _wait(lambda: all(" ready." in log.read_text() for log in logs), 120, "the workers", procs)


# --------------------------------------------------------------------------
# Database, accounts, files
# --------------------------------------------------------------------------


def _database_prepare() -> tuple[str, tuple[str, str]]:
    """Migrate the fresh database; a researcher's API token and a checker's login."""
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return _users_create()


def _users_create() -> tuple[str, tuple[str, str]]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from knox.models import AuthToken

    from tre_audit.reviews.enums import Role

    users = get_user_model().objects
    researcher = users.create_user("bench-researcher", "researcher@bench.localhost")
    researcher.groups.set([Group.objects.get(name=Role.RESEARCHER)])
    password = secrets.token_urlsafe(12)
    checker = users.create_user("bench-checker", "checker@bench.localhost", password)
    checker.groups.set([Group.objects.get(name=Role.CHECKER)])
    return AuthToken.objects.create(user=researcher)[1], ("bench-checker", password)


def _login(base: str, username: str, password: str) -> requests.Session:
    """A signed-in browser-like session: the login form's CSRF token, then the POST."""
    session = requests.Session()
    session.get(base + LOGIN_PAGE, timeout=HTTP_TIMEOUT).raise_for_status()
    form = {"username": username, "password": password}
    form["csrfmiddlewaretoken"] = session.cookies["csrftoken"]
    answer = session.post(base + LOGIN_PAGE, data=form, timeout=HTTP_TIMEOUT)
    if "sessionid" not in session.cookies:
        raise SystemExit(f"checker login failed: HTTP {answer.status_code}")
    return session


def _uploads(tmp: Path) -> dict[str, tuple[str, bytes]]:
    """The teaching example's model, training and held-out sets (as tests/conftest.py)."""
    from attacks.datasets import write_famous_patient_example

    paths = write_famous_patient_example(tmp / "example", gamma=3.0)
    return {role: (Path(paths[role]).name, Path(paths[role]).read_bytes()) for role in paths}


# --------------------------------------------------------------------------
# Submit, read, drain
# --------------------------------------------------------------------------


def _submit_one(base: str, token: str, uploads: dict, i: int) -> dict:
    fields = {
        "title": f"{TITLE_PREFIX} {i}",
        "label": "response",
        "model_type": "Support vector classifier (RBF kernel, gamma=3)",
        "preprocessing": "None: six categorical health features coded as integers.",
        "purpose": "Service benchmark.",
        "hosting": "public_file",
        "files_are_exact": "true",
    }
    files = {role: uploads[role] for role in ("model", "train", "test")}
    start = time.monotonic()
    try:
        answer = requests.post(
            base + API_REQUESTS,
            data=fields,
            files=files,
            headers={"Authorization": f"Token {token}"},
            timeout=HTTP_TIMEOUT,
        )
    except requests.RequestException as exc:
        return {"i": i, "http": None, "seconds": time.monotonic() - start, "error": repr(exc)}
    result = {"i": i, "http": answer.status_code, "seconds": time.monotonic() - start}
    if answer.ok:
        result["id"] = _json(answer).get("id")
    else:
        result["error"] = answer.text[:300]
    return result


def _json(answer) -> dict:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _submit_all(base: str, token: str, uploads: dict, n: int) -> list[dict]:
    """``n`` POSTs at once, one thread each."""
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(lambda i: _submit_one(base, token, uploads, i), range(n)))
    seconds = [r["seconds"] for r in results]
    accepted = sum(1 for r in results if r["http"] and 200 <= r["http"] < 300)
    print(
        f"submit: {accepted}/{n} accepted in {time.monotonic() - start:.1f} s "
        f"(POST p50 {statistics.median(seconds):.2f} s, max {max(seconds):.2f} s)"
    )
    for r in results:
        if "error" in r:
            print(f"  POST {r['i']}: HTTP {r['http']}: {r['error'][:200]}")
    return results


class _Readers:
    """Threads that each GET the checker's queue page in a loop, one session each."""

    def __init__(self, base: str, sessions: list[requests.Session]):
        self.base, self.sessions = base, sessions
        self.latencies_ms: list[float] = []
        self.errors: list[str] = []
        self.lock, self.done = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self._read, args=(s,)) for s in sessions]
        self.seconds = 0.0

    def start(self) -> _Readers:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        if not self.done.is_set():
            self.done.set()
            self.seconds = time.monotonic() - self.started
        for thread in self.threads:
            thread.join()

    def _read(self, session: requests.Session) -> None:
        while not self.done.is_set():
            start = time.perf_counter()
            try:
                answer = session.get(self.base + QUEUE_PAGE, timeout=HTTP_TIMEOUT)
                error = None if answer.status_code == 200 else f"HTTP {answer.status_code}"
            except requests.RequestException as exc:
                error = type(exc).__name__
            with self.lock:
                self.latencies_ms.append((time.perf_counter() - start) * 1000)
                if error:
                    self.errors.append(error)


def _full_queue_read(base: str, sessions: list, seconds: float) -> dict:
    """The queue page again once every audit has finished: the longest queue, no audits."""
    if seconds <= 0:
        return {}
    readers = _Readers(base, sessions).start()
    time.sleep(seconds)
    readers.stop()
    figures = {
        "full_queue_p50_ms": _percentile(readers.latencies_ms, 50),
        "full_queue_p95_ms": _percentile(readers.latencies_ms, 95),
        "full_queue_requests": len(readers.latencies_ms),
        "full_queue_errors": len(readers.errors),
    }
    print(
        f"queue page, drained ({_finished_count()[0]} rows): {len(readers.latencies_ms)} GETs "
        f"in {readers.seconds:.1f} s: p50 {figures['full_queue_p50_ms']} ms, "
        f"p95 {figures['full_queue_p95_ms']} ms, {len(readers.errors)} errors"
    )
    return figures


def _finished_count() -> tuple[int, int, int]:
    """(awaiting review, audit failed, still queued or auditing) among the bench's requests."""
    from tre_audit.submissions.enums import Status
    from tre_audit.submissions.models import Submission

    statuses = list(
        Submission.objects.filter(title__startswith=TITLE_PREFIX).values_list("status", flat=True)
    )
    done = statuses.count(Status.AWAITING_REVIEW)
    failed = statuses.count(Status.AUDIT_FAILED)
    return done, failed, len(statuses) - done - failed


def _drain(args, procs, t0: float, readers: _Readers, *, stop_after: float) -> dict:
    """Poll the database until no request is queued or auditing; stop the readers on time."""
    last_print = 0.0
    while True:
        done, failed, pending = _finished_count()
        elapsed = time.time() - t0
        if time.monotonic() - readers.started >= stop_after or not pending:
            readers.stop()
        if elapsed - last_print >= 15 or not pending:
            print(
                f"drain: {elapsed:4.0f} s: {done} awaiting review, {failed} failed, {pending} left"
            )
            last_print = elapsed
        dead = [p.args for p in procs if p.poll() is not None]
        if not pending or elapsed > args.timeout or dead:
            return {"timed_out": bool(pending), "dead_processes": [" ".join(d[:4]) for d in dead]}
        time.sleep(1)


# --------------------------------------------------------------------------
# Figures and checks
# --------------------------------------------------------------------------


def _percentile(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 1)


def _figures(args, submitted: list[dict], readers: _Readers, drained: dict, t0: float) -> dict:
    done, failed, pending = _finished_count()
    accepted = sum(1 for r in submitted if r["http"] and 200 <= r["http"] < 300)
    posts = [r["seconds"] for r in submitted]
    figures = {
        "submissions": args.submissions,
        "accepted": accepted,
        "completed": done,
        "audit_failed": failed,
        "pending": pending,
        "lost": accepted - (done + failed),
        "p50_ms": _percentile(readers.latencies_ms, 50),
        "p95_ms": _percentile(readers.latencies_ms, 95),
        "queue_requests": len(readers.latencies_ms),
        "queue_errors": len(readers.errors),
        "queue_read_seconds": round(readers.seconds, 1),
        "readers": args.readers,
        "post_p50_s": round(statistics.median(posts), 2),
        "post_max_s": round(max(posts), 2),
        "workers": args.workers,
        "gunicorn": f"{GUNICORN_WORKERS}x{GUNICORN_THREADS}",
        "audit_env": AUDIT_ENV,
        "cpu_count": os.cpu_count(),
        **drained,
    }
    figures |= _runs_check(t0)
    _figures_print(figures, readers)
    return figures


def _runs_check(t0: float) -> dict:
    """One audit run per request, DONE or FAILED; audit and waiting seconds from the runs."""
    from tre_audit.submissions.enums import RunStatus
    from tre_audit.submissions.models import AuditRun, Submission

    requests_ = Submission.objects.filter(title__startswith=TITLE_PREFIX)
    runs = list(AuditRun.objects.filter(submission__in=requests_))
    per_request: dict[int, list] = {}
    for run in runs:
        per_request.setdefault(run.submission_id, []).append(run)
    finished = [r for r in runs if r.status in (RunStatus.DONE, RunStatus.FAILED)]
    audit = [(r.finished_at - r.started_at).total_seconds() for r in finished if r.started_at]
    ends = [r.finished_at for r in finished if r.finished_at]
    drain = (max(ends) - datetime.fromtimestamp(t0, UTC)).total_seconds() if ends else None
    return {
        "db_requests": requests_.count(),
        "duplicate_runs": sum(1 for rs in per_request.values() if len(rs) != 1),
        "done_runs": sum(1 for r in runs if r.status == RunStatus.DONE),
        "retried_runs": sum(1 for r in runs if r.attempts > 1),
        "drain_seconds": round(drain, 1) if drain is not None else None,
        "audit_p50_s": round(statistics.median(audit), 1) if audit else None,
        "audit_max_s": round(max(audit), 1) if audit else None,
        "run_errors": sorted({r.error[:200] for r in runs if r.error}),
    }


def _figures_print(f: dict, readers: _Readers) -> None:
    print(
        f"requests: {f['accepted']} accepted, {f['completed']} completed, "
        f"{f['audit_failed']} audit failed, {f['lost']} lost; "
        f"{f['duplicate_runs']} with other than one run, {f['retried_runs']} retried"
    )
    print(
        f"audits: drained in {f['drain_seconds']} s from the first POST; per audit "
        f"p50 {f['audit_p50_s']} s, max {f['audit_max_s']} s ({f['workers']} workers)"
    )
    print(
        f"queue page: {f['queue_requests']} GETs by {f['readers']} readers in "
        f"{f['queue_read_seconds']} s: p50 {f['p50_ms']} ms, p95 {f['p95_ms']} ms, "
        f"{f['queue_errors']} errors {sorted(set(readers.errors))[:5]}"
    )
    for error in f["run_errors"]:
        print(f"  run error: {error}")


def _api_check(base: str, token: str, submitted: list[dict]) -> dict:
    """``GET /api/v1/requests/{id}/`` for every accepted request: same status as the DB?"""
    from tre_audit.submissions.models import Submission

    ids = [r["id"] for r in submitted if r.get("id") is not None]
    db = dict(Submission.objects.filter(id__in=ids).values_list("id", "status"))
    agree, problems = 0, []
    with requests.Session() as session:
        session.headers["Authorization"] = f"Token {token}"
        for request_id in ids:
            answer = session.get(f"{base}{API_REQUESTS}{request_id}/", timeout=HTTP_TIMEOUT)
            if _json(answer).get("status") == db.get(request_id):
                agree += 1
            else:
                problems.append(f"#{request_id}: HTTP {answer.status_code} {answer.text[:100]}")
    print(f"api: {agree}/{len(ids)} detail pages agree with the database {problems[:3]}")
    return {"api_ids": len(ids), "api_status_agrees": agree}


def _log_problems(logs: Path) -> dict:
    """Counts of lock errors, tracebacks and ERROR lines per log; the distinct exception lines."""
    counts, exceptions = {}, set()
    for log in sorted(logs.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        for pattern in PROBLEM_PATTERNS:
            n = sum(1 for line in lines if pattern in line)
            if n:
                counts[f"{log.stem}: {pattern}"] = n
        exceptions |= {
            ln.strip()[:200] for ln in lines if re.match(r"^\w+(\.\w+)*(Error|Exception): ", ln)
        }
    for key, n in counts.items():
        print(f"logs: {key}: {n}")
    for line in sorted(exceptions)[:10]:
        print(f"  exception: {line}")
    return {"log_problems": counts, "log_exceptions": sorted(exceptions)[:10]}


if __name__ == "__main__":
    sys.exit(main())
