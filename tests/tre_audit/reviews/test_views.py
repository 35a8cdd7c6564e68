"""Checkers' pages: the queue, reviewing and commenting through the web, and the release."""

import hashlib
import html
import io
import json
import zipfile

import pytest
from django.urls import reverse

from tests import factories
from tests.factories import LOGIN, ROLES, assert_response, codes
from tre_audit.reviews.enums import Decision, ReleaseCondition, Role
from tre_audit.reviews.exceptions import ReviewInvalid, ReviewNotAllowed
from tre_audit.reviews.models import Comment, Review
from tre_audit.reviews.selectors import review_queue_for
from tre_audit.reviews.services import pending_sign_offs, review_sign_off, user_roles_set
from tre_audit.submissions.enums import Status
from tre_audit.submissions.models import AuditEntry, Project
from tre_audit.submissions.selectors import current_run, user_roles
from tre_audit.submissions.services import (
    AUDIT_LOG_BROKEN,
    audit_chain_verify,
    file_read,
    submission_new_version,
)

pytestmark = pytest.mark.django_db

APPROVAL = {
    "decision": Decision.APPROVE,
    "reason": "AUCs near 0.5; the leaf rule is met by the endpoint.",
    "evidence": ["attack:lira", "rule:min_leaf_records"],
    "condition": ReleaseCondition.AS_FILE,
}


@pytest.fixture
def people():
    return factories.create_people()


def request_of(people, status=Status.AWAITING_REVIEW, risk="medium"):
    return factories.create_audited_submission(
        status, author=people["author"], project=Project.objects.get(), risk=risk
    )


def checker():
    return factories.create_user(role=Role.CHECKER)


def post(client, user, name, submission, data=None):
    """POST as ``user``; a review carries the current run and a release is confirmed, as the
    page's forms do."""
    if user is not None:
        client.force_login(user)
    if name == "submit" and data is not None and current_run(submission) is not None:
        data = {"run_id": current_run(submission).id, **data}
    if name == "release":
        data = {"confirm": "on", **(data or {})}
    return client.post(reverse(f"reviews:{name}", args=[submission.pk]), data or {})


def page(client, user, submission) -> str:
    client.force_login(user)
    response = client.get(submission.get_absolute_url())
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def status_of(submission):
    submission.refresh_from_db()
    return submission.status


# Who may do what -------------------------------------------------------------------


@pytest.mark.parametrize("role, expected", codes(LOGIN, 403, 403, 403, 200, 403).items())
def test_only_checkers_have_a_queue(client, people, role, expected):
    if people[role] is not None:
        client.force_login(people[role])
    assert_response(client.get(reverse("reviews:queue")), expected)


#: name: (status of the request, form data, expected code per person)
ACTIONS = {
    "submit": (Status.AWAITING_REVIEW, APPROVAL, codes(LOGIN, 403, 404, 403, 302, 403)),
    "comment": (
        Status.AWAITING_REVIEW,
        {"finding": "attack:lira", "text": "Which shadow models?"},
        codes(LOGIN, 302, 404, 403, 302, 302),
    ),
    "release": (Status.APPROVED, {}, codes(LOGIN, 302, 404, 403, 403, 302)),
}


def _effect(name, submission):
    """Whether the action left its mark."""
    if name == "submit":
        return Review.objects.filter(submission=submission).exists()
    if name == "comment":
        return Comment.objects.filter(submission=submission).exists()
    return status_of(submission) == Status.RELEASED


@pytest.mark.parametrize(
    "name, role, expected",
    [(name, role, by_role[role]) for name, (_, _, by_role) in ACTIONS.items() for role in ROLES],
)
def test_actions_on_a_request(client, people, name, role, expected):
    status, data, _ = ACTIONS[name]
    submission = request_of(people, status)
    response = post(client, people[role], name, submission, data)
    assert_response(response, expected)
    assert _effect(name, submission) == (expected == 302)
    if expected == 302:
        assert response.url.startswith(submission.get_absolute_url())


@pytest.mark.parametrize("name", ["submit", "comment", "release"])
def test_actions_are_post_only(client, people, name):
    submission = request_of(people)
    client.force_login(people["checker"])
    assert client.get(reverse(f"reviews:{name}", args=[submission.pk])).status_code == 405


def test_a_checker_cannot_review_their_own_request(client):
    author = checker()
    submission = factories.create_audited_submission(author=author)
    response = post(client, author, "submit", submission, APPROVAL)
    assert response.status_code == 403
    assert not Review.objects.filter(reviewer=author).exists()
    assert 'id="review-h"' not in page(client, author, submission)


def test_a_checker_reviews_an_audit_once(client, people):
    submission = request_of(people)
    assert post(client, people["checker"], "submit", submission, APPROVAL).status_code == 302
    assert post(client, people["checker"], "submit", submission, APPROVAL).status_code == 403
    assert 'id="review-h"' not in page(client, people["checker"], submission)


def test_reviews_stay_independent_on_the_detail_page(client, people):
    submission, first, second = request_of(people), checker(), checker()
    post(client, first, "submit", submission, APPROVAL | {"reason": "First opinion: fine."})
    post(client, first, "comment", submission, {"finding": "", "text": "First's remark."})
    before = page(client, second, submission)
    assert "First opinion: fine." not in before and "First's remark." not in before
    assert 'id="review-h"' in before
    post(client, second, "submit", submission, APPROVAL | {"reason": "Second opinion."})
    after = page(client, second, submission)
    assert "First opinion: fine." in after and "First's remark." in after
    for user in (people["author"], people["admin"]):
        assert "First opinion: fine." in page(client, user, submission)


# Reviewing through the form ----------------------------------------------------------


@pytest.mark.parametrize(
    "risk, change, message",
    [
        ("medium", {"evidence": []}, "Cite the findings of the report"),
        ("medium", {"evidence": ["attack:nope"]}, "Select a valid choice"),
        ("medium", {"reason": ""}, "This field is required."),
        ("medium", {"decision": Decision.REQUEST_CHANGES}, "a comment is required"),
        ("high", {}, "needs a written justification"),
    ],
)
def test_an_incomplete_review_is_shown_again_and_not_recorded(
    client, people, risk, change, message
):
    submission = request_of(people, risk=risk)
    response = post(client, people["checker"], "submit", submission, APPROVAL | change)
    assert response.status_code == 400
    assert message in html.unescape(response.content.decode())
    assert not Review.objects.exists() and status_of(submission) == Status.AWAITING_REVIEW


def test_a_report_without_findings_needs_no_evidence(client, people):
    submission = factories.create_submission_at_status(Status.AWAITING_REVIEW)
    response = post(client, people["checker"], "submit", submission, APPROVAL | {"evidence": []})
    assert response.status_code == 302 and Review.objects.get().evidence == []


def test_the_justification_field_is_offered_only_against_a_high_risk(client, people):
    assert 'name="justification"' not in page(client, people["checker"], request_of(people))
    high = request_of(people, risk="high")
    assert 'name="justification"' in page(client, people["checker"], high)


def test_requesting_changes_sends_the_request_back_with_the_comment(client, people):
    submission = request_of(people)
    data = APPROVAL | {"decision": Decision.REQUEST_CHANGES, "comment": "Use min_samples_leaf=20."}
    assert post(client, people["checker"], "submit", submission, data).status_code == 302
    assert status_of(submission) == Status.CHANGES_REQUESTED
    assert "Use min_samples_leaf=20." in page(client, people["author"], submission)


def test_two_approvals_then_the_author_releases_a_verifiable_bundle(client, people):
    submission = request_of(people)
    post(client, checker(), "submit", submission, APPROVAL)
    assert status_of(submission) == Status.AWAITING_REVIEW
    post(client, checker(), "submit", submission, APPROVAL)
    assert status_of(submission) == Status.APPROVED
    release = reverse("reviews:release", args=[submission.pk])
    assert f'action="{release}#release-form"' in page(client, people["author"], submission)
    response = post(client, people["author"], "release", submission)
    assert response.status_code == 302 and status_of(submission) == Status.RELEASED
    members = _bundle(client, submission)
    manifest = json.loads(members.pop("manifest.json"))
    model = submission.files.get(role="model")
    assert set(members) == {"model/forest.skops", "report.json", "report.pdf"}
    assert manifest["files"] == {name: _sha256(data) for name, data in members.items()}
    assert members["model/forest.skops"] == file_read(stored=model.stored)
    assert manifest["model_sha256"] == model.stored_id and not manifest["model_withheld"]
    assert json.loads(members["report.json"]) == current_run(submission).report
    assert members["report.pdf"] == factories.REPORT_PDF


def test_an_endpoint_only_approval_withholds_the_model(client, people):
    submission = request_of(people)
    post(client, checker(), "submit", submission, APPROVAL)
    endpoint_only = APPROVAL | {"condition": ReleaseCondition.ENDPOINT_ONLY}
    post(client, checker(), "submit", submission, endpoint_only)
    post(client, people["author"], "release", submission)
    members = _bundle(client, submission)
    manifest = json.loads(members.pop("manifest.json"))
    assert set(members) == {"report.json", "report.pdf"}
    assert manifest["model_withheld"] is True
    assert manifest["files"] == {name: _sha256(data) for name, data in members.items()}


def test_a_high_risk_approval_is_released_only_after_an_admin_signs_off(client, people):
    submission = request_of(people, risk="high")
    justified = APPROVAL | {"justification": "Served only behind the HE endpoint."}
    post(client, checker(), "submit", submission, justified)
    post(client, checker(), "submit", submission, justified)
    assert status_of(submission) == Status.APPROVED
    shown = page(client, people["author"], submission)
    assert "waiting for a TRE admin's sign-off" in shown and "/release/" not in shown
    first, second = pending_sign_offs(submission)
    review_sign_off(review=first, admin=people["admin"], reason="Endpoint checked.")
    assert post(client, people["author"], "release", submission).status_code == 403
    review_sign_off(review=second, admin=people["admin"], reason="Endpoint checked.")
    assert post(client, people["author"], "release", submission).status_code == 302
    assert status_of(submission) == Status.RELEASED


def test_the_page_says_which_approvals_await_a_sign_off(client, people):
    high, medium = request_of(people, risk="high"), request_of(people)
    justified = APPROVAL | {"justification": "Served only behind the HE endpoint."}
    review = Review.objects.get(pk=post_review(client, high, justified))
    post_review(client, medium, APPROVAL | {"justification": "Belt and braces."})
    assert "Awaiting a TRE admin's sign-off." in page(client, people["author"], high)
    shown = page(client, people["author"], medium)
    assert "Belt and braces." in shown and "sign-off" not in shown
    review_sign_off(review=review, admin=people["admin"], reason="Endpoint checked.")
    shown = page(client, people["author"], high)
    assert "Signed off by admin." in shown and "Awaiting a TRE admin's sign-off." not in shown


def post_review(client, submission, data) -> int:
    """A fresh checker's review through the form; its id."""
    reviewer = checker()
    assert post(client, reviewer, "submit", submission, data).status_code == 302
    return Review.objects.get(reviewer=reviewer).pk


def _bundle(client, submission) -> dict[str, bytes]:
    response = client.get(reverse("submissions:bundle", args=[submission.pk]))
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Comments through the form --------------------------------------------------------


def test_a_comment_on_an_unknown_finding_is_refused(client, people):
    submission = request_of(people)
    data = {"finding": "attack:nope", "text": "?"}
    assert post(client, people["checker"], "comment", submission, data).status_code == 400
    assert not Comment.objects.exists()


def test_the_author_answers_a_comment_named_by_its_finding_for_people(client, people):
    submission = request_of(people)
    rule = {"finding": "rule:min_leaf_records"}
    post(client, people["checker"], "comment", submission, {**rule, "text": "Why?"})
    post(client, people["author"], "comment", submission, {**rule, "text": "Famous."})
    shown = page(client, people["checker"], submission)
    assert "Why?" in shown and "Famous." in shown
    assert shown.count("on Leaves can hold one record") == 2 and "on rule:" not in shown


# The queue --------------------------------------------------------------------------


def test_the_queue_lists_what_a_checker_may_review_now(client, people):
    me = people["checker"]
    waiting = request_of(people)
    reviewed = request_of(people)
    post(client, me, "submit", reviewed, APPROVAL)
    own = factories.create_audited_submission(author=me)
    unaudited = request_of(people, Status.SUBMITTED)
    rows = review_queue_for(user=me)
    assert [row["submission"] for row in rows] == [waiting]
    shown = html.unescape(client.get(reverse("reviews:queue")).content.decode())
    assert f'href="{waiting.get_absolute_url()}"' in shown
    for other in (reviewed, own, unaudited):
        assert f'href="{other.get_absolute_url()}"' not in shown


def test_the_queue_does_not_tell_a_checker_the_other_decision(client, people):
    submission = request_of(people)
    post(client, checker(), "submit", submission, APPROVAL)
    (row,) = review_queue_for(user=people["checker"])
    assert row["risk"] == "medium" and "approvals" not in row
    client.force_login(people["checker"])
    queue = client.get(reverse("reviews:queue")).content.decode()
    assert str(submission.title) in queue and "of 2" not in queue


def test_a_new_version_is_back_in_the_queue_of_its_earlier_reviewer(client, people, example_files):
    submission, me = request_of(people), people["checker"]
    post(client, me, "submit", submission, APPROVAL)
    assert review_queue_for(user=me) == []
    submission = submission_new_version(submission=submission, by=people["author"], **example_files)
    assert review_queue_for(user=me) == []  # not audited yet
    factories.complete_audit(submission)
    (row,) = review_queue_for(user=me)
    assert row["submission"] == submission


@pytest.mark.parametrize("n_requests", [10, 30])
def test_the_queue_takes_a_fixed_number_of_queries(
    client, people, n_requests, django_assert_max_num_queries
):
    for _ in range(n_requests):
        submission = factories.create_submission_at_status(Status.AWAITING_REVIEW)
        Review.objects.create(
            submission=submission,
            run=current_run(submission),
            reviewer=checker(),
            decision=Decision.APPROVE,
            reason="fine",
        )
    client.force_login(people["checker"])
    with django_assert_max_num_queries(5):
        assert len(review_queue_for(user=people["checker"])) == n_requests
    with django_assert_max_num_queries(10):
        response = client.get(reverse("reviews:queue"))
    assert response.content.decode().count('<tr><td class="num">') == n_requests


# Roles -------------------------------------------------------------------------------


def test_an_admin_makes_a_researcher_a_checker_and_the_pages_follow(client, people):
    user = people["other"]
    user_roles_set(user=user, roles={Role.CHECKER}, by=people["admin"])
    assert user_roles(user) == {Role.CHECKER}
    client.force_login(user)
    assert client.get(reverse("reviews:queue")).status_code == 200
    assert client.get(reverse("submissions:create")).status_code == 403
    entry = AuditEntry.objects.get(action="roles")
    assert (entry.actor, entry.reason) == (people["admin"], "other: checker")


@pytest.mark.parametrize(
    "who, target, roles, error, message",
    [
        ("checker", "other", {Role.CHECKER}, ReviewNotAllowed, "Only TRE admins"),
        ("admin", "admin", {Role.CHECKER}, ReviewNotAllowed, "own admin role"),
        ("admin", "other", {"superuser"}, ReviewInvalid, "no role called superuser"),
    ],
)
def test_refused_role_changes_change_nothing(people, who, target, roles, error, message):
    before = user_roles(people[target])
    with pytest.raises(error, match=message):
        user_roles_set(user=people[target], roles=roles, by=people[who])
    assert user_roles(people[target]) == before
    assert not AuditEntry.objects.filter(action="roles").exists()


def test_the_review_form_carries_the_run_on_the_page(client, people):
    submission = request_of(people)
    body = page(client, people["checker"], submission)
    assert f'<input type="hidden" name="run_id" value="{current_run(submission).id}">' in body


def test_a_review_from_a_page_opened_on_version_1_is_refused_once_version_2_is_out(
    client, people, example_files, enqueued
):
    submission = request_of(people)
    opened_on = current_run(submission).id  # the checker opens the page on version 1
    submission_new_version(submission=submission, by=people["author"], **example_files)
    factories.complete_audit(submission)
    response = post(
        client, people["checker"], "submit", submission, APPROVAL | {"run_id": opened_on}
    )
    assert response.status_code == 400
    assert (
        "Version 2 has been submitted since you opened this page; read its report before deciding."
        in html.unescape(response.content.decode())
    )
    assert not Review.objects.filter(submission=submission).exists()
    assert f'value="{opened_on}"' in response.content.decode()  # until the page is reloaded


def test_a_review_without_the_run_is_refused(client, people):
    submission = request_of(people)
    client.force_login(people["checker"])
    response = client.post(reverse("reviews:submit", args=[submission.pk]), APPROVAL)
    assert response.status_code == 400
    assert "did not say which audit you read" in html.unescape(response.content.decode())
    assert not Review.objects.filter(submission=submission).exists()


def test_a_review_on_a_broken_audit_log_is_refused_in_one_sentence(client, people):
    submission = request_of(people)
    AuditEntry.objects.filter(id=AuditEntry.objects.order_by("id")[0].id).update(reason="forged")
    assert not audit_chain_verify().ok
    response = post(client, people["checker"], "submit", submission, APPROVAL)
    assert response.status_code == 400
    assert AUDIT_LOG_BROKEN in html.unescape(response.content.decode())
    assert not Review.objects.filter(submission=submission).exists()


# Errors at their field, messages where the action was ----------------------------------


def _field(page: str, name: str) -> str:
    return page.split(f'id="id_{name}_field">', 1)[1].split("\n</div>", 1)[0]


def test_a_refused_review_is_said_at_its_field_and_the_page_returns_to_the_form(client, people):
    submission = request_of(people)
    changes = APPROVAL | {"decision": Decision.REQUEST_CHANGES}
    response = post(client, checker(), "submit", submission, changes)
    page = html.unescape(response.content.decode())
    assert response.status_code == 400 and not Review.objects.exists()
    field = _field(page, "comment")
    assert "Say what should change: a comment is required to request changes." in field
    assert 'aria-invalid="true"' in field and 'id="id_comment_error" role="alert"' in field
    assert 'aria-describedby="id_comment_helptext id_comment_error"' in field
    assert f'action="{reverse("reviews:submit", args=[submission.pk])}#review-form"' in page
    assert 'id="review-form"' in page


def test_a_recorded_review_and_a_comment_are_said_in_their_sections(client, people):
    submission = request_of(people)
    reviewed = post(client, checker(), "submit", submission, APPROVAL)
    assert reviewed.url == f"{submission.get_absolute_url()}#reviews"
    page = client.get(reviewed.url).content.decode()
    before, reviews = page.split('<h2 id="reviews">', 1)
    assert "Your review was recorded." in reviews.split('<h2 id="comments">', 1)[0]
    assert "Your review was recorded." not in before and 'id="reviews-messages"' in reviews
    commented = post(client, people["checker"], "comment", submission, {"text": "Which models?"})
    assert commented.url == f"{submission.get_absolute_url()}#comments"
    comments = client.get(commented.url).content.decode().split('<h2 id="comments">', 1)[1]
    assert 'id="comments-messages"' in comments and "Your comment was added." in comments


def test_a_release_needs_its_box_ticked(client, people):
    submission = request_of(people, Status.APPROVED)
    client.force_login(people["author"])
    response = client.post(reverse("reviews:release", args=[submission.pk]), {})
    page = html.unescape(response.content.decode())
    assert response.status_code == 400 and status_of(submission) == Status.APPROVED
    assert "Tick the box to confirm the release." in _field(page, "release_confirm")
    assert 'action="' + reverse("reviews:release", args=[submission.pk]) + '#release-form"' in page
    shown = page.split('id="release-form"', 1)[1].split("</form>", 1)[0]
    assert "I understand that this releases the model from the TRE" in shown
