"""The checker's desk around the main flow, in a real browser on a live server (no worker:
audits are finished by the factories). A researcher's submission is refused at its label
column and goes through on the second try without choosing the files again, then is
withdrawn only once its box is ticked; a researcher meets the app's own 404 and 403
pages; a checker changes the password from the user menu; a researcher's request list
keeps its Status and Risk columns on a phone and filters; a TRE admin reads the
dashboard's charts and their data, filters the audit log and exports it. What is
asserted is what the person sees in the window. Screenshots go to test-artifacts/browser/.
"""

import csv
import hashlib
import io
import json
import re

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import Page, expect

from tests import factories
from tests.integration.conftest import Screenshots, sign_in_as
from tre_audit.dashboard.exports import CSV_COLUMNS
from tre_audit.reviews.enums import Decision, Role
from tre_audit.reviews.services import review_submit
from tre_audit.submissions import services
from tre_audit.submissions.enums import Status
from tre_audit.submissions.models import AuditEntry, Submission
from tre_audit.submissions.selectors import current_run
from tre_audit.submissions.services import Declaration, submission_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TITLE = "Famous patient SVC"
FILES = ("model", "train", "test")
USERS = {"rita": Role.RESEARCHER, "carl": Role.CHECKER, "ada": Role.TRE_ADMIN}
NEW_PASSWORD = "mauve-kestrel-harbour-41"
DECLARE = "I declare these files are exactly the model and data used."


@pytest.fixture
def people():
    # a transactional test before this one may have flushed the roles' groups
    for role in Role:
        Group.objects.get_or_create(name=role)
    return {username: factories.create_user(username, role) for username, role in USERS.items()}


@pytest.fixture(scope="module")
def shot(browser_artifacts) -> Screenshots:
    """One numbered series for the file: desk-01-... in the order the tests take them."""
    return Screenshots(browser_artifacts, prefix="desk")


@pytest.fixture
def no_worker(monkeypatch):
    monkeypatch.setattr(services, "_enqueue_audit", lambda run_id, **kw: True)


# 1 and 2: the submit form refused at a field, then a withdrawal --------------------------


def test_a_refused_label_is_fixed_without_choosing_the_files_again_then_withdrawn(
    live_server, browser_context, shot, example_files, people, no_worker
):
    violations: list[str] = []
    page = sign_in_as(browser_context, "rita", violations)
    columns = example_files["train"].data.decode().splitlines()[0].split(",")
    _submit_with_a_label_the_file_lacks(page, example_files, columns, shot)
    _refused_at_the_label(page, example_files, columns, shot)
    page.locator("#id_label").select_option("response")
    page.get_by_role("button", name="Submit for audit").click()  # no file chosen again
    expect(page).to_have_url(re.compile(r"/requests/\d+/(#[\w-]+)?$"))
    expect(page.get_by_text("Submitted: the audit has been queued.")).to_be_in_viewport()
    expect(page.get_by_role("heading", name=TITLE)).to_be_visible()
    shot(page, "submitted-on-the-second-try")
    submission = Submission.objects.get(title=TITLE)
    assert submission.label == "response"
    stored = {f.role: (f.name, f.stored.sha256) for f in submission.files.all()}
    assert stored == {
        role: (example_files[role].name, hashlib.sha256(example_files[role].data).hexdigest())
        for role in FILES
    }, "the kept files are the ones first chosen"

    _withdraw_needs_its_box_ticked(page, submission, shot)
    assert violations == []


def _submit_with_a_label_the_file_lacks(page: Page, files: dict, columns, shot) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Submit a model").click()
    form = page.locator("#submit-form")
    expect(form.locator(".required-legend")).to_be_visible()
    required = ("title", "model", "train", "label", "test", "model_type", "preprocessing")
    for name in (*required, "purpose", "hosting", "files_are_exact"):
        expect(form.locator(f"#id_{name}_field .req")).to_have_count(1)
    expect(form.locator("#id_project_field .req")).to_have_count(0)
    expect(form.locator("#id_title")).to_have_attribute("required", "")
    page.fill("#id_title", TITLE)
    for role in FILES:
        upload = files[role]
        page.set_input_files(
            f"#id_{role}",
            {"name": upload.name, "mimeType": "application/octet-stream", "buffer": upload.data},
        )
    # forms.js offers the chosen training file's header as suggestions
    expect(page.locator("#id_label_columns option")).to_have_count(len(columns))
    page.fill("#id_label", "outcome")
    page.fill("#id_model_type", "Support vector classifier, RBF kernel")
    page.fill("#id_preprocessing", "None: the features are used as recorded.")
    page.fill("#id_purpose", "Predicting the response to treatment in new patients.")
    page.get_by_label("Published as a file").check()
    page.get_by_label(DECLARE).check()
    shot(page, "submit-form-filled")
    page.get_by_role("button", name="Submit for audit").click()


def _refused_at_the_label(page: Page, files: dict, columns, shot) -> None:
    """Back at the label field, focused, with the columns the file has; the files kept."""
    expect(page).to_have_url(re.compile(r"/requests/new/#submit-form$"))
    error = page.locator("#id_label_error")
    expect(error).to_be_in_viewport()
    named = ", ".join(f"'{c}'" for c in columns)
    expect(error).to_have_text(
        f"The training file has no column 'outcome'; its columns are {named}."
    )
    label = page.locator("#id_label")
    expect(label).to_be_focused()
    expect(label).to_have_attribute("aria-describedby", re.compile(r"\bid_label_error\b"))
    # the kept training file's columns, as a list to choose from
    expect(label).to_have_js_property("tagName", "SELECT")
    expect(label.locator("option")).to_have_text(["Choose the label column", *columns])
    for role in FILES:
        expect(page.locator(f"#id_{role}_kept")).to_contain_text(f"Kept: {files[role].name} (")
        expect(page.locator(f"#id_{role}_field .req")).to_have_count(1)
        assert page.locator(f"#id_{role}").get_attribute("required") is None
    expect(page.locator("#id_title")).to_have_value(TITLE)
    expect(page.locator("#id_purpose")).to_have_value(
        "Predicting the response to treatment in new patients."
    )
    expect(page.get_by_label(DECLARE)).to_be_checked()
    shot(page, "submit-refused-at-the-label")


def _withdraw_needs_its_box_ticked(page: Page, submission: Submission, shot) -> None:
    page.get_by_text("Withdraw the request").click()
    form = page.locator("#withdraw-form")
    form.locator("#id_withdraw_reason").fill("Submitted with the wrong purpose.")
    confirm = form.locator("#id_withdraw_confirm")
    expect(confirm).to_have_attribute("required", "")
    form.get_by_role("button", name="Withdraw").click()
    # the browser holds the post and takes the person to the box it wants ticked
    expect(confirm).to_be_focused()
    expect(page.locator("#id_withdraw_confirm_error")).to_have_count(0)  # no post came back
    assert confirm.evaluate("box => box.validity.valueMissing")
    expect(page.locator("#status-label")).to_have_text("Submitted")

    # without the browser's check, the server refuses it at the box
    form.evaluate("f => { f.noValidate = true; }")
    form.get_by_role("button", name="Withdraw").click()
    error = page.locator("#id_withdraw_confirm_error")
    expect(error).to_be_in_viewport()
    expect(error).to_have_text("Tick the box to confirm that you withdraw the request.")
    expect(page.locator("#id_withdraw_confirm")).to_be_focused()
    expect(page.locator("#id_withdraw_reason")).to_have_value("Submitted with the wrong purpose.")
    expect(page.locator("#status-label")).to_have_text("Submitted")
    submission.refresh_from_db()
    assert submission.status == Status.SUBMITTED
    shot(page, "withdraw-refused-at-its-box")

    page.locator("#id_withdraw_confirm").check()
    page.locator("#withdraw-form").get_by_role("button", name="Withdraw").click()
    expect(page).to_have_url(re.compile(rf"/requests/{submission.pk}/#change$"))
    said = page.locator("#change-messages")
    expect(said).to_be_in_viewport()
    expect(said).to_have_text("The request was withdrawn.")
    expect(said).to_be_focused()
    expect(page.locator("#status-label")).to_have_text("Withdrawn")
    shot(page, "withdrawn")


# 3: the error pages ------------------------------------------------------------------

#: What a researcher opens, and the status, heading and sentence of the page they get.
ERROR_PAGES = {
    "/requests/999999/": (
        404,
        "There is nothing here",
        "There is no request with that number you can see.",
    ),
    "/dashboard/": (403, "You cannot do this", "Only TRE admins see the dashboard."),
}


def test_not_found_and_not_allowed_are_the_apps_own_pages(
    live_server, browser_context, shot, people
):
    violations: list[str] = []
    page = sign_in_as(browser_context, "rita", violations)
    for url, (status, heading, said) in ERROR_PAGES.items():
        response = page.goto(url)
        assert response.status == status
        expect(page).to_have_title(re.compile(r" · tre-audit$"))
        expect(page.locator("header.top .brand")).to_be_visible()
        nav = page.get_by_role("navigation", name="Main")
        expect(nav.get_by_role("link", name="My requests")).to_be_visible()
        h1 = page.get_by_role("heading", level=1)
        expect(h1).to_have_text(heading)
        expect(h1).to_be_in_viewport()
        expect(page.locator("main")).to_contain_text(said)
        expect(page.locator("main")).to_contain_text(f"Error {status}")
        expect(page.get_by_role("link", name="Go to your start page")).to_be_in_viewport()
        expect(page.get_by_text("DEBUG = True")).to_have_count(0)  # not Django's own page
        shot(page, f"error-{status}")
    assert violations == []


# 4: a password changed from the user menu --------------------------------------------


def test_a_checker_changes_the_password_from_the_user_menu(
    live_server, browser_context, shot, people
):
    violations: list[str] = []
    page = sign_in_as(browser_context, "carl", violations)
    menu = page.locator("header .usermenu")
    menu.locator("summary").click()
    menu.get_by_role("link", name="Change password").click()
    expect(page.get_by_role("heading", name="Change your password")).to_be_in_viewport()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()  # the app's header
    form = page.locator("#password-form")
    expect(form).to_have_class(re.compile(r"\bcard\b"))
    for name in ("old_password", "new_password1", "new_password2"):
        expect(form.locator(f"#id_{name}_field .req")).to_have_count(1)
    page.fill("#id_old_password", "pw")
    page.fill("#id_new_password1", NEW_PASSWORD)
    page.fill("#id_new_password2", NEW_PASSWORD)
    shot(page, "password-change")
    form.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("heading", name="Password changed")).to_be_in_viewport()
    expect(page.locator(".messages")).to_contain_text("Your password was changed.")
    shot(page, "password-changed")

    menu.locator("summary").click()
    menu.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    for password in ("pw", NEW_PASSWORD):
        page.fill("#id_username", "carl")
        page.fill("#id_password", password)
        page.get_by_role("button", name="Sign in").click()
        if password == "pw":
            expect(page.locator("form .errorlist")).to_contain_text("correct username and password")
            expect(page.locator("header .usermenu")).to_have_count(0)
    expect(page).to_have_url(re.compile(r"/review/queue/$"))
    expect(page.locator("header .usermenu")).to_contain_text("carl")
    assert violations == []


# 5: the request list on a phone -------------------------------------------------------

#: A researcher's requests in different states: title, status, risk shown ("" for none).
REQUESTS = [
    ("Readmission forest", Status.AWAITING_REVIEW, "high"),
    ("Sepsis early warning", Status.APPROVED, "low"),
    ("Length of stay boosting", Status.REJECTED, "medium"),
    ("Frailty index", Status.SUBMITTED, ""),
    ("Stroke outcome net", Status.AUDIT_FAILED, ""),
]


def test_the_request_list_on_a_phone_shows_status_and_risk_and_narrows(
    live_server, browser_context, shot, people
):
    for title, status, risk in REQUESTS:
        factories.create_submission_at_status(
            status, author=people["rita"], risk=risk or "low", title=title
        )
    factories.create_submission_at_status(Status.SUBMITTED, title="Someone else's model")
    violations: list[str] = []
    page = sign_in_as(browser_context, "rita", violations, width=390)
    expect(page.get_by_role("heading", name="My requests")).to_be_visible()
    table = page.locator("main table")
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(len(REQUESTS))
    table.get_by_role("columnheader", name="#").scroll_into_view_if_needed()
    for name in ("Status", "Risk"):
        expect(table.get_by_role("columnheader", name=name)).to_be_in_viewport(ratio=1)
    for title, status, risk in REQUESTS:
        row = rows.filter(has_text=title)
        # up or down to the row by its left-hand cell: nothing scrolled sideways
        row.locator("td").first.evaluate("cell => cell.scrollIntoView({block: 'center'})")
        expect(row.locator("td.status")).to_have_text(status.label)
        expect(row.locator("td.status")).to_be_in_viewport(ratio=1)
        badge = row.locator(".badge")
        if risk:
            expect(badge).to_have_text(f"{risk} risk")
            expect(badge).to_be_in_viewport(ratio=1)
        else:
            expect(badge).to_have_count(0)
    shot(page, "request-list-phone")

    # The sort menu shows the order the table is in, so Apply keeps it. (It showed its
    # first option, "Date, ascending", and any Apply turned the list oldest first: fixed
    # in tre_audit/listing.py, SortField.)
    newest_first = [title for title, _, _ in reversed(REQUESTS)]
    titles = rows.locator("td:nth-child(2) a")
    expect(titles).to_have_text(newest_first)
    expect(page.locator("#id_sort")).to_have_value("-date")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"[?&]sort=-date(&|$)"))
    expect(titles).to_have_text(newest_first)

    page.locator("#id_status").select_option(label="Awaiting review")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"[?&]status=awaiting_review\b"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Readmission forest")
    expect(page.locator("#id_status")).to_have_value("awaiting_review")
    shot(page, "request-list-by-status")

    page.get_by_role("link", name="Clear").click()
    expect(rows).to_have_count(len(REQUESTS))
    page.fill("#id_q", "sepsis")
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(1)
    expect(rows.first.get_by_role("link", name="Sepsis early warning")).to_be_in_viewport()
    shot(page, "request-list-searched")

    page.fill("#id_q", "no such model")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("No request matches these filters.")).to_be_in_viewport()
    assert violations == []


# 6: the TRE admin's dashboard and audit log --------------------------------------------


def _decided_and_waiting(example_files, people) -> tuple[Submission, Submission]:
    """Two real submissions, audited: one rejected by a checker (high risk), one waiting (low)."""

    def submitted(title: str, risk: str) -> Submission:
        submission = submission_create(
            author=people["rita"],
            title=title,
            label="response",
            declaration=Declaration(
                model_type="SVC", preprocessing="none", purpose="Teaching", files_are_exact=True
            ),
            **example_files,
        )
        factories.complete_audit(submission, risk=risk)
        return submission

    rejected = submitted(TITLE, "high")
    review_submit(
        submission=rejected,
        run_id=current_run(rejected).id,
        reviewer=people["carl"],
        decision=Decision.REJECT,
        reason="The famous patient is exposed.",
        evidence=["attack:lira"],
    )
    rejected.refresh_from_db()
    assert rejected.status == Status.REJECTED
    return rejected, submitted("Sepsis early warning", "low")


#: The dashboard's charts: the id of each and its title (the svg's accessible name).
CHARTS = {
    "activity-chart": "Requests submitted and decided per week",
    "decision-time-chart": "Time from submission to first decision",
    "risk-chart": "Requests by risk",
}


def test_a_tre_admin_reads_the_charts_filters_the_audit_log_and_exports_it(
    live_server, browser_context, browser_artifacts, shot, example_files, people, no_worker
):
    rejected, _ = _decided_and_waiting(example_files, people)
    violations: list[str] = []
    page = sign_in_as(browser_context, "ada", violations)
    expect(page).to_have_url(re.compile(r"/dashboard/$"))
    expect(page.locator("#dashboard-charts figure.chart")).to_have_count(len(CHARTS))
    for chart_id, title in CHARTS.items():
        figure = page.locator(f"#{chart_id}-figure")
        figure.scroll_into_view_if_needed()
        plot = figure.locator("svg[role=img]")
        expect(plot).to_be_in_viewport()
        expect(plot).to_have_accessible_name(re.compile(rf"^{re.escape(title)}\b"))
        data = figure.locator("table tbody tr")
        expect(data.first).to_be_hidden()
        figure.get_by_text("Data behind the chart").click()
        expect(data.first).to_be_visible()
    risk_rows = page.locator("#risk-chart-figure table tbody tr")
    assert [risk_rows.nth(i).inner_text().split() for i in range(risk_rows.count())] == [
        ["low", "1"],
        ["medium", "0"],
        ["high", "1"],
    ]
    decided = page.locator("#decision-time-chart-figure table tbody tr").filter(has_text="< 1 h")
    expect(decided.locator("td")).to_have_text("1")
    shot(page, "dashboard-charts")

    page.get_by_role("navigation", name="Dashboard").get_by_role("link", name="Audit log").click()
    expect(page.locator("#chain-heading")).to_have_text("Hash chain intact")
    entries = page.locator("main table tbody tr")
    everything = entries.count()
    page.fill("#id_request", str(rejected.pk))
    page.get_by_role("button", name="Apply").click()
    n_entries = AuditEntry.objects.filter(submission=rejected).count()
    expect(entries).to_have_count(n_entries)
    assert n_entries < everything
    # still newest first after Apply (it was oldest first: the SortField fix)
    expect(page.locator("main table caption")).to_have_text("Newest first.")
    ids = (
        AuditEntry.objects.filter(submission=rejected).order_by("-id").values_list("id", flat=True)
    )
    expect(entries.locator("th")).to_have_text([str(i) for i in ids])
    for i in range(n_entries):
        expect(entries.nth(i).locator("td").nth(2)).to_have_text(f"#{rejected.pk}")
    shot(page, "audit-log-filtered")

    export = page.get_by_role("link", name="Export these entries as CSV")
    expect(export).to_be_in_viewport()
    with page.expect_download() as download_info:
        export.click()
    download = download_info.value
    assert download.suggested_filename == "tre-audit-log.csv"
    path = browser_artifacts / "desk-audit-log.csv"
    download.save_as(path)
    lines = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert lines[0][0] == "# chain"
    chain = json.loads(lines[0][1])
    assert chain["ok"] is True and chain["first_bad_id"] is None
    assert chain["export_logged"] is True and chain["exported_by"] == "ada"
    assert chain["filter"] == {"request": str(rejected.pk)}
    assert chain["n_entries"] == AuditEntry.objects.count()  # the export's own entry too
    assert tuple(lines[1]) == CSV_COLUMNS
    assert [row[CSV_COLUMNS.index("submission_id")] for row in lines[2:]] == [
        str(rejected.pk)
    ] * n_entries
    assert violations == []
