"""Versions in a real browser: the researcher reads what the checkers asked for at the
top of the page and sends version 2 from it; on version 2's page a checker unfolds
version 1 and reads its review and comments. Screenshots go to test-artifacts/browser/."""

import pytest
from playwright.sync_api import expect

from tests import factories
from tests.integration.conftest import Screenshots, sign_in_as
from tre_audit.reviews.enums import Decision, Role
from tre_audit.reviews.services import comment_add, review_submit
from tre_audit.submissions import services
from tre_audit.submissions.models import Submission
from tre_audit.submissions.selectors import current_run
from tre_audit.submissions.services import Declaration, submission_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ASKED = "Set min_samples_leaf to 20."
V1_REASON = "Leaves of one record on version 1."


def _sent_back(example_files) -> Submission:
    """Version 1, audited, commented on and sent back by checker cleo."""
    author = factories.create_user("rita", Role.RESEARCHER)
    submission = submission_create(
        author=author,
        title="Famous patient SVC",
        label="response",
        declaration=Declaration(
            model_type="SVC", preprocessing="none", purpose="Teaching", files_are_exact=True
        ),
        **example_files,
    )
    factories.complete_audit(submission)
    cleo = factories.create_user("cleo", Role.CHECKER)
    comment_add(submission=submission, author=cleo, text="Leaves hold one record.")
    review_submit(
        submission=submission,
        run_id=current_run(submission).id,
        reviewer=cleo,
        decision=Decision.REQUEST_CHANGES,
        reason=V1_REASON,
        evidence=["rule:min_leaf_records"],
        comment=ASKED,
    )
    return submission


def test_the_researcher_answers_the_banner_and_a_checker_reads_version_1_on_version_2(
    live_server, browser_context, browser_artifacts, example_files, monkeypatch
):
    monkeypatch.setattr(services, "_enqueue_audit", lambda run_id, **kw: True)  # no worker
    submission = _sent_back(example_files)
    url = f"/requests/{submission.pk}/"

    violations: list[str] = []
    researcher = sign_in_as(browser_context, "rita", violations)
    researcher.goto(url)
    banner = researcher.locator(".banner")
    expect(banner).to_be_in_viewport()
    expect(banner).to_contain_text(f"The checkers asked for changes: {ASKED} — cleo")
    shot = Screenshots(browser_artifacts, prefix="versions")
    shot(researcher, "banner")
    banner.get_by_role("link", name="Submit a new version").click()
    form = researcher.locator("#new-version-form")
    expect(form).to_be_visible()
    expect(form.locator("#id_purpose")).to_have_value("Teaching")
    researcher.fill("#id_note", "min_samples_leaf=20 as asked")
    researcher.fill("#id_purpose", "Teaching and a paper")
    for role in ("model", "train", "test"):
        upload = example_files[role]
        form.locator(f"#id_{role}").set_input_files(
            {"name": upload.name, "mimeType": "application/octet-stream", "buffer": upload.data}
        )
    shot(researcher, "new-version-form")
    form.get_by_role("button", name="Submit version 2").click()
    expect(researcher.get_by_text("New version stored")).to_be_visible()
    expect(researcher.locator(".banner")).to_have_count(0)

    factories.complete_audit(submission, risk="low")
    for width in (1280, 390):
        factories.create_user(f"eve{width}", Role.CHECKER)  # has not reviewed version 2
        checker = sign_in_as(browser_context, f"eve{width}", violations, width)
        checker.goto(url)
        first = checker.locator("#version-1")
        expect(first).not_to_have_attribute("open", "")
        expect(first.get_by_text(V1_REASON)).to_be_hidden()
        first.locator("summary").click()
        expect(first.get_by_text(V1_REASON)).to_be_in_viewport()
        expect(first.get_by_text("Leaves hold one record.")).to_be_visible()
        expect(checker.locator("#version-2")).to_contain_text("min_samples_leaf=20 as asked")
        expect(checker.locator("#declaration-changed")).to_contain_text("Purpose")
        checker.screenshot(
            path=browser_artifacts / f"versions-03-history-{width}.png", full_page=True
        )
    assert violations == []
