"""The README's run command, for real: its own Redis, a worker, gunicorn, demo accounts
and the demo request audited end to end, also when its worker is killed mid-audit;
every process gone after SIGTERM."""

import html
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.integration.conftest import PATIENCE, free_port
from tests.tre_audit.test_hostile_uploads import form_fields, hostile_uploads, label_in

ROOT = Path(__file__).resolve().parents[2]
HTTP_TIMEOUT = 60


def _read_until(proc, marker: str, seen: list[str], *, timeout: float = PATIENCE) -> str:
    """Read the command's output until a line holds ``marker``; that line.

    Progress lines end in a carriage return: text mode reads each as a line.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return line
    raise AssertionError(
        f"no {marker!r} in the output within {timeout:.0f} s; output:\n{''.join(seen)}"
    )


def _children(parents: set[int], marker: bytes) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent in parents and marker in command:
            found.add(int(stat.parent.name))
    return found


def _worker_main_pid(runner_pid: int) -> int:
    """The Celery worker's main process: the runner's child running celery."""
    pids = _children({runner_pid}, b"celery")
    assert pids, f"the run command (pid {runner_pid}) has no celery worker child"
    return min(pids)


def _service_pids(var_dir: Path) -> list[int]:
    """Processes started by the run command: they inherit its TRE_AUDIT_VAR_DIR."""
    marker = f"TRE_AUDIT_VAR_DIR={var_dir}".encode()
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                pids.append(int(environ.parent.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


#: Hostile uploads sent through the real web form: each crashed or hung a gunicorn
#: worker, or took gigabytes of its memory, before the sandbox and the bounded intake.
HOSTILE = (
    "tree whose root is its own child",
    "tree left child 10**12",
    "HistGradientBoosting node 10**9",
    "schema.json bomb",
    "Parquet of 100M RLE rows",
)


def _gunicorn_workers(runner_pid: int) -> set[int]:
    return _children(_children({runner_pid}, b"gunicorn"), b"gunicorn")


def _hostile_uploads_refused_while_serving(session, base: str, runner_pid: int) -> None:
    """Each is refused on the form in one sentence, the next page still answers, and no
    gunicorn worker died (gunicorn would have replaced it under a new pid)."""
    workers = _gunicorn_workers(runner_pid)
    assert workers, "gunicorn has no workers"
    form = f"{base}requests/new/"
    for name in HOSTILE:
        uploads, label, phrase = hostile_uploads(name)
        session.get(form, timeout=HTTP_TIMEOUT)
        answer = session.post(
            form,
            data=form_fields(label_in(uploads, label))
            | {"csrfmiddlewaretoken": session.cookies["csrftoken"]},
            files={role: (file_name, data) for role, (file_name, data) in uploads.items()},
            headers={"Referer": form},
            timeout=HTTP_TIMEOUT,
        )
        assert answer.status_code == 400, (name, answer.status_code)
        assert phrase in html.unescape(answer.text), name
        assert session.get(f"{base}requests/", timeout=HTTP_TIMEOUT).status_code == 200
    assert _gunicorn_workers(runner_pid) == workers, "a gunicorn worker died"


def test_the_run_command_serves_the_demo_end_to_end(tmp_path):
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE", "CELERY"))},
        "TRE_AUDIT_VAR_DIR": str(tmp_path / "var"),
        "TRE_AUDIT_SHADOW_MODELS": "8",  # long enough to kill its worker mid-audit
        "TRE_AUDIT_SWEEP": "false",
        "TRE_AUDIT_HEARTBEAT_SECONDS": "2",
        "TRE_AUDIT_STALE_SECONDS": "10",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tre_audit.runner", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen: list[str] = []
    var_dir = tmp_path / "var"
    try:
        _read_until(proc, "Demo request #", seen)
        while "queued" in _read_until(proc, "auditing: ", seen):
            pass  # until a stage shows: a worker is running the audit
        os.kill(_worker_main_pid(proc.pid), signal.SIGKILL)
        assert "(exit -9); restarting it" in _read_until(proc, "The worker stopped", seen)
        _read_until(proc, "The worker was restarted.", seen)
        _read_until(proc, "audited in", seen)  # its heartbeat went stale: re-queued
        output = "".join(seen)
        assert f"http://127.0.0.1:{port}/" in output and "awaiting review" in output
        passwords = dict(
            line.split() for line in output.split("Demo accounts")[1].splitlines()[1:5]
        )
        assert set(passwords) == {"researcher", "checker1", "checker2", "admin"}
        session = requests.Session()
        login = f"http://127.0.0.1:{port}/accounts/login/"
        session.get(login, timeout=HTTP_TIMEOUT)
        answer = session.post(
            login,
            data={
                "username": "researcher",
                "password": passwords["researcher"],
                "csrfmiddlewaretoken": session.cookies["csrftoken"],
            },
            headers={"Referer": login},
            timeout=HTTP_TIMEOUT,
        )
        assert answer.status_code == 200 and "Famous-patient SVC" in answer.text
        page = session.get(f"http://127.0.0.1:{port}/requests/1/", timeout=HTTP_TIMEOUT)
        assert "high risk" in page.text
        assert len(_service_pids(var_dir)) >= 4  # runner, redis, worker, gunicorn
        _hostile_uploads_refused_while_serving(session, f"http://127.0.0.1:{port}/", proc.pid)
        mail_log = var_dir / "log" / "mail.log"  # the worker's e-mail, no longer lost
        assert f"E-mail is written to {mail_log}." in output
        assert "To: researcher@tre.localhost" in mail_log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=PATIENCE)
    for line in "".join(seen).splitlines():
        assert "Traceback" not in line
    deadline = time.monotonic() + PATIENCE
    while _service_pids(var_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _service_pids(var_dir) == [], "a service process outlived the run command"
