"""The report on the request page and the compare view: plain words first, names for people."""

import copy
import html
import re
from datetime import UTC, datetime

import pytest
from django.urls import reverse

from tests import factories
from tests.attacks.report_fixture import network_report, sample_report
from tre_audit.submissions.enums import Status
from tre_audit.submissions.models import AuditRun, Project
from tre_audit.submissions.services import report_identity, submission_new_version

pytestmark = pytest.mark.django_db

INTERNAL = ("attack:", "rule:", "lira_offline", "worst_case", "by rmia", "n_reference_models")
TAG = re.compile(r"<[^>]+>")


def _with_report(submission, report) -> None:
    AuditRun.objects.filter(submission=submission, version=submission.version).update(report=report)


def _page(client, submission) -> str:
    client.force_login(submission.author)
    return client.get(reverse("submissions:detail", args=[submission.pk])).content.decode()


def _report_section(page: str) -> str:
    return page[page.index('id="summary"') : page.index('id="glossary"')]


def test_the_summary_comes_before_the_attack_table_and_names_the_change(client):
    submission = factories.create_audited_submission(Status.AWAITING_REVIEW)
    _with_report(submission, sample_report())
    page = _page(client, submission)
    assert page.index('id="summary"') < page.index('id="attacks-table"')
    assert "Setting min_samples_leaf=10 lowers the strongest attack&#x27;s AUC from 0.84" in page
    assert "High risk: the model gives away which people were in its training data." in page


def test_no_internal_identifier_is_in_the_text_of_the_report(client):
    submission = factories.create_audited_submission(Status.AWAITING_REVIEW)
    _with_report(submission, sample_report())
    text = html.unescape(TAG.sub(" ", _report_section(_page(client, submission))))
    assert "LiRA (offline) could not run" in text
    for internal in INTERNAL:
        assert internal not in text


def test_an_unmeasurable_rate_is_explained_in_words(client):
    submission = factories.create_audited_submission(Status.AWAITING_REVIEW)
    _with_report(submission, sample_report())
    text = html.unescape(TAG.sub(" ", _report_section(_page(client, submission))))
    assert "with 500 of them, 0.1% is less than one false alarm" in text
    assert "0.7 points of held-out accuracy" in text


def _safer(report: dict) -> dict:
    """Version 2 of the sample forest: leaves of 10, the leaf rule gone, AUCs lower."""
    report = copy.deepcopy(report)
    report["verdict"]["risk"] = "medium"
    for attack in report["attacks"]:
        if attack["auc"] is not None:
            attack["auc"] -= 0.2
            attack["tpr_at_fpr"]["0.01"] = 0.02
    report["rules"] = report["rules"][1:]
    return report


def test_the_compare_view_reads_like_a_diff(client, example_files):
    submission = factories.create_audited_submission(Status.CHANGES_REQUESTED)
    _with_report(submission, sample_report())
    new = submission_new_version(submission=submission, by=submission.author, **example_files)
    factories.complete_audit(new)
    _with_report(new, _safer(sample_report()))
    client.force_login(new.author)
    page = client.get(reverse("submissions:compare", args=[new.pk])).content.decode()
    text = re.sub(r"\s+", " ", html.unescape(TAG.sub(" ", page)))
    assert "Version 1 → version 2" in text
    assert "high risk → medium risk" in text
    assert re.search(r"RMIA 0\.84 → 0\.64 18% → 2\.0%", text)
    assert "Gone: Leaves can hold one record" in text
    assert "Still found: Many parameters per record" in text
    assert "LiRA (offline) failed → failed" in text
    for internal in INTERNAL:
        assert internal not in text


def test_the_pdf_identity_names_request_version_researcher_project_and_date():
    author = factories.create_user("ada", "researcher")
    author.first_name, author.last_name = "Ada", "Lovelace"
    author.save()
    project = Project.objects.create(name="Readmissions")
    submission = factories.create_audited_submission(
        Status.AWAITING_REVIEW, author=author, project=project
    )
    run = submission.runs.get()
    at = datetime(2026, 3, 14, 10, 25, tzinfo=UTC)
    identity = report_identity(run=run, audited_at=at)
    assert (identity.request, identity.title, identity.version) == (
        submission.pk,
        "Readmission forest",
        1,
    )
    assert (identity.researcher, identity.project) == ("Ada Lovelace", "Readmissions")
    assert identity.audited_at == "14 Mar 2026, 10:25 UTC"


def _network_text(page: str) -> str:
    section = page[page.index('id="declared-network"') : page.index('id="glossary"')]
    return " ".join(html.unescape(TAG.sub(" ", section)).split())


def test_a_declared_network_shows_its_layers_and_recipe_named_for_people(client):
    submission = factories.create_audited_submission(Status.AWAITING_REVIEW)
    _with_report(submission, network_report())
    page = _page(client, submission)
    assert page.index('id="attacks-table"') < page.index('id="layers-table"')
    text = _network_text(page)
    for shown in (
        "Input Images of 1 channel, 8x8 pixels",
        "4 Max pooling MaxPool2d kernel_size=2, stride=2 8x4x4",
        "7 Fully connected Linear in_features=128, out_features=10, bias=true 10",
        "Training recipe",
        "Optimiser AdamW (betas=[0.9, 0.999])",
        "Learning-rate schedule cosine, down to 0 over all epochs",
        "Augmentation random crop (padding=1)",
    ):
        assert shown in text, shown
    for internal in (*INTERNAL, "architecture[", '"type"'):
        assert internal not in text


def test_a_network_without_a_recipe_says_which_attacks_did_not_run(client):
    submission = factories.create_audited_submission(Status.AWAITING_REVIEW)
    _with_report(submission, network_report(recipe=False))
    page = _page(client, submission)
    assert 'id="recipe-table"' not in page
    assert "No training recipe was declared, so no shadow model of this network" in (
        _network_text(page)
    )
