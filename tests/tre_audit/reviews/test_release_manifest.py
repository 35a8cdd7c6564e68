"""The release manifest names what it releases and who let it go: the request, each
checker's decision and the admin's sign-off, and never a value of the data."""

import io
import json
import zipfile
from datetime import UTC, datetime

import pytest

from tests import factories
from tre_audit.reviews.enums import Decision, ReleaseCondition, Role
from tre_audit.reviews.models import Review
from tre_audit.reviews.services import review_sign_off, review_submit, submission_release
from tre_audit.submissions.enums import Status
from tre_audit.submissions.models import Project
from tre_audit.submissions.selectors import current_run
from tre_audit.submissions.services import file_read, release_bundle_build

pytestmark = pytest.mark.django_db

#: When the bundle is built, as the release passes it.
NOW = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=UTC)


def manifest_of(stored) -> dict:
    with zipfile.ZipFile(io.BytesIO(file_read(stored=stored))) as archive:
        return json.loads(archive.read("manifest.json"))


def approve(submission, name, *, reason, condition, justification=""):
    return review_submit(
        submission=submission,
        run_id=current_run(submission).id,
        reviewer=factories.create_user(name, Role.CHECKER),
        decision=Decision.APPROVE,
        reason=reason,
        evidence=["attack:lira"],
        condition=condition,
        justification=justification,
    )


@pytest.fixture
def high_risk_approved():
    """A high-risk request in project Readmissions approved by two checkers (one for
    endpoint use only), one approval signed off by an admin so far."""
    author = factories.create_user("ada", Role.RESEARCHER)
    project = Project.objects.create(name="Readmissions")
    project.members.add(author)
    submission = factories.create_audited_submission(risk="high", author=author, project=project)
    first = approve(
        submission,
        "cleo",
        reason="Attack AUC within policy once served.",
        condition=ReleaseCondition.AS_FILE,
        justification="Needed for the paper.",
    )
    approve(
        submission,
        "dan",
        reason="Only behind the endpoint.",
        condition=ReleaseCondition.ENDPOINT_ONLY,
        justification="Endpoint hides the weights.",
    )
    review_sign_off(
        review=first, admin=factories.create_user("root", Role.TRE_ADMIN), reason="Risk accepted."
    )
    submission.refresh_from_db()
    return submission


def test_the_manifest_names_the_request_and_its_release_date(high_risk_approved):
    submission = high_risk_approved
    run = current_run(submission)
    manifest = manifest_of(
        release_bundle_build(submission=submission, run=run, with_model=False, now=NOW)
    )
    identity = ("request", "title", "version", "researcher", "project", "released_at", "audit_run")
    assert {k: manifest[k] for k in identity} == {
        "request": submission.pk,
        "title": "Readmission forest",
        "version": 1,
        "researcher": "ada",
        "project": "Readmissions",
        "released_at": "2026-03-02T09:30:15+00:00",
        "audit_run": run.id,
    }
    assert manifest["risk"] == "high" and manifest["model_withheld"] is True


def test_the_manifest_lists_each_approver_with_decision_reason_condition_date_and_sign_off(
    high_risk_approved,
):
    submission = high_risk_approved
    second = Review.objects.get(reviewer__username="dan")
    review_sign_off(
        review=second, admin=factories.create_user("eve", Role.TRE_ADMIN), reason="Endpoint only."
    )
    submission_release(submission=submission, by=submission.author)
    submission.refresh_from_db()
    manifest = manifest_of(submission.release_bundle)
    reviews = {r.reviewer.username: r for r in Review.objects.filter(submission=submission)}
    assert manifest["approvals"] == [
        {
            "checker": "cleo",
            "decision": "approve",
            "decision_label": "Approve",
            "reason": "Attack AUC within policy once served.",
            "condition": "as_file",
            "condition_label": "As a file",
            "decided_at": _iso(reviews["cleo"].created_at),
            "sign_off": {
                "by": "root",
                "at": _iso(reviews["cleo"].signed_off_at),
                "reason": "Risk accepted.",
            },
        },
        {
            "checker": "dan",
            "decision": "approve",
            "decision_label": "Approve",
            "reason": "Only behind the endpoint.",
            "condition": "endpoint_only",
            "condition_label": "Only behind a secure endpoint (never as weights)",
            "decided_at": _iso(reviews["dan"].created_at),
            "sign_off": {
                "by": "eve",
                "at": _iso(reviews["dan"].signed_off_at),
                "reason": "Endpoint only.",
            },
        },
    ]
    assert datetime.fromisoformat(manifest["released_at"]).utcoffset().total_seconds() == 0


def test_an_approval_needing_no_sign_off_says_so():
    submission = factories.create_audited_submission(Status.RELEASED, risk="low")
    approvals = manifest_of(submission.release_bundle)["approvals"]
    assert len(approvals) == 2 and [a["sign_off"] for a in approvals] == [None, None]
    assert {a["decision"] for a in approvals} == {"approve"}


def test_no_value_of_the_data_goes_into_the_manifest():
    submission = factories.create_audited_submission(Status.RELEASED, risk="low")
    with zipfile.ZipFile(io.BytesIO(file_read(stored=submission.release_bundle))) as archive:
        text = archive.read("manifest.json")
    for role in ("train", "test"):
        assert file_read(stored=submission.files.get(role=role).stored) not in text


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")
