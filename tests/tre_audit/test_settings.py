"""The settings module as each kind of process loads it, in a fresh interpreter."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tre_audit.submissions.services import file_path, file_store

ROOT = Path(__file__).resolve().parents[2]
#: Django's start-up in a fresh interpreter, on a machine shared with other test runs.
TIMEOUT = 300

PROBE = """
import json, django
django.setup()
from django.conf import settings
from django.db import connection
connection.ensure_connection()
print(json.dumps({"debug": settings.DEBUG, "key": settings.SECRET_KEY}))
"""


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    """``python args`` with the service's variables from ``env`` only."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TRE_AUDIT_") and k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")
    }
    clean.update(PYTHONPATH=str(ROOT), DJANGO_SETTINGS_MODULE="tre_audit.settings", **env)
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _production(**env: str) -> dict[str, str]:
    return {
        "DATABASE_URL": "postgres://tre:pw@127.0.0.1:1/tre",  # never connected to here
        "TRE_AUDIT_ALLOWED_HOSTS": "tre.example.org",
        **env,
    }


def test_the_embedded_default_has_debug_off_and_a_private_key_and_database(tmp_path):
    var = tmp_path / "var"
    first = _run(["-c", PROBE], TRE_AUDIT_VAR_DIR=str(var))
    assert first.returncode == 0, first.stderr
    again = _run(["-c", PROBE], TRE_AUDIT_VAR_DIR=str(var))
    first_seen, second_seen = json.loads(first.stdout), json.loads(again.stdout)
    assert first_seen["debug"] is False
    assert len(first_seen["key"]) >= 50
    assert second_seen["key"] == first_seen["key"]  # made once, then kept
    assert _mode(var) == 0o700
    assert _mode(var / "secret-key") == 0o600
    assert _mode(var / "db.sqlite3") == 0o600


def test_production_without_a_secret_key_refuses_to_start(tmp_path):
    result = _run(["-c", PROBE], TRE_AUDIT_VAR_DIR=str(tmp_path), **_production())
    assert result.returncode != 0
    assert "Set the environment variable TRE_AUDIT_SECRET_KEY" in result.stderr
    assert not (tmp_path / "secret-key").exists()


def test_check_deploy_passes_with_the_production_settings(tmp_path):
    result = _run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        TRE_AUDIT_VAR_DIR=str(tmp_path),
        **_production(
            TRE_AUDIT_DEBUG="false",
            TRE_AUDIT_SECRET_KEY=secrets.token_urlsafe(50),
            TRE_AUDIT_BEHIND_TLS="true",
        ),
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stderr + result.stdout


def test_check_deploy_warns_without_tls(tmp_path):
    result = _run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        TRE_AUDIT_VAR_DIR=str(tmp_path),
        **_production(TRE_AUDIT_SECRET_KEY=secrets.token_urlsafe(50)),
    )
    assert result.returncode != 0
    assert "security.W004" in result.stderr  # no HSTS


@pytest.mark.django_db
def test_stored_files_are_private_to_the_service(settings):
    stored = file_store(data=b"model bytes")
    path = file_path(stored.sha256)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert _mode(path.parent.parent) == 0o700
