"""Error pages in the app's own style, and the run command serving with DEBUG off."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from django.test import RequestFactory
from django.views import defaults

from tests import factories
from tre_audit.api.exceptions import server_error
from tre_audit.reviews.enums import Role

ROOT = Path(__file__).resolve().parents[2]
DEBUG_TEXT = ("Using the URLconf", "Traceback", "DEBUG = True", "Page not found (404)")


def _styled(page: str) -> bool:
    return '<header class="top">' in page and "tre_audit.css" in page


@pytest.mark.django_db
def test_a_missing_page_is_styled_and_shows_no_debug_text(client):
    client.force_login(factories.create_user("reader", Role.RESEARCHER))
    response = client.get("/no-such-page/")
    page = response.content.decode()
    assert response.status_code == 404 and _styled(page)
    assert "There is nothing here" in page and 'aria-label="Main"' in page
    assert not any(text in page for text in DEBUG_TEXT)


@pytest.mark.django_db
def test_a_refusal_is_styled_and_says_why(client):
    client.force_login(factories.create_user("checker", Role.CHECKER))
    response = client.get("/requests/new/")
    page = response.content.decode()
    assert response.status_code == 403 and _styled(page)
    assert "Only researchers submit models." in page
    assert not any(text in page for text in DEBUG_TEXT)


def test_the_server_error_page_needs_no_database_or_context():
    """No django_db mark: any query here would fail the test."""
    response = server_error(RequestFactory().get("/requests/1/"))
    page = response.content.decode()
    assert response.status_code == 500 and _styled(page)
    assert "the error has been logged" in page and "{%" not in page


def test_the_bad_request_page_is_styled():
    """Refused before the middleware set a user (a wrong Host header) and without a query."""
    response = defaults.bad_request(RequestFactory().get("/"), Exception("bad host"))
    page = response.content.decode()
    assert response.status_code == 400 and _styled(page) and "bad host" not in page


@pytest.mark.django_db
def test_static_files_are_served_with_debug_off(client, settings):
    assert settings.DEBUG is False
    for name in ("tre_audit.css", "forms.js"):
        assert client.get(f"/static/{name}").status_code == 200


def test_the_run_command_serves_with_debug_off_whatever_the_shell_says(tmp_path):
    """scripts/run with its bootstrap and Python stubbed: what the runner starts with."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "run", tmp_path / "scripts" / "run")
    stub = "#!/usr/bin/env bash\n"
    (tmp_path / "scripts" / "bootstrap").write_text(stub)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text(stub + 'echo "DEBUG=$TRE_AUDIT_DEBUG"\n')
    for path in (tmp_path / "scripts" / "bootstrap", tmp_path / ".venv" / "bin" / "python"):
        path.chmod(0o700)
    env = os.environ | {"TRE_AUDIT_DEBUG": "true"}
    run = subprocess.run(
        [str(tmp_path / "scripts" / "run")], env=env, capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "DEBUG=false"
