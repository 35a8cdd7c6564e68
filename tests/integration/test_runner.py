"""The README's run command, for real: its own Redis, a worker, gunicorn, demo accounts
and the demo request audited end to end; every process gone after SIGTERM."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.integration.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def _read_until(proc, marker: str, timeout: float, seen: list[str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return
    raise AssertionError(f"no {marker!r} within {timeout:.0f} s; output:\n{''.join(seen)}")


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


def test_the_run_command_serves_the_demo_end_to_end(tmp_path):
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE", "CELERY"))},
        "TRE_AUDIT_VAR_DIR": str(tmp_path / "var"),
        "TRE_AUDIT_SHADOW_MODELS": "4",
        "TRE_AUDIT_SWEEP": "false",
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
        _read_until(proc, "audited in", 180, seen)
        output = "".join(seen)
        assert f"http://127.0.0.1:{port}/" in output and "awaiting review" in output
        passwords = dict(
            line.split() for line in output.split("Demo accounts")[1].splitlines()[1:5]
        )
        assert set(passwords) == {"researcher", "checker1", "checker2", "admin"}
        session = requests.Session()
        login = f"http://127.0.0.1:{port}/accounts/login/"
        session.get(login, timeout=10)
        answer = session.post(
            login,
            data={
                "username": "researcher",
                "password": passwords["researcher"],
                "csrfmiddlewaretoken": session.cookies["csrftoken"],
            },
            headers={"Referer": login},
            timeout=10,
        )
        assert answer.status_code == 200 and "Famous-patient SVC" in answer.text
        assert "high risk" in session.get(f"http://127.0.0.1:{port}/requests/1/", timeout=10).text
        assert len(_service_pids(var_dir)) >= 4  # runner, redis, worker, gunicorn
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    for line in "".join(seen).splitlines():
        assert "Traceback" not in line
    deadline = time.monotonic() + 30
    while _service_pids(var_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _service_pids(var_dir) == [], "a service process outlived the run command"
