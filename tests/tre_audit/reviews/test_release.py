"""Releasing an approved request, admin sign-off, comments on findings and the evidence
a review cites: the services behind the checkers' pages."""

import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Group

from tests import factories
from tre_audit.reviews.enums import Decision, ReleaseCondition, Role
from tre_audit.reviews.exceptions import ReviewInvalid, ReviewNotAllowed
from tre_audit.reviews.models import Comment, Review
from tre_audit.reviews.selectors import comment_list_visible_to
from tre_audit.reviews.services import (
    comment_add,
    finding_sources,
    pending_sign_offs,
    review_sign_off,
    review_submit,
    submission_release,
    user_can_comment,
)
from tre_audit.submissions.enums import Status
from tre_audit.submissions.models import AuditEntry
from tre_audit.submissions.selectors import current_run
from tre_audit.submissions.services import (
    audit_chain_verify,
    file_read,
    release_bundle_build,
    submission_new_version,
    submission_withdraw,
)

pytestmark = pytest.mark.django_db


def checker():
    return factories.create_user(role=Role.CHECKER)


def admin():
    return factories.create_user(role=Role.TRE_ADMIN)


def approve(submission, reviewer=None, **extra):
    return review_submit(
        submission=submission,
        run_id=current_run(submission).id,
        reviewer=reviewer or checker(),
        decision=Decision.APPROVE,
        reason="Within the policy once served behind the endpoint.",
        evidence=["attack:lira"],
        **({"justification": "Served only behind the endpoint."} | extra),
    )


def approved(risk="medium", conditions=(ReleaseCondition.AS_FILE, ReleaseCondition.AS_FILE)):
    submission = factories.create_audited_submission(risk=risk)
    for condition in conditions:
        approve(submission, condition=condition)
    submission.refresh_from_db()
    assert submission.status == Status.APPROVED
    return submission


def bundle_of(submission) -> tuple[dict, dict[str, bytes]]:
    """The manifest and the other members of the request's release bundle."""
    submission.refresh_from_db()
    data = file_read(stored=submission.release_bundle)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    return json.loads(members.pop("manifest.json")), members


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# The release bundle --------------------------------------------------------------------


def test_a_release_holds_the_model_and_report_with_a_manifest_of_their_hashes():
    submission = approved()
    submission_release(submission=submission, by=submission.author)
    manifest, members = bundle_of(submission)
    run, model = current_run(submission), submission.files.get(role="model")
    assert set(members) == {"model/forest.skops", "report.json", "report.pdf"}
    assert manifest["files"] == {name: sha256(data) for name, data in members.items()}
    assert members["model/forest.skops"] == file_read(stored=model.stored)
    assert json.loads(members["report.json"]) == run.report
    assert members["report.pdf"] == factories.REPORT_PDF
    assert {k: manifest[k] for k in ("request", "version", "audit_run", "risk")} == {
        "request": submission.pk,
        "version": 1,
        "audit_run": run.id,
        "risk": "medium",
    }
    assert manifest["model_sha256"] == model.stored_id and manifest["model_withheld"] is False
    assert manifest["declaration_sha256"] is None  # a scikit-learn model declares no network
    assert submission.status == Status.RELEASED
    assert AuditEntry.objects.last().reason == "released as a file"
    assert audit_chain_verify().ok


def test_a_networks_declaration_is_released_even_when_its_model_is_withheld():
    declared = b'{"input_shape": [30], "output": "logits", "architecture": []}'
    submission = factories.create_audited_submission(declaration_bytes=declared)
    for condition in (ReleaseCondition.ENDPOINT_ONLY, ReleaseCondition.AS_FILE):
        approve(submission, condition=condition)
    submission_release(submission=submission, by=submission.author)
    manifest, members = bundle_of(submission)
    assert set(members) == {"declaration/declaration.json", "report.json", "report.pdf"}
    assert members["declaration/declaration.json"] == declared
    assert manifest["declaration_sha256"] == sha256(declared) and manifest["model_withheld"]
    assert manifest["files"] == {name: sha256(data) for name, data in members.items()}


def test_the_bundle_is_the_same_bytes_each_time_it_is_built():
    submission = approved()
    run, now = current_run(submission), datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    first = release_bundle_build(submission=submission, run=run, with_model=True, now=now)
    again = release_bundle_build(submission=submission, run=run, with_model=True, now=now)
    withheld = release_bundle_build(submission=submission, run=run, with_model=False, now=now)
    assert first.sha256 == again.sha256 != withheld.sha256


@pytest.mark.parametrize(
    "conditions",
    [
        (ReleaseCondition.ENDPOINT_ONLY, ReleaseCondition.ENDPOINT_ONLY),
        (ReleaseCondition.AS_FILE, ReleaseCondition.ENDPOINT_ONLY),
        (ReleaseCondition.ENDPOINT_ONLY, ReleaseCondition.AS_FILE),
    ],
)
def test_any_endpoint_only_approval_withholds_the_model(conditions):
    submission = approved(conditions=conditions)
    submission_release(submission=submission, by=submission.author)
    manifest, members = bundle_of(submission)
    assert set(members) == {"report.json", "report.pdf"}
    assert manifest["model_withheld"] is True
    assert manifest["files"] == {name: sha256(data) for name, data in members.items()}
    assert AuditEntry.objects.last().reason == "released behind a secure endpoint only"


def test_an_admin_may_release_for_the_author():
    submission = approved()
    submission_release(submission=submission, by=admin())
    assert bundle_of(submission)[0]["model_withheld"] is False


@pytest.mark.parametrize("who", ["checker", "researcher"])
def test_nobody_else_releases(who):
    submission = approved()
    user = checker() if who == "checker" else factories.create_user(role=Role.RESEARCHER)
    with pytest.raises(ReviewNotAllowed, match="author or a TRE admin"):
        submission_release(submission=submission, by=user)
    submission.refresh_from_db()
    assert (submission.status, submission.release_bundle) == (Status.APPROVED, None)


@pytest.mark.parametrize(
    "status", [s for s in Status if s not in (Status.APPROVED, Status.RELEASED)]
)
def test_only_an_approved_request_is_released(status):
    submission = factories.create_audited_submission(status)
    with pytest.raises(ReviewNotAllowed, match="Only an approved request"):
        submission_release(submission=submission, by=submission.author)
    submission.refresh_from_db()
    assert submission.release_bundle is None


def test_a_request_is_released_once():
    submission = factories.create_audited_submission(Status.RELEASED)
    bundle = submission.release_bundle
    with pytest.raises(ReviewNotAllowed):
        submission_release(submission=submission, by=submission.author)
    submission.refresh_from_db()
    assert submission.release_bundle == bundle


# Admin sign-off of a high-risk approval --------------------------------------------------


def test_a_high_risk_approval_blocks_the_release_until_every_one_is_signed_off():
    submission = approved(risk="high")
    first, second = Review.objects.filter(submission=submission)
    assert first.needs_admin_signoff and second.needs_admin_signoff
    signer = admin()
    for review in (first, second):
        with pytest.raises(ReviewNotAllowed, match="sign-off"):
            submission_release(submission=submission, by=submission.author)
        review_sign_off(review=review, admin=signer, reason="Endpoint reviewed.")
    assert pending_sign_offs(submission) == []
    submission_release(submission=submission, by=submission.author)
    submission.refresh_from_db()
    assert submission.status == Status.RELEASED
    entries = AuditEntry.objects.filter(action="sign-off")
    assert [(e.actor, e.reason) for e in entries] == [(signer, "Endpoint reviewed.")] * 2


def test_an_approval_against_a_lower_risk_needs_no_sign_off():
    submission = approved(risk="medium")
    assert pending_sign_offs(submission) == []
    review = Review.objects.filter(submission=submission).first()
    with pytest.raises(ReviewNotAllowed, match="does not await"):
        review_sign_off(review=review, admin=admin(), reason="Fine.")


def test_sign_off_comes_from_an_admin_other_than_the_checker_or_author():
    author = factories.create_user(role=Role.TRE_ADMIN)
    submission = factories.create_audited_submission(risk="high", author=author)
    both = factories.create_user(role=Role.CHECKER)
    both.groups.add(Group.objects.get(name=Role.TRE_ADMIN))
    review = approve(submission, reviewer=both)
    for user, message in [
        (checker(), "Only TRE admins"),
        (both, "other than the checker or author"),
        (author, "other than the checker or author"),
    ]:
        with pytest.raises(ReviewNotAllowed, match=message):
            review_sign_off(review=review, admin=user, reason="Fine.")
    with pytest.raises(ReviewInvalid, match="Say why"):
        review_sign_off(review=review, admin=admin(), reason=" ")
    review.refresh_from_db()
    assert review.signed_off_by is None


def test_an_approval_is_signed_off_once():
    submission = factories.create_audited_submission(risk="high")
    review = approve(submission)
    review_sign_off(review=review, admin=admin(), reason="Fine.")
    with pytest.raises(ReviewNotAllowed, match="does not await"):
        review_sign_off(review=review, admin=admin(), reason="Again.")


# Comments and who sees them --------------------------------------------------------------


def test_checkers_and_the_author_comment_on_findings_of_the_current_audit():
    submission = factories.create_audited_submission()
    remark = comment_add(
        submission=submission, author=checker(), text=" Which shadows? ", finding="attack:lira"
    )
    answer = comment_add(submission=submission, author=submission.author, text="Sixteen.")
    assert (remark.text, remark.finding, remark.run) == (
        "Which shadows?",
        "attack:lira",
        current_run(submission),
    )
    assert answer.finding == ""
    entries = AuditEntry.objects.filter(action="comment").order_by("id")
    assert [e.reason for e in entries] == ["attack:lira", ""]


@pytest.mark.parametrize(
    "text, finding, message",
    [
        ("  ", "", "Write the comment first"),
        ("Why?", "attack:nope", "finding of this audit"),
        ("Why?", "sweep", "finding of this audit"),  # this report has no sweep
    ],
)
def test_a_comment_is_refused_when_empty_or_about_no_finding(text, finding, message):
    submission = factories.create_audited_submission()
    with pytest.raises(ReviewInvalid, match=message):
        comment_add(submission=submission, author=checker(), text=text, finding=finding)
    assert not Comment.objects.exists()


@pytest.mark.parametrize("case", ["other researcher", "not audited", "withdrawn"])
def test_a_comment_is_refused_where_nobody_should_comment(case):
    status = {"not audited": Status.SUBMITTED}.get(case, Status.AWAITING_REVIEW)
    submission = factories.create_audited_submission(status)
    author = (
        factories.create_user(role=Role.RESEARCHER) if case == "other researcher" else checker()
    )
    if case == "withdrawn":
        submission_withdraw(submission=submission, by=submission.author, reason="Wrong data")
    assert not user_can_comment(author, submission)
    with pytest.raises(ReviewNotAllowed):
        comment_add(submission=submission, author=author, text="Hello")
    assert not Comment.objects.exists()


def test_a_checker_sees_other_checkers_comments_only_after_reviewing():
    submission = factories.create_audited_submission()
    first, second, signer = checker(), checker(), admin()
    theirs = comment_add(submission=submission, author=first, text="Leaves too small?")
    answer = comment_add(submission=submission, author=submission.author, text="No: 20.")
    mine = comment_add(submission=submission, author=second, text="Record row 402?")
    by_admin = comment_add(submission=submission, author=signer, text="Note the endpoint.")
    everything = [theirs, answer, mine, by_admin]

    assert comment_list_visible_to(user=second, submission=submission) == [answer, mine]
    assert comment_list_visible_to(user=first, submission=submission) == [theirs, answer]
    assert comment_list_visible_to(user=submission.author, submission=submission) == everything
    assert comment_list_visible_to(user=signer, submission=submission) == everything
    approve(submission, reviewer=second)
    assert comment_list_visible_to(user=second, submission=submission) == everything
    assert comment_list_visible_to(user=first, submission=submission) == [theirs, answer]


def test_comments_on_an_earlier_audit_are_not_shown_with_the_new_one(example_files):
    submission = factories.create_audited_submission()
    comment_add(submission=submission, author=checker(), text="About version 1.")
    new = submission_new_version(submission=submission, by=submission.author, **example_files)
    factories.complete_audit(new)
    new.refresh_from_db()
    assert comment_list_visible_to(user=new.author, submission=new) == []
    assert Comment.objects.count() == 1


# The evidence a review cites ----------------------------------------------------------------


def test_the_findings_a_review_may_cite_are_those_of_the_report():
    run = current_run(factories.create_audited_submission())
    assert finding_sources(run) == factories.FINDINGS
    assert finding_sources(None) == []


@pytest.mark.parametrize("evidence", [["record"], ["attack:shadow", "rule:min_leaf_records"]])
def test_any_finding_of_the_report_may_be_cited(evidence):
    """Even one named only by the verdict, or an attack that could not run."""
    submission = factories.create_audited_submission()
    review = review_submit(
        submission=submission,
        run_id=current_run(submission).id,
        reviewer=checker(),
        decision=Decision.REJECT,
        reason="Too exposed.",
        evidence=evidence,
    )
    assert review.evidence == evidence


@pytest.mark.parametrize(
    "evidence, message",
    [
        ([], "Cite the findings"),
        (["attack:lira", "attack:nope"], "attack:nope is not a finding"),
        (["sweep"], "sweep is not a finding"),
    ],
)
def test_a_review_citing_nothing_or_something_else_is_refused(evidence, message):
    submission = factories.create_audited_submission()
    with pytest.raises(ReviewInvalid, match=message):
        review_submit(
            submission=submission,
            run_id=current_run(submission).id,
            reviewer=checker(),
            decision=Decision.REJECT,
            reason="Too exposed.",
            evidence=evidence,
        )
    assert not Review.objects.exists()
    submission.refresh_from_db()
    assert submission.status == Status.AWAITING_REVIEW


def test_a_report_with_a_sweep_may_be_cited_for_it():
    submission = factories.create_audited_submission()
    run = current_run(submission)
    run.report = run.report | {"sweep": {"attack": "lira", "points": []}}
    run.save(update_fields=["report"])
    assert "sweep" in finding_sources(run)
    review = review_submit(
        submission=submission,
        run_id=current_run(submission).id,
        reviewer=checker(),
        decision=Decision.REJECT,
        reason="The sweep shows a safer setting.",
        evidence=["sweep"],
    )
    assert review.evidence == ["sweep"]
