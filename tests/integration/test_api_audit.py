"""Submit over HTTP, a real Celery worker audits, the reports come back over HTTP."""

from __future__ import annotations

import json

import pytest
import requests

from tests import factories
from tests.integration.conftest import wait_for
from tests.tre_audit.api.support import _reset_broker_pools, sending_app
from tre_audit.cli import main
from tre_audit.reviews.enums import Role

pytestmark = pytest.mark.django_db(transaction=True)
#: Seconds for one HTTP call to the live server (generous: the machine may be loaded).
HTTP_TIMEOUT = 120


@pytest.fixture
def broker(celery_broker):
    """The test's Redis, with no connection pool left over from another broker URL."""
    app = sending_app()
    previous = app.conf.broker_url
    app.conf.broker_url = celery_broker  # celery_broker set tre_audit.celery.app's
    _reset_broker_pools(app)
    yield celery_broker
    app.conf.broker_url = previous
    _reset_broker_pools(app)


@pytest.fixture
def token(live_server):
    """A researcher's token, obtained as a script would: username and password."""
    factories.create_user("ada", Role.RESEARCHER)
    response = requests.post(
        f"{live_server.url}/api/v1/token/",
        data={"username": "ada", "password": "pw"},
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 200, response.text
    return response.json()["token"]


def test_an_audit_submitted_over_http(live_server, broker, worker_factory, token, example_files):
    worker_factory()
    http = requests.Session()
    http.headers["Authorization"] = f"Token {token}"
    response = http.post(
        f"{live_server.url}/api/v1/requests/",
        data={"title": "SVC", "label": "response", "files_are_exact": "true"},
        files={role: (u.name, u.data) for role, u in example_files.items()},
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 201, response.text
    stages = set()

    def finished():
        body = http.get(response.json()["links"]["request"], timeout=HTTP_TIMEOUT).json()
        assert body["status"] != "audit_failed", body["audit"]["error"]
        stages.add(body["audit"]["stage"])
        return body if body["status"] == "awaiting_review" else None

    body = wait_for(finished, what="the audit to finish", interval=0.2)
    assert body["audit"]["status"] == "done" and body["audit"]["progress"] == 1.0
    assert body["verdict"]["risk"] == "high"
    assert len(stages) > 1  # progress was visible while the audit ran
    pdf = http.get(body["links"]["report_pdf"], timeout=HTTP_TIMEOUT)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert pdf.headers["Content-Type"] == "application/pdf"
    report = http.get(body["links"]["report_json"], timeout=HTTP_TIMEOUT).json()
    assert report["verdict"]["risk"] == "high"
    assert report["verdict"]["summary"] == body["verdict"]["summary"]


def test_the_cli_submits_waits_and_downloads(
    live_server, broker, worker_factory, token, example_files, tmp_path, capsys, monkeypatch
):
    for upload in example_files.values():
        (tmp_path / upload.name).write_bytes(upload.data)
    monkeypatch.setenv("TRE_AUDIT_URL", live_server.url)
    monkeypatch.setenv("TRE_AUDIT_TOKEN", token)
    monkeypatch.setenv("TRE_AUDIT_PROGRESS", "1")  # the bar even though stderr is no terminal
    worker_factory()
    files = [f"--{role}={tmp_path / u.name}" for role, u in example_files.items()]
    code = main(["submit", *files, "--label=response", "--title=SVC", "--wait", "--interval=0.2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("id: ") and lines[1] == "status: submitted"
    assert lines[2] == "status: awaiting_review" and lines[3].startswith("risk: high. ")
    assert "100%" in err

    request_id = lines[0].removeprefix("id: ")
    assert main(["status", request_id, "--report-dir", str(tmp_path / "reports")]) == 0
    report = json.loads((tmp_path / "reports" / "report.json").read_text())
    assert report["verdict"]["risk"] == "high"
    assert (tmp_path / "reports" / "report.pdf").read_bytes().startswith(b"%PDF")
