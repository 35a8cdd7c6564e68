"""The researchers' pages: who may open or do what, and submitting through the web form."""

import hashlib
import html
import os
import pickle

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from attacks.report import report_dumps
from tests import factories
from tests.factories import LOGIN, ROLES, assert_response, codes
from tre_audit.reviews.enums import Role
from tre_audit.submissions import services
from tre_audit.submissions.enums import FileRole, RunStatus, Status
from tre_audit.submissions.models import (
    AuditEntry,
    AuditRun,
    Project,
    StoredFile,
    Submission,
    SubmissionFile,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def people():
    return factories.create_people()


def request_of(people, status=Status.AWAITING_REVIEW):
    """The author's request in the members' project, audited from AWAITING_REVIEW on."""
    return factories.create_audited_submission(
        status, author=people["author"], project=Project.objects.get()
    )


def call(client, user, method, url, data=None):
    if user is not None:
        client.force_login(user)
    return client.post(url, data or {}) if method == "POST" else client.get(url)


def cases(expected: dict[str, dict]):
    """(page, person, expected code) for each cell of a table of pages by person."""
    return [(name, role, by_role[role]) for name, by_role in expected.items() for role in ROLES]


# Pages of one request -------------------------------------------------------------

#: Once audited, checkers see it too; other researchers never learn that it exists.
SEES = codes(LOGIN, 200, 404, 200, 200, 200)
AUDITED_PAGES = {
    name: SEES for name in ("detail", "progress", "report_pdf", "report_json", "compare")
}


@pytest.mark.parametrize("name, role, expected", cases(AUDITED_PAGES))
def test_pages_of_an_audited_request(client, people, name, role, expected):
    submission = request_of(people)
    url = reverse(f"submissions:{name}", args=[submission.pk])
    assert_response(call(client, people[role], "GET", url), expected)


#: Before the audit: checkers do not see it, and nobody gets a report.
UNAUDITED_PAGES = {
    "detail": codes(LOGIN, 200, 404, 200, 404, 200),
    "progress": codes(LOGIN, 200, 404, 200, 404, 200),
    "compare": codes(LOGIN, 200, 404, 200, 404, 200),
    "report_pdf": codes(LOGIN, 404, 404, 404, 404, 404),
    "report_json": codes(LOGIN, 404, 404, 404, 404, 404),
}


@pytest.mark.parametrize("name, role, expected", cases(UNAUDITED_PAGES))
def test_pages_of_a_request_not_yet_audited(client, people, name, role, expected):
    submission = request_of(people, Status.SUBMITTED)
    url = reverse(f"submissions:{name}", args=[submission.pk])
    assert_response(call(client, people[role], "GET", url), expected)


def test_the_reports_are_the_stored_ones(client, people):
    submission = request_of(people)
    client.force_login(people["checker"])
    pdf = client.get(reverse("submissions:report_pdf", args=[submission.pk]))
    assert pdf["Content-Type"] == "application/pdf" and pdf.content == factories.REPORT_PDF
    report = client.get(reverse("submissions:report_json", args=[submission.pk]))
    assert report.json() == factories.realistic_report("medium")


def test_the_report_json_download_has_the_bytes_the_cli_writes(client, people):
    """Read back from the database (jsonb reorders keys), the same text as report_dumps."""
    submission = request_of(people)
    client.force_login(people["checker"])
    report = client.get(reverse("submissions:report_json", args=[submission.pk]))
    assert report["Content-Type"] == "application/json"
    assert report.content == report_dumps(factories.realistic_report("medium")).encode()


def test_a_report_of_another_request_cannot_be_asked_for_by_run(client, people):
    mine, theirs = request_of(people), factories.create_audited_submission(risk="high")
    client.force_login(people["author"])
    url = reverse("submissions:report_json", args=[mine.pk])
    report = client.get(url, {"run": theirs.runs.get().pk}).json()
    assert report["verdict"]["risk"] == "medium"


def test_progress_reports_the_current_run(client, people):
    submission = request_of(people, Status.SUBMITTED)
    AuditRun.objects.create(submission=submission, stage="LiRA: shadow 3 of 16", progress=0.25)
    client.force_login(people["author"])
    progress = client.get(reverse("submissions:progress", args=[submission.pk])).json()
    assert progress["status"] == Status.SUBMITTED and progress["progress"] == 0.25
    assert progress["stage"] == "LiRA: shadow 3 of 16"


# Pages of no particular request ---------------------------------------------------

GENERAL_PAGES = {
    "list": codes(LOGIN, 200, 200, 200, 200, 200),
    "create": codes(LOGIN, 200, 200, 200, 403, 403),
}


@pytest.mark.parametrize("name, role, expected", cases(GENERAL_PAGES))
def test_general_pages(client, people, name, role, expected):
    assert_response(call(client, people[role], "GET", reverse(f"submissions:{name}")), expected)


@pytest.mark.parametrize("role, expected", codes(LOGIN, 302, 302, 302, 403, 403).items())
def test_only_researchers_submit(client, people, example_files, role, expected):
    response = call(
        client, people[role], "POST", reverse("submissions:create"), form_data(example_files)
    )
    assert_response(response, expected)
    assert Submission.objects.filter(author=people[role]).exists() == (expected == 302)


@pytest.mark.parametrize(
    "role, lists_audited, lists_unaudited",
    [
        ("author", True, True),
        ("other", False, False),
        ("member", True, True),
        ("checker", True, False),
        ("admin", True, True),
    ],
)
def test_the_list_shows_the_requests_a_user_may_open(
    client, people, role, lists_audited, lists_unaudited
):
    audited, unaudited = request_of(people), request_of(people, Status.SUBMITTED)
    client.force_login(people[role])
    page = client.get(reverse("submissions:list")).content.decode()
    assert (f'href="{audited.get_absolute_url()}"' in page) == lists_audited
    assert (f'href="{unaudited.get_absolute_url()}"' in page) == lists_unaudited


@pytest.mark.parametrize(
    "role, target",
    [
        ("anonymous", None),
        ("researcher", "submissions:list"),
        ("checker", "reviews:queue"),
        ("tre_admin", "dashboard:index"),
    ],
)
def test_home_sends_each_role_to_its_start_page(client, role, target):
    if role != "anonymous":
        client.force_login(factories.create_user(role=role))
    response = client.get(reverse("home"))
    assert_response(response, LOGIN if target is None else 302)
    if target is not None:
        assert response.url == reverse(target)


# Actions on one request -----------------------------------------------------------


def _version_data(example_files):
    return {"note": "min_samples_leaf=20", **_files(example_files)}


def _files(uploads):
    return {role: SimpleUploadedFile(u.name, u.data) for role, u in uploads.items()}


#: name: (status before, status after when allowed, expected code per role)
ACTIONS = {
    "withdraw": (Status.AWAITING_REVIEW, Status.WITHDRAWN, codes(LOGIN, 302, 404, 403, 403, 403)),
    "retry": (Status.AUDIT_FAILED, Status.SUBMITTED, codes(LOGIN, 302, 404, 403, 404, 302)),
    "new_version": (
        Status.CHANGES_REQUESTED,
        Status.SUBMITTED,
        codes(LOGIN, 302, 404, 403, 403, 403),
    ),
}


@pytest.mark.parametrize(
    "name, role, expected",
    [(name, role, by_role[role]) for name, (_, _, by_role) in ACTIONS.items() for role in ROLES],
)
def test_actions_on_a_request(client, people, example_files, name, role, expected):
    before, after, _ = ACTIONS[name]
    submission = request_of(people, before)
    data = {
        "withdraw": {"reason": "Wrong data set", "confirm": "on"},
        "retry": {},
        "new_version": _version_data(example_files),
    }[name]
    url = reverse(f"submissions:{name}", args=[submission.pk])
    response = call(client, people[role], "POST", url, data)
    assert_response(response, expected)
    submission.refresh_from_db()
    assert submission.status == (after if expected == 302 else before)
    if expected == 302:
        assert response.url.split("#")[0] == submission.get_absolute_url()


@pytest.mark.parametrize("name", ["withdraw", "retry", "new_version"])
def test_actions_are_post_only(client, people, name):
    submission = request_of(people, ACTIONS[name][0])
    client.force_login(people["author"])
    assert client.get(reverse(f"submissions:{name}", args=[submission.pk])).status_code == 405


def test_a_request_awaiting_review_cannot_be_retried(client, people):
    """Retrying would throw the reviews away and audit the same files again."""
    submission = request_of(people)
    client.force_login(people["author"])
    response = client.post(reverse("submissions:retry", args=[submission.pk]), follow=True)
    assert "Only a request whose audit failed can be retried." in response.content.decode()
    submission.refresh_from_db()
    assert submission.status == Status.AWAITING_REVIEW
    assert submission.runs.count() == 1


def test_withdrawing_needs_a_reason(client, people):
    submission = request_of(people)
    client.force_login(people["author"])
    response = client.post(
        reverse("submissions:withdraw", args=[submission.pk]), {"reason": ""}, follow=True
    )
    assert "Say why you withdraw the request." in response.content.decode()
    submission.refresh_from_db()
    assert submission.status == Status.AWAITING_REVIEW


def test_a_refused_new_version_shows_why_and_keeps_the_old_one(client, people, example_files):
    submission = request_of(people, Status.CHANGES_REQUESTED)
    data = _version_data(example_files) | {"model": SimpleUploadedFile("m.skops", b"not a zip")}
    client.force_login(people["author"])
    response = client.post(reverse("submissions:new_version", args=[submission.pk]), data)
    assert response.status_code == 400
    assert "not a skops file" in response.content.decode()
    submission.refresh_from_db()
    assert (submission.version, submission.status) == (1, Status.CHANGES_REQUESTED)
    assert submission.files.count() == 3


# Release bundle ---------------------------------------------------------------------

BUNDLE = {
    Status.RELEASED: codes(LOGIN, 200, 404, 403, 403, 200),
    Status.APPROVED: codes(LOGIN, 404, 404, 403, 403, 404),  # not released yet
}


@pytest.mark.parametrize(
    "status, role, expected",
    [(status, role, by_role[role]) for status, by_role in BUNDLE.items() for role in ROLES],
)
def test_only_the_author_or_an_admin_downloads_the_release_bundle(
    client, people, status, role, expected
):
    submission = request_of(people, status)
    response = call(
        client, people[role], "GET", reverse("submissions:bundle", args=[submission.pk])
    )
    assert_response(response, expected)
    if expected == 200:
        assert response["Content-Type"] == "application/zip"
        name = f"request-{submission.pk}-v1-release.zip"
        assert response["Content-Disposition"] == f'attachment; filename="{name}"'
        assert b"".join(response.streaming_content) == services.file_read(
            stored=submission.release_bundle
        )


@pytest.mark.parametrize("role, shown", [("author", True), ("member", False), ("admin", True)])
def test_the_download_link_is_shown_to_those_who_may_download(client, people, role, shown):
    submission = request_of(people, Status.RELEASED)
    client.force_login(people[role])
    page = client.get(submission.get_absolute_url()).content.decode()
    assert ('id="download-bundle"' in page) == shown


# Submitting through the form ------------------------------------------------------


def form_data(example_files, **overrides):
    data = {
        "title": "Drug response SVC",
        "label": "response",
        "model_type": "SVC, RBF kernel",
        "preprocessing": "None",
        "purpose": "Teaching",
        "hosting": "public_file",
        "files_are_exact": "on",
        **_files(example_files),
    }
    return {k: v for k, v in (data | overrides).items() if v is not None}


def stored_state(settings):
    files = sorted(p for p in settings.TRE_AUDIT_FILE_ROOT.rglob("*") if p.is_file())
    return (
        Submission.objects.count(),
        SubmissionFile.objects.count(),
        StoredFile.objects.count(),
        AuditRun.objects.count(),
        AuditEntry.objects.count(),
        files,
    )


@pytest.fixture
def researcher(client):
    user = factories.create_user("researcher", Role.RESEARCHER)
    client.force_login(user)
    return user


def test_the_form_stores_the_request_and_queues_its_audit(
    client, researcher, example_files, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr(services, "_enqueue_audit", sent.append)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("submissions:create"), form_data(example_files))
    submission = Submission.objects.get()
    assert response.status_code == 302 and response.url == submission.get_absolute_url()
    assert (submission.author, submission.files_are_exact) == (researcher, True)
    files = {f.role: f for f in submission.files.select_related("stored")}
    assert set(files) == {FileRole.MODEL, FileRole.TRAIN, FileRole.TEST}
    assert services.file_read(stored=files[FileRole.MODEL].stored) == example_files["model"].data
    assert StoredFile.objects.count() == 3
    run = submission.runs.get()
    assert run.status == RunStatus.QUEUED and sent == []
    for callback in callbacks:
        callback()
    assert sent == [run.id]


def test_an_upload_while_the_broker_is_down_is_kept_and_marked(
    client, researcher, example_files, django_capture_on_commit_callbacks
):
    with factories.broker_unreachable(), django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("submissions:create"), form_data(example_files))
    submission = Submission.objects.get()
    assert response.status_code == 302 and response.url == submission.get_absolute_url()
    assert submission.runs.get().stage == services.NOT_QUEUED
    assert client.get(response.url).status_code == 200


class _RunsACommand:
    """A pickle that runs ``touch <path>`` when it is loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _renamed_column(example_files):
    train = example_files["train"]
    header, rest = train.data.split(b"\n", 1)
    return SimpleUploadedFile(train.name, header.replace(b"diabetes", b"diabetic") + b"\n" + rest)


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02"


@pytest.mark.parametrize(
    "case, message",
    [
        ("oversized", "model.skops is larger than the upload limit"),
        ("text as model", "not a skops file"),
        ("png as model", "not a skops file"),
        ("pickle named .pkl", "Pickle and joblib files are refused"),
        ("pickle named .skops", "Pickle and joblib files are refused"),
        ("renamed column", "feature columns differ"),
        ("no declaration", "This field is required."),
    ],
)
def test_refused_uploads_are_shown_and_store_nothing(
    client, researcher, example_files, settings, tmp_path, case, message
):
    pwned = tmp_path / f"pwned-{os.urandom(4).hex()}"
    overrides = {
        "oversized": {},
        "text as model": {"model": SimpleUploadedFile("model.txt", b"a model, honestly")},
        "png as model": {"model": SimpleUploadedFile("model.png", PNG)},
        "pickle named .pkl": {
            "model": SimpleUploadedFile("model.pkl", pickle.dumps(_RunsACommand(pwned)))
        },
        "pickle named .skops": {
            "model": SimpleUploadedFile("model.skops", pickle.dumps(_RunsACommand(pwned)))
        },
        "renamed column": {"train": _renamed_column(example_files)},
        "no declaration": {"files_are_exact": None},
    }[case]
    if case == "oversized":
        settings.TRE_AUDIT_MAX_UPLOAD_BYTES = len(example_files["model"].data) - 1
    model = (
        overrides["model"].file.getvalue() if "model" in overrides else example_files["model"].data
    )
    before = request_state()
    response = client.post(reverse("submissions:create"), form_data(example_files, **overrides))
    assert response.status_code == 400
    assert message in html.unescape(response.content.decode())
    assert request_state() == before
    if case not in ("renamed column", "no declaration"):  # the refused model is not kept
        assert not StoredFile.objects.filter(sha256=hashlib.sha256(model).hexdigest()).exists()
    assert not pwned.exists()


def request_state():
    """What a request leaves; files that passed their own checks are kept (test_forms_kept)."""
    models = (Submission, SubmissionFile, AuditRun, AuditEntry)
    return [model.objects.count() for model in models]


def test_a_project_the_author_is_not_in_is_refused(client, researcher, example_files):
    project = Project.objects.create(name="Someone else's")
    response = client.post(
        reverse("submissions:create"), form_data(example_files, project=str(project.pk))
    )
    assert response.status_code == 400
    assert not Submission.objects.exists()


# Stopping an audit ---------------------------------------------------------------


def _queued_request(people, example_files):
    return services.submission_create(
        author=people["author"],
        title="SVC",
        label="response",
        project=Project.objects.get(),
        declaration=factories.EXACT,
        **example_files,
    )


@pytest.mark.parametrize("role, expected", list(codes(LOGIN, 403, 404, 403, 404, 302).items()))
def test_only_an_admin_stops_an_audit_from_the_web(client, people, example_files, role, expected):
    submission = _queued_request(people, example_files)
    run = submission.runs.get()
    url = reverse("submissions:stop", args=[run.pk])
    response = call(client, people[role], "POST", url, {"reason": "it hangs"})
    assert_response(response, expected)
    run.refresh_from_db()
    if expected == 302:
        assert response.url == submission.get_absolute_url()
        assert (run.status, run.error) == (RunStatus.FAILED, "Stopped by an admin: it hangs")
    else:
        assert run.status == RunStatus.QUEUED


def test_a_stop_without_a_reason_stops_nothing_and_says_why(client, people, example_files):
    run = _queued_request(people, example_files).runs.get()
    client.force_login(people["admin"])
    url = reverse("submissions:stop", args=[run.pk])
    response = client.post(url, {"reason": ""}, follow=True)
    assert "Say why you stop the audit." in response.content.decode()
    assert client.get(url).status_code == 405
    assert (
        client.post(reverse("submissions:stop", args=[10**9]), {"reason": "x"}).status_code == 404
    )
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED


def test_the_stop_button_is_on_the_request_page_for_admins_only(client, people, example_files):
    submission = _queued_request(people, example_files)
    action = f'action="{reverse("submissions:stop", args=[submission.runs.get().pk])}"'
    client.force_login(people["admin"])
    page = client.get(submission.get_absolute_url()).content.decode()
    assert action in page and "Stop the audit" in page
    client.force_login(people["author"])
    assert action not in client.get(submission.get_absolute_url()).content.decode()


def test_a_stop_returns_to_the_page_it_came_from_on_this_site_only(client, people, example_files):
    run = _queued_request(people, example_files).runs.get()
    client.force_login(people["admin"])
    url = reverse("submissions:stop", args=[run.pk])
    response = client.post(url, {"reason": "stuck", "next": "/dashboard/"})
    assert response.url == "/dashboard/"
    other = _queued_request(people, example_files).runs.get()
    url = reverse("submissions:stop", args=[other.pk])
    response = client.post(url, {"reason": "stuck", "next": "https://evil.example/"})
    assert response.url == other.submission.get_absolute_url()
