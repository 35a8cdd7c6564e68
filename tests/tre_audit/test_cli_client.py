"""``tre-audit submit`` and ``status`` against a real HTTP server (pytest-django's live_server).

No worker runs here and the broker is down, so submitted requests stay queued;
tests/integration/test_api_audit.py waits for a real audit.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from knox.models import AuthToken

from tests import factories
from tests.tre_audit.api.support import audited, broker_down, closed_port  # noqa: F401
from tre_audit.cli import main
from tre_audit.reviews.enums import Role
from tre_audit.submissions import selectors
from tre_audit.submissions.enums import RunStatus, Status
from tre_audit.submissions.models import Submission

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # never reach a Redis on the default port that another process may be using
    pytest.mark.usefixtures("broker_down"),
]


@pytest.fixture
def researcher():
    user = factories.create_user("ada", Role.RESEARCHER)
    return user, AuthToken.objects.create(user=user)[1]


@pytest.fixture
def example_dir(example_files, tmp_path):
    for upload in example_files.values():
        (tmp_path / upload.name).write_bytes(upload.data)
    return tmp_path


def _submit_args(example_dir, *extra):
    return [
        "submit",
        *("--model", str(example_dir / "model.skops")),
        *("--train", str(example_dir / "train.csv")),
        *("--test", str(example_dir / "test.csv")),
        *("--label", "response", "--title", "SVC on the famous patient"),
        *extra,
    ]


def _lines(text: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in text.strip().splitlines() if ": " in line)


def _one_line_error(capsys, code: int) -> str:
    """The one error line, after any stage lines a wait printed ("[0 s] Auditing (0%)")."""
    out = capsys.readouterr()
    assert code == 2
    lines = [line for line in out.err.strip().splitlines() if not line.startswith("[")]
    assert len(lines) == 1 and lines[0].startswith("tre-audit: error:"), out.err
    return lines[0]


def test_submit_prints_the_id_and_status(live_server, researcher, example_dir, capsys):
    user, token = researcher
    args = _submit_args(example_dir, "--hosting", "query_only", "--purpose", "teaching")
    code = main([*args, "--url", live_server.url, "--token", token])
    out = capsys.readouterr().out
    assert code == 0
    shown = _lines(out)
    assert out.startswith("id: ") and shown["status"] == "submitted"
    submission = Submission.objects.get(pk=int(shown["id"]))
    assert (submission.author, submission.hosting, submission.purpose) == (
        user,
        "query_only",
        "teaching",
    )
    assert submission.files_are_exact
    assert submission.runs.get().status == RunStatus.QUEUED


def test_url_and_token_come_from_the_environment(
    live_server, researcher, example_dir, capsys, monkeypatch
):
    monkeypatch.setenv("TRE_AUDIT_URL", live_server.url)
    monkeypatch.setenv("TRE_AUDIT_TOKEN", researcher[1])
    assert main(_submit_args(example_dir)) == 0
    request_id = _lines(capsys.readouterr().out)["id"]
    assert main(["status", request_id]) == 0
    assert _lines(capsys.readouterr().out) == {"id": request_id, "status": "submitted"}


def test_status_downloads_the_reports(live_server, researcher, example_files, tmp_path, capsys):
    user, token = researcher
    submission = audited(example_files, user)
    out = tmp_path / "reports"
    code = main(
        ["status", str(submission.pk), "--wait", "--report-dir", str(out)]
        + ["--url", live_server.url, "--token", token]
    )
    printed = capsys.readouterr().out
    assert code == 0
    shown = _lines(printed)
    assert shown["status"] == "awaiting_review" and shown["risk"].startswith("high. ")
    assert json.loads((out / "report.json").read_text()) == submission.runs.get().report
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")


def test_waiting_gives_up_after_the_timeout(live_server, researcher, capsys):
    user, token = researcher
    submission = factories.create_submission_at_status(Status.AUDITING, author=user)
    code = main(
        ["status", str(submission.pk), "--wait", "--interval", "0.1", "--timeout", "0.3"]
        + ["--url", live_server.url, "--token", token]
    )
    assert "still auditing after 0.3 s" in _one_line_error(capsys, code)


def test_no_report_before_the_audit_finished_is_an_error(live_server, researcher, capsys, tmp_path):
    user, token = researcher
    submission = factories.create_submission_at_status(Status.SUBMITTED, author=user)
    code = main(
        ["status", str(submission.pk), "--report-dir", str(tmp_path / "r")]
        + ["--url", live_server.url, "--token", token]
    )
    assert "no finished audit" in _one_line_error(capsys, code)
    assert not (tmp_path / "r").exists()


def test_a_refused_upload_exits_2_with_the_servers_reason(
    live_server, researcher, example_dir, capsys
):
    args = _submit_args(example_dir)
    args[args.index("--label") + 1] = "outcome"
    code = main([*args, "--url", live_server.url, "--token", researcher[1]])
    line = _one_line_error(capsys, code)
    assert "outcome" in line and line.endswith("(HTTP 400)")
    assert Submission.objects.count() == 0


def test_another_researchers_request_exits_2(live_server, researcher, capsys):
    submission = factories.create_submission_at_status(Status.SUBMITTED)
    code = main(["status", str(submission.pk), "--url", live_server.url, "--token", researcher[1]])
    line = _one_line_error(capsys, code)
    assert line.endswith("There is no request with that number you can see. (HTTP 404)")


def test_a_bad_token_exits_2(live_server, example_dir, capsys):
    code = main([*_submit_args(example_dir), "--url", live_server.url, "--token", "nope"])
    assert _one_line_error(capsys, code) == "tre-audit: error: Invalid token. (HTTP 401)"
    assert Submission.objects.count() == 0


def test_an_expired_token_exits_2(live_server, researcher, capsys):
    user, token = researcher
    AuthToken.objects.filter(user=user).update(expiry=timezone.now() - timedelta(minutes=1))
    code = main(["status", "1", "--url", live_server.url, "--token", token])
    assert _one_line_error(capsys, code) == "tre-audit: error: Invalid token. (HTTP 401)"


def test_an_unexpected_server_error_exits_2_with_its_sentence(
    live_server, researcher, capsys, monkeypatch
):
    monkeypatch.setattr(selectors, "submission_get_visible", lambda **kwargs: 1 / 0)
    code = main(["status", "1", "--url", live_server.url, "--token", researcher[1]])
    assert _one_line_error(capsys, code) == (
        "tre-audit: error: The server failed to answer this request; "
        "the error has been logged. (HTTP 500)"
    )


def test_a_checker_cannot_submit(live_server, example_dir, capsys):
    checker = factories.create_user("cy", Role.CHECKER)
    token = AuthToken.objects.create(user=checker)[1]
    code = main([*_submit_args(example_dir), "--url", live_server.url, "--token", token])
    assert "Only researchers can submit requests. (HTTP 403)" in _one_line_error(capsys, code)


@pytest.mark.django_db(transaction=False)
def test_a_server_that_is_down_exits_2(capsys, monkeypatch):
    monkeypatch.delenv("TRE_AUDIT_URL", raising=False)
    url = f"http://127.0.0.1:{closed_port()}"
    code = main(["status", "1", "--url", url, "--token", "t"])
    assert _one_line_error(capsys, code) == (
        f"tre-audit: error: Cannot reach the tre-audit server at {url}."
    )


@pytest.mark.django_db(transaction=False)
def test_a_missing_token_exits_2_before_reading_any_file(capsys, monkeypatch, tmp_path):
    """The files exist (their paths are checked first) but are never opened."""
    monkeypatch.delenv("TRE_AUDIT_TOKEN", raising=False)
    for name in ("model.skops", "train.csv", "test.csv"):
        (tmp_path / name).write_bytes(b"")
    code = main([*_submit_args(tmp_path), "--url", "http://127.0.0.1:1"])
    assert "No API token: pass --token or set TRE_AUDIT_TOKEN" in _one_line_error(capsys, code)


@pytest.mark.django_db(transaction=False)
def test_a_missing_file_exits_2(capsys, tmp_path):
    code = main([*_submit_args(tmp_path), "--url", "http://127.0.0.1:1", "--token", "t"])
    assert "model.skops does not exist" in _one_line_error(capsys, code)


def test_submit_sends_a_networks_declaration(live_server, researcher, mlp_files, tmp_path, capsys):
    for upload in mlp_files.values():
        (tmp_path / upload.name).write_bytes(upload.data)
    args = [
        "submit",
        *("--model", str(tmp_path / "model.onnx")),
        *("--architecture", str(tmp_path / "declaration.json")),
        *("--train", str(tmp_path / "train.csv"), "--test", str(tmp_path / "test.csv")),
        *("--label", "label", "--title", "Breast-cancer MLP"),
    ]
    assert main([*args, "--url", live_server.url, "--token", researcher[1]]) == 0
    submission = Submission.objects.get(pk=int(_lines(capsys.readouterr().out)["id"]))
    stored = dict(submission.files.values_list("role", "stored_id"))
    assert stored["declaration"] == mlp_files["declaration"].sha256
