"""The REST API: who may do what, what a refusal looks like, and the flow to a release."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from django.test import override_settings

from attacks.report import report_dumps
from tests import factories
from tests.tre_audit.api.support import (
    approved,
    audited,
    client_for,
    multipart_files,
    submit_data,
)
from tre_audit.reviews.enums import Decision, Role
from tre_audit.reviews.services import finding_sources
from tre_audit.submissions.enums import RunStatus, Status
from tre_audit.submissions.models import AuditEntry, AuditRun, StoredFile, Submission
from tre_audit.submissions.selectors import current_run
from tre_audit.submissions.services import (
    NOT_QUEUED,
    audit_run_fail,
    submission_new_version,
    submission_set_status,
)

ROLES = ["anonymous", "author", "other", "member", "checker", "admin"]
API = "/api/v1"


@dataclass
class Row:
    """One endpoint: the state it acts on, and the status code each role gets."""

    method: str
    path: str  # "{id}" is the request's number
    expected: dict[str, int]
    state: Callable | None = None  # (world, example_files) -> Submission
    data: Callable = field(default=lambda world, files: {})
    fresh: bool = False  # the call changes the state: a new one for every role


def _failed(world, files):
    """A real submission whose audit failed (its files can take a new version)."""
    from tre_audit.submissions.services import submission_create

    submission = submission_create(
        author=world.author,
        title="SVC",
        label="response",
        project=world.project,
        declaration=factories.EXACT,
        **files,
    )
    submission_set_status(submission=submission, to=Status.AUDITING, by=None)
    audit_run_fail(run=submission.runs.get(), error="the worker ran out of memory")
    submission.refresh_from_db()
    return submission


def _released(world, files):
    submission = approved(files, world.author, [world.checker, world.checker2], world.admin)
    _in_project(submission, world)
    client_for(world.author).post(f"{API}/requests/{submission.pk}/release/")
    submission.refresh_from_db()
    assert submission.status == Status.RELEASED
    return submission


def _release_state(world, files, role):
    """Roles that are refused are refused before the bundle is built: a walked state will do."""
    if role in ("author", "admin"):
        return approved(files, world.author, [world.checker, world.checker2], world.admin)
    return world.at(Status.APPROVED)


def _in_project(submission, world):
    submission.project = world.project
    submission.save(update_fields=["project"])
    return submission


SEE = {"anonymous": 401, "author": 200, "other": 404, "member": 200, "checker": 200, "admin": 200}

MATRIX = {
    "list": Row("get", "/requests/", {r: 401 if r == "anonymous" else 200 for r in ROLES}),
    "submit": Row(
        "post",
        "/requests/",
        {
            "anonymous": 401,
            "author": 201,
            "other": 201,
            "member": 201,
            "checker": 403,
            "admin": 403,
        },
        data=lambda world, files: submit_data(files),
    ),
    "detail": Row("get", "/requests/{id}/", SEE, lambda w, f: w.at(Status.AWAITING_REVIEW)),
    "report.json": Row(
        "get", "/requests/{id}/report.json", SEE, lambda w, f: w.at(Status.AWAITING_REVIEW)
    ),
    "report.pdf": Row(
        "get",
        "/requests/{id}/report.pdf",
        SEE,
        lambda w, f: _in_project(audited(f, w.author), w),
    ),
    "new version": Row(
        "post",
        "/requests/{id}/versions/",
        # never audited, so checkers cannot see it; admins see it but it is not theirs
        {
            "anonymous": 401,
            "author": 201,
            "other": 404,
            "member": 403,
            "checker": 404,
            "admin": 403,
        },
        _failed,
        data=lambda world, files: {"note": "smaller gamma", **multipart_files(files)},
        fresh=True,
    ),
    "withdraw": Row(
        "post",
        "/requests/{id}/withdraw/",
        {
            "anonymous": 401,
            "author": 200,
            "other": 404,
            "member": 403,
            "checker": 403,
            "admin": 403,
        },
        lambda w, f: w.at(Status.AWAITING_REVIEW),
        data=lambda world, files: {"reason": "wrong model"},
        fresh=True,
    ),
    "retry": Row(
        "post",
        "/requests/{id}/retry/",
        {
            "anonymous": 401,
            "author": 202,
            "other": 404,
            "member": 403,
            "checker": 404,
            "admin": 202,
        },
        lambda w, f: w.at(Status.AUDIT_FAILED),
        fresh=True,
    ),
    "queue": Row(
        "get",
        "/queue/",
        {r: {"anonymous": 401, "checker": 200}.get(r, 403) for r in ROLES},
    ),
    "review": Row(
        "post",
        "/requests/{id}/reviews/",
        {
            "anonymous": 401,
            "author": 403,
            "other": 404,
            "member": 403,
            "checker": 201,
            "admin": 403,
        },
        lambda w, f: w.at(Status.AWAITING_REVIEW),
        data=lambda world, files: {  # the run of the request just made (fresh=True)
            "run_id": AuditRun.objects.latest("id").id,
            "decision": "approve",
            "reason": "low risk, no findings",
        },
        fresh=True,
    ),
    "bundle": Row(
        "get",
        "/requests/{id}/bundle.zip",
        {
            "anonymous": 401,
            "author": 200,
            "other": 404,
            "member": 403,
            "checker": 403,
            "admin": 200,
        },
        _released,
    ),
}


def _call(client, row: Row, submission, data):
    path = API + row.path.format(id=submission.pk if submission else 0)
    if row.method == "get":
        return getattr(client, row.method)(path)
    return client.post(path, data, format="multipart")


@pytest.mark.parametrize("name", list(MATRIX))
def test_permission_matrix(world, example_files, name):
    row = MATRIX[name]
    shared = row.state(world, example_files) if row.state and not row.fresh else None
    got = {}
    for role in ROLES:
        submission = row.state(world, example_files) if row.fresh else shared
        client = client_for(world.user(role))
        got[role] = _call(client, row, submission, row.data(world, example_files)).status_code
    assert got == row.expected


def test_release_matrix(world, example_files):
    expected = {
        "anonymous": 401,
        "author": 200,
        "other": 404,
        "member": 403,
        "checker": 403,
        "admin": 200,
    }
    got = {}
    for role in ROLES:
        submission = _in_project(_release_state(world, example_files, role), world)
        response = client_for(world.user(role)).post(f"{API}/requests/{submission.pk}/release/")
        got[role] = response.status_code
    assert got == expected


def test_a_token_for_username_and_password(world):
    client = client_for(None)
    response = client.post(f"{API}/token/", {"username": "author", "password": "pw"})
    assert response.status_code == 200
    listing = client_for(None)
    listing.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    assert listing.get(f"{API}/requests/").status_code == 200
    wrong = client.post(f"{API}/token/", {"username": "author", "password": "nope"})
    assert wrong.status_code == 400
    assert wrong.json()["detail"] == "Unable to log in with provided credentials."


def test_errors_are_one_sentence_under_detail(world):
    response = client_for(None).get(f"{API}/requests/")
    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}
    bad = client_for(None)
    bad.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef")
    assert bad.get(f"{API}/requests/").json() == {"detail": "Invalid token."}


# -- submitting --------------------------------------------------------------------------


def test_submit_stores_the_request_and_queues_its_audit_on_commit(
    world, example_files, django_capture_on_commit_callbacks, broker_down
):
    client = client_for(world.author)
    data = submit_data(example_files, project=str(world.project.pk), hosting="query_only")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(f"{API}/requests/", data, format="multipart")
    assert response.status_code == 201, response.json()
    body = response.json()
    submission = Submission.objects.get(pk=body["id"])
    assert (submission.author, submission.project, submission.hosting) == (
        world.author,
        world.project,
        "query_only",
    )
    assert submission.files_are_exact and submission.model_type == "SVC"
    assert body["status"] == "submitted" and body["audit"]["status"] == RunStatus.QUEUED
    assert body["links"]["report_pdf"] is None
    # The audit is sent only when the transaction commits, which a test like this one
    # never does: no broker is needed. Sending it by hand shows it was waiting.
    run = AuditRun.objects.get(submission=submission)
    assert run.stage == ""
    for callback in callbacks:
        callback()
    run.refresh_from_db()
    assert (run.status, run.stage) == (RunStatus.QUEUED, NOT_QUEUED)


def _nothing_stored():
    return (Submission.objects.count(), StoredFile.objects.count(), AuditEntry.objects.count())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"label": "outcome"}, "outcome"),
        ({"files_are_exact": "false"}, "files_are_exact: Declare that these files are exactly"),
        ({"hosting": "usb_stick"}, "hosting:"),
        ({"title": ""}, "title:"),
        ({"model": None}, "model:"),
    ],
)
def test_a_refused_submission_stores_nothing(world, example_files, change, message):
    before = _nothing_stored()
    data = {k: v for k, v in submit_data(example_files, **change).items() if v is not None}
    response = client_for(world.author).post(f"{API}/requests/", data, format="multipart")
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert message in detail and "\n" not in detail
    assert _nothing_stored() == before


def test_a_pickled_model_is_refused_before_anything_is_stored(world, example_files):
    import pickle

    from django.core.files.uploadedfile import SimpleUploadedFile

    before = _nothing_stored()
    evil = SimpleUploadedFile("model.pkl", pickle.dumps({"not": "run"}))
    response = client_for(world.author).post(
        f"{API}/requests/", submit_data(example_files, model=evil), format="multipart"
    )
    assert response.status_code == 400 and "skops" in response.json()["detail"]
    assert _nothing_stored() == before


def test_a_file_over_the_upload_limit_is_refused(world, example_files):
    before = _nothing_stored()
    limit = len(example_files["model"].data) - 1
    with override_settings(TRE_AUDIT_MAX_UPLOAD_BYTES=limit):
        response = client_for(world.author).post(
            f"{API}/requests/", submit_data(example_files), format="multipart"
        )
    assert response.status_code == 400
    assert response.json()["detail"] == (
        f"model: {example_files['model'].name} is larger than the upload limit of {limit} bytes."
    )
    assert _nothing_stored() == before


def test_only_a_member_can_submit_to_a_project(world, example_files):
    data = submit_data(example_files, project=str(world.project.pk))
    response = client_for(world.other).post(f"{API}/requests/", data, format="multipart")
    assert response.status_code == 403
    assert "member" in response.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_a_submission_during_a_broker_outage_is_kept_for_later(broker_down, example_files):
    author = factories.create_user("author", Role.RESEARCHER)
    response = client_for(author).post(
        f"{API}/requests/", submit_data(example_files), format="multipart"
    )
    assert response.status_code == 201
    run = AuditRun.objects.get(submission_id=response.json()["id"])
    assert (run.status, run.stage) == (RunStatus.QUEUED, NOT_QUEUED)
    detail = client_for(author).get(f"{API}/requests/{run.submission_id}/").json()
    assert detail["audit"]["stage"] == NOT_QUEUED


# -- reading -----------------------------------------------------------------------------


def test_list_shows_only_what_the_caller_may_see_with_the_current_risk(world):
    mine = world.at(Status.AWAITING_REVIEW, risk="high")
    theirs = factories.create_submission_at_status(Status.AWAITING_REVIEW, author=world.other)
    rows = client_for(world.author).get(f"{API}/requests/").json()["results"]
    assert [(r["id"], r["risk"], r["status"]) for r in rows] == [
        (mine.pk, "high", "awaiting_review")
    ]
    assert rows[0]["url"].endswith(f"/api/v1/requests/{mine.pk}/")
    everything = client_for(world.admin).get(f"{API}/requests/").json()["results"]
    assert {r["id"] for r in everything} == {mine.pk, theirs.pk}


def test_detail_shows_progress_verdict_and_links(world, example_files):
    submission = audited(example_files, world.author)
    body = client_for(world.author).get(f"{API}/requests/{submission.pk}/").json()
    assert body["status"] == "awaiting_review" and body["version"] == 1
    assert body["audit"]["status"] == "done" and body["audit"]["progress"] == 1.0
    assert body["audit"]["attempts"] == 1
    assert body["verdict"]["risk"] == "high" and body["verdict"]["summary"]
    for link in ("report_json", "report_pdf"):
        assert body["links"][link].startswith("http://testserver/api/v1/")
    assert body["links"]["bundle"] is None


def test_reports_download(world, example_files):
    submission = audited(example_files, world.author)
    client = client_for(world.checker)
    pdf = client.get(f"{API}/requests/{submission.pk}/report.pdf")
    assert pdf["Content-Type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    asked = client.get(f"{API}/requests/{submission.pk}/report.pdf", HTTP_ACCEPT="application/pdf")
    assert asked.status_code == 200
    report = client.get(f"{API}/requests/{submission.pk}/report.json")
    assert report.json()["verdict"]["risk"] == "high"
    assert report.content == report_dumps(submission.runs.get().report).encode()


def test_no_report_before_the_audit_has_finished(world):
    submission = world.at(Status.AUDITING)
    client = client_for(world.author)
    for name in ("report.json", "report.pdf"):
        response = client.get(f"{API}/requests/{submission.pk}/{name}")
        assert response.status_code == 404
        assert "no finished audit" in response.json()["detail"]


def test_a_checker_cannot_see_a_request_before_it_is_audited(world):
    submission = world.at(Status.SUBMITTED)
    response = client_for(world.checker).get(f"{API}/requests/{submission.pk}/")
    assert response.status_code == 404


def test_another_researchers_request_is_not_even_confirmed(world):
    submission = world.at(Status.AWAITING_REVIEW)
    missing = client_for(world.other).get(f"{API}/requests/{submission.pk + 1000}/")
    hidden = client_for(world.other).get(f"{API}/requests/{submission.pk}/")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json()


# -- acting ------------------------------------------------------------------------------


def test_retry_only_after_an_audit_failure(world):
    submission = world.at(Status.AWAITING_REVIEW)
    response = client_for(world.author).post(f"{API}/requests/{submission.pk}/retry/")
    assert response.status_code == 409
    submission.refresh_from_db()
    assert submission.status == Status.AWAITING_REVIEW and submission.runs.count() == 1


def test_withdraw_needs_a_reason_and_a_withdrawn_request_stays(world):
    submission = world.at(Status.AWAITING_REVIEW)
    client = client_for(world.author)
    assert client.post(f"{API}/requests/{submission.pk}/withdraw/", {}).status_code == 400
    done = client.post(f"{API}/requests/{submission.pk}/withdraw/", {"reason": "wrong data"})
    assert done.json()["status"] == "withdrawn"
    again = client.post(f"{API}/requests/{submission.pk}/withdraw/", {"reason": "again"})
    assert again.status_code == 409 and "withdrawn" in again.json()["detail"]


def test_a_new_version_is_audited_again(world, example_files):
    submission = _failed(world, example_files)
    response = client_for(world.author).post(
        f"{API}/requests/{submission.pk}/versions/",
        {"note": "retrained", **multipart_files(example_files)},
        format="multipart",
    )
    assert response.status_code == 201
    body = response.json()
    assert (body["version"], body["status"], body["audit"]["version"]) == (2, "submitted", 2)


def test_a_checker_cannot_review_their_own_request(world):
    submission = factories.create_submission_at_status(Status.AWAITING_REVIEW, author=world.checker)
    response = client_for(world.checker).post(
        f"{API}/requests/{submission.pk}/reviews/",
        {"run_id": current_run(submission).id, "decision": "approve", "reason": "mine is fine"},
        format="json",
    )
    assert response.status_code == 403
    assert response.json()["detail"] == "Checkers cannot review their own requests."


def test_review_input_is_checked(world):
    submission = world.at(Status.AWAITING_REVIEW)
    client = client_for(world.checker)
    url = f"{API}/requests/{submission.pk}/reviews/"
    run_id = current_run(submission).id
    changes = client.post(
        url, {"run_id": run_id, "decision": "request_changes", "reason": "x"}, format="json"
    )
    assert changes.status_code == 400 and "comment" in changes.json()["detail"]
    unknown = client.post(
        url, {"run_id": run_id, "decision": "maybe", "reason": "x"}, format="json"
    )
    assert unknown.status_code == 400 and unknown.json()["detail"].startswith("decision:")


def test_the_queue_lists_what_a_checker_may_review_oldest_first(world):
    older = world.at(Status.AWAITING_REVIEW)
    newer = world.at(Status.AWAITING_REVIEW)
    world.at(Status.SUBMITTED)
    own = factories.create_submission_at_status(Status.AWAITING_REVIEW, author=world.checker)
    client = client_for(world.checker)
    assert [r["id"] for r in client.get(f"{API}/queue/").json()] == [older.pk, newer.pk]
    client.post(
        f"{API}/requests/{older.pk}/reviews/",
        {"run_id": current_run(older).id, "decision": "approve", "reason": "fine"},
        format="json",
    )
    rows = client.get(f"{API}/queue/").json()
    assert [r["id"] for r in rows] == [newer.pk]
    assert own.pk not in [r["id"] for r in rows]
    assert "approvals" not in client_for(world.checker2).get(f"{API}/queue/").json()[0]


def test_two_checkers_approve_then_the_author_releases_and_downloads(world, example_files):
    submission = audited(example_files, world.author)
    evidence = finding_sources(submission.runs.get())
    first, second, author = (client_for(u) for u in (world.checker, world.checker2, world.author))
    url = f"{API}/requests/{submission.pk}"
    approve = {
        "run_id": current_run(submission).id,
        "decision": Decision.APPROVE,
        "reason": "the attack's AUC is acceptable for a query-only service",
        "evidence": evidence[:2],
        "justification": "released behind a query service only",
        "condition": "endpoint_only",
    }

    no_evidence = first.post(f"{url}/reviews/", {**approve, "evidence": []}, format="json")
    assert no_evidence.status_code == 400 and "Cite the findings" in no_evidence.json()["detail"]
    review = first.post(f"{url}/reviews/", approve, format="json")
    assert review.status_code == 201, review.json()
    assert review.json()["needs_admin_signoff"] is True
    # independent review: the second checker sees no review before giving their own
    assert second.get(f"{url}/").json()["reviews"] == []
    assert first.post(f"{url}/reviews/", approve, format="json").status_code == 403
    assert second.post(f"{url}/reviews/", approve, format="json").status_code == 201
    detail = author.get(f"{url}/").json()
    assert detail["status"] == "approved" and len(detail["reviews"]) == 2
    assert len(second.get(f"{url}/").json()["reviews"]) == 2

    held = author.post(f"{url}/release/")
    assert held.status_code == 403 and "sign-off" in held.json()["detail"]
    for review in detail["reviews"]:
        sign_off = f"{url}/reviews/{review['id']}/sign-off/"
        assert first.post(sign_off, {"reason": "ok"}, format="json").status_code == 403
        signed = client_for(world.admin).post(sign_off, {"reason": "agreed"}, format="json")
        assert signed.status_code == 200 and signed.json()["signed_off_at"]

    released = author.post(f"{url}/release/")
    assert released.status_code == 200 and released.json()["status"] == "released"
    bundle = author.get(released.json()["links"]["bundle"])
    assert bundle.status_code == 200 and bundle["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(bundle.content))
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["request"] == submission.pk and manifest["model_withheld"] is True
    assert set(manifest["files"]) == {"report.json", "report.pdf"}  # endpoint only: no weights
    for name, digest in manifest["files"].items():
        assert hashlib.sha256(archive.read(name)).hexdigest() == digest


def test_a_released_bundle_holds_the_model_when_it_may_leave_as_a_file(world, example_files):
    submission = approved(example_files, world.author, [world.checker, world.checker2], world.admin)
    client = client_for(world.admin)
    assert client.post(f"{API}/requests/{submission.pk}/release/").status_code == 200
    archive = zipfile.ZipFile(
        io.BytesIO(client.get(f"{API}/requests/{submission.pk}/bundle.zip").content)
    )
    manifest = json.loads(archive.read("manifest.json"))
    model = f"model/{example_files['model'].name}"
    assert manifest["model_withheld"] is False
    assert hashlib.sha256(archive.read(model)).hexdigest() == manifest["files"][model]
    assert manifest["model_sha256"] == hashlib.sha256(example_files["model"].data).hexdigest()


def test_no_bundle_before_release(world):
    submission = world.at(Status.APPROVED)
    response = client_for(world.author).get(f"{API}/requests/{submission.pk}/bundle.zip")
    assert response.status_code == 404


def test_a_review_of_a_superseded_version_is_refused(world, example_files, enqueued):
    submission = factories.create_audited_submission(Status.AWAITING_REVIEW)
    opened_on = current_run(submission).id
    submission_new_version(submission=submission, by=submission.author, **example_files)
    factories.complete_audit(submission)
    url = f"{API}/requests/{submission.pk}/reviews/"
    client = client_for(world.checker)
    review = {"decision": "approve", "reason": "fine", "evidence": ["attack:lira"]}
    stale = client.post(url, {**review, "run_id": opened_on}, format="json")
    assert stale.status_code == 400
    assert stale.json()["detail"] == (
        "Version 2 has been submitted since you opened this page; read its report before deciding."
    )
    missing = client.post(url, review, format="json")
    assert missing.status_code == 400 and missing.json()["detail"].startswith("run_id:")
    assert not submission.reviews.exists()
