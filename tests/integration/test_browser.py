"""The whole release flow in a real browser, on a live server with a real worker and Redis.

A researcher submits the famous-patient example (a high-risk model), watches
the audit, reads its summary and ROC chart, hears of it in the inbox and asks
about one record; a checker claims it, has a review refused and sees why at
the field; two output checkers approve it with a justification, a TRE admin
signs both approvals off on the dashboard, and the researcher releases the
model (only the enclave is offered for serving it) and downloads the bundle,
whose manifest names both approvers. Each page is screenshotted at 1280 and
390 px into test-artifacts/browser/.
"""

import hashlib
import io
import json
import re
import zipfile

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import Page, expect

from tests import factories
from tests.integration.conftest import PATIENCE, Screenshots, sign_in_as
from tre_audit.reviews.enums import Role

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

#: Worker start-up plus an audit with four shadow models and no sweep.
AUDIT_TIMEOUT_MS = PATIENCE * 1000
TITLE = "Famous patient SVC"
USERS = {
    "rita": Role.RESEARCHER,
    "carl": Role.CHECKER,
    "cleo": Role.CHECKER,
    "ada": Role.TRE_ADMIN,
}


def test_a_model_goes_from_submission_to_a_downloaded_release(
    live_server, worker_factory, browser_context, browser_artifacts, example_files
):
    _create_users()
    shot = Screenshots(browser_artifacts)
    violations: list[str] = []  # what the Content-Security-Policy blocked, on any page
    sign_in = lambda username: sign_in_as(browser_context, username, violations)  # noqa: E731
    researcher = sign_in("rita")
    _submit(researcher, example_files, shot)
    request_url = researcher.url.split("#")[0]  # a fragment would make goto() a same-page jump

    worker_factory()  # started only now, so the queued state above is certain
    _follow_the_audit(researcher, shot)
    _read_the_report(researcher, shot)
    _hear_in_the_inbox(researcher, request_url, shot)
    _ask_about_one_record(researcher, example_files, shot)

    carl = sign_in("carl")
    _claim(carl, shot)
    _refused_review_is_shown_at_its_field(carl, shot)
    _approve(carl, approvals_so_far=0, shot=shot)
    _approve(sign_in("cleo"), approvals_so_far=1, shot=shot)
    researcher.goto(request_url)
    expect(researcher.locator("#status-label")).to_have_text("Approved")
    expect(researcher.get_by_text("waiting for a TRE admin's sign-off")).to_be_visible()
    expect(researcher.get_by_role("button", name="Release")).to_have_count(0)
    shot(researcher, "approved-waiting-for-sign-off")

    _sign_off_all(sign_in("ada"), shot)
    bundle = _release_and_download(researcher, request_url, shot, browser_artifacts)
    _check_bundle(bundle, model_name=example_files["model"].name)
    _only_the_enclave_is_offered(researcher, request_url, shot)
    assert violations == []


def _create_users() -> None:
    # a transactional test before this one may have flushed the roles' groups
    for role in Role:
        Group.objects.get_or_create(name=role)
    for username, role in USERS.items():
        factories.create_user(username, role)


def _submit(page: Page, files: dict, shot: Screenshots) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Submit a model").click()
    expect(page.get_by_role("heading", name="Submit a model for release")).to_be_visible()
    page.fill("#id_title", TITLE)
    page.fill("#id_label", "response")
    for role in ("model", "train", "test"):
        upload = files[role]
        page.set_input_files(
            f"#id_{role}",
            {"name": upload.name, "mimeType": "application/octet-stream", "buffer": upload.data},
        )
    page.fill("#id_model_type", "Support vector classifier, RBF kernel")
    page.fill("#id_preprocessing", "None: the features are used as recorded.")
    page.fill("#id_purpose", "Predicting the response to treatment in new patients.")
    page.get_by_label("Published as a file").check()
    page.get_by_label("I declare these files are exactly the model and data used.").check()
    shot(page, "submit-form")
    page.get_by_role("button", name="Submit for audit").click()
    expect(page).to_have_url(re.compile(r"/requests/\d+/(#[\w-]+)?$"))
    expect(page.get_by_text("Submitted: the audit has been queued.")).to_be_visible()
    expect(page.get_by_role("heading", name=TITLE)).to_be_visible()
    expect(page.locator("#audit-progress")).to_be_visible()
    expect(page.locator("#audit-stage")).to_contain_text("Queued: waiting for a worker")
    shot(page, "queued")


def _follow_the_audit(page: Page, shot: Screenshots) -> None:
    """The page polls and reloads itself: no reload here, only waiting."""
    page.wait_for_function(
        "() => { const bar = document.getElementById('audit-progress');"
        " return !bar || bar.value > 0; }",
        timeout=AUDIT_TIMEOUT_MS,
    )
    shot(page, "auditing")
    expect(page.locator("#status-label")).to_have_text("Awaiting review", timeout=AUDIT_TIMEOUT_MS)
    expect(page.locator("#audit-progress")).to_have_count(0)
    expect(page.locator("#verdict-h")).to_have_text("Verdict: high risk")
    expect(page.get_by_role("link", name="Report (PDF)")).to_be_visible()
    shot(page, "audited")


def _read_the_report(page: Page, shot: Screenshots) -> None:
    """The plain-language summary opens the report; the ROC chart is drawn from its data."""
    page.goto(page.url.split("#")[0])
    expect(page.locator("#summary")).to_be_in_viewport()
    expect(page.locator("#summary .lead")).not_to_be_empty()
    expect(page.locator("#recommended-change")).not_to_be_empty()
    roc = page.locator("#roc-chart-figure")
    roc.scroll_into_view_if_needed()
    plot = roc.locator("svg[role=img]")
    expect(plot).to_be_in_viewport()
    curves = plot.locator("path.chart-series")
    assert curves.count() >= 2, "one ROC curve per attack that ran"
    assert all(len(curves.nth(i).get_attribute("d").split("L")) > 3 for i in range(curves.count()))
    expect(plot).to_contain_text("1/N")
    roc.get_by_text("Data behind the chart").click()
    expect(roc.locator("table tbody tr").first).to_be_visible()
    text = page.locator("main").inner_text()
    internal = re.compile(r"\b(?:attack|rule):\w|lira_offline|by rmia")  # "attack: " is prose
    leaks = [text[max(0, m.start() - 60) : m.end() + 40] for m in internal.finditer(text)]
    assert leaks == [], "internal identifiers where a person reads the page"
    shot(page, "report-and-roc-chart")


def _hear_in_the_inbox(page: Page, request_url: str, shot: Screenshots) -> None:
    nav = page.get_by_role("navigation", name="Main")
    nav.get_by_role("link", name=re.compile("Inbox")).click()
    entry = page.locator(".inbox li.unread").filter(has_text=TITLE).first
    expect(entry).to_be_in_viewport()
    expect(entry).to_contain_text("audit")
    shot(page, "inbox")
    entry.get_by_role("link").click()
    expect(page).to_have_url(re.compile(re.escape(request_url)))


def _ask_about_one_record(page: Page, files: dict, shot: Screenshots) -> None:
    """A training row is asked about; the worker answers from the audit's own shadows."""
    header, first_row = files["train"].data.decode().splitlines()[:2]
    form = page.locator("#record-query-form")
    form.scroll_into_view_if_needed()
    form.locator("input[type=file]").set_input_files(
        {"name": "one.csv", "mimeType": "text/csv", "buffer": f"{header}\n{first_row}\n".encode()}
    )
    form.get_by_role("button", name="Ask").click()
    answer = page.locator("[id^=record-query-]").filter(has_text="Record question")
    expect(answer.first).to_be_in_viewport()
    expect(answer.first).to_contain_text(
        "Was this record in the training set?", timeout=AUDIT_TIMEOUT_MS
    )
    expect(answer.first).to_contain_text("keyed hash")
    expect(answer.first).not_to_contain_text(first_row)  # named by hash, never by its values
    shot(page, "record-answer")


def _claim(page: Page, shot: Screenshots) -> None:
    page.goto("/review/queue/")
    row = page.get_by_role("row").filter(has_text=TITLE)
    row.get_by_role("button", name=re.compile("I'm on request")).click()
    expect(page.locator(".messages")).to_contain_text("is marked as yours")
    expect(row).to_contain_text("You, since")
    shot(page, "queue-claimed")


def _refused_review_is_shown_at_its_field(page: Page, shot: Screenshots) -> None:
    """Asking for changes without saying which: the page comes back scrolled to the
    error, at the field, with the field focused."""
    page.get_by_role("row").filter(has_text=TITLE).get_by_role("link", name=TITLE).click()
    page.get_by_label("Request changes").check()
    page.fill("#id_reason", "The leaves are too small.")
    page.get_by_role("button", name="Submit review").click()
    error = page.locator("#id_comment_error")
    expect(error).to_be_in_viewport()
    expect(error).to_contain_text("a comment is required to request changes")
    expect(page.locator("#id_comment")).to_be_focused()
    expect(page.locator("#id_reason")).to_have_value("The leaves are too small.")
    shot(page, "review-refused-at-its-field")


def _approve(page: Page, *, approvals_so_far: int, shot: Screenshots) -> None:
    username = page.locator("header .signout span").inner_text()
    page.goto("/review/queue/")
    row = page.get_by_role("row").filter(has_text=TITLE)
    expect(row).to_contain_text("high risk")
    expect(row).not_to_contain_text("of 2")  # no hint of the other checker's decision
    shot(page, f"queue-{username}")
    row.get_by_role("link", name=TITLE).click()
    expect(page.get_by_role("heading", name="Your review")).to_be_visible()
    page.locator("input[name=evidence]").first.check()
    page.get_by_label("Approve", exact=True).check()
    page.fill("#id_reason", "The attacks find little beyond the one famous patient.")
    justification = page.locator("#id_justification")
    if justification.count():  # shown for a high-risk verdict only
        justification.fill(
            "The one exposed record is the famous patient, who consented to publication."
        )
    shot(page, f"review-{username}")
    page.get_by_role("button", name="Submit review").click()
    expect(page.get_by_text("Your review was recorded.")).to_be_visible()
    expect(page.locator(".card").filter(has_text=f"Approve by {username}")).to_be_visible()
    status = "Approved" if approvals_so_far + 1 == 2 else "Awaiting review"
    expect(page.locator("#status-label")).to_have_text(status)
    shot(page, f"reviewed-{username}")


def _sign_off_all(page: Page, shot: Screenshots) -> None:
    """Both approvals were given against a high-risk verdict: each needs a sign-off."""
    page.goto("/dashboard/")
    forms = page.locator("form[action*='/dashboard/sign-offs/']")
    expect(forms).to_have_count(2)
    shot(page, "dashboard-sign-offs")
    for remaining in (2, 1):
        expect(forms).to_have_count(remaining)
        forms.first.locator("textarea").fill(
            "The exposed patient consented; both justifications hold."
        )
        forms.first.get_by_role("button", name="Sign off").click()
        expect(page.locator(".messages")).to_contain_text("signed off")
    expect(forms).to_have_count(0)
    expect(page.get_by_text("No approval is waiting for a sign-off.")).to_be_visible()
    shot(page, "dashboard-signed-off")


def _release_and_download(page: Page, request_url: str, shot: Screenshots, directory) -> bytes:
    page.goto(request_url)
    page.get_by_label("I understand that this releases the model from the TRE").check()
    page.get_by_role("button", name="Release").click()
    expect(page.get_by_text("Released: the release bundle is ready to download.")).to_be_visible()
    expect(page.locator("#status-label")).to_have_text("Released")
    shot(page, "released")
    with page.expect_download() as download_info:
        page.locator("#download-bundle").click()
    download = download_info.value
    assert re.fullmatch(r"request-\d+-v1-release\.zip", download.suggested_filename)
    path = directory / "release-bundle.zip"
    download.save_as(path)
    return path.read_bytes()


def _check_bundle(data: bytes, *, model_name: str) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    model = f"model/{model_name}"
    assert set(members) == {"manifest.json", "report.pdf", "report.json", model}
    assert members["report.pdf"].startswith(b"%PDF")
    assert json.loads(members["report.json"])["verdict"]["risk"] == "high"
    manifest = json.loads(members["manifest.json"])
    assert manifest["title"] == TITLE and manifest["model_withheld"] is False
    assert manifest["files"] == {
        name: hashlib.sha256(body).hexdigest()
        for name, body in members.items()
        if name != "manifest.json"
    }
    assert manifest["model_sha256"] == hashlib.sha256(members[model]).hexdigest()
    approvals = manifest["approvals"]
    assert [(a["checker"], a["decision"]) for a in approvals] == [
        ("carl", "approve"),
        ("cleo", "approve"),
    ]
    assert all(a["sign_off"]["by"] == "ada" for a in approvals)


def _only_the_enclave_is_offered(page: Page, request_url: str, shot: Screenshots) -> None:
    """An SVC is not linear: the deploy form offers the enclave alone and says why."""
    page.goto(f"{request_url}#serving")
    kinds = page.locator("form[action*='/deploy'] input[name=kind]")
    expect(kinds).to_have_count(1)
    expect(kinds).to_have_value("enclave")
    expect(page.get_by_text("is not a linear model")).to_be_in_viewport()
    shot(page, "serving-options")
