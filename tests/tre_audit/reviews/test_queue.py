"""The review queue: claims ("I'm on it"), and filters, sorts and pages at TRE scale.

The scale tests' 500 requests are made with ``bulk_create`` (tests/tre_audit/scale.py):
the queue reads only their columns, their runs and the checker's reviews. The claim
tests build their requests through the factories (services).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from django.urls import reverse

from tests import factories
from tests.tre_audit.scale import bulk_requests
from tre_audit.reviews.enums import Decision, Role
from tre_audit.reviews.exceptions import ReviewInvalid, ReviewNotAllowed
from tre_audit.reviews.models import Review
from tre_audit.reviews.selectors import review_queue_rows
from tre_audit.reviews.services import review_submit, submission_claim, submission_unclaim
from tre_audit.submissions.enums import Status
from tre_audit.submissions.models import AuditEntry, AuditRun, Project
from tre_audit.submissions.selectors import current_run

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 3, 4, 10, 30, tzinfo=UTC)
LINK = re.compile(r'<td class="num">(\d+)</td><td><a href=')
#: The most queries one page of the queue may take, whatever its length.
MAX_QUERIES = 9


@pytest.fixture
def desk():
    people = factories.create_people()
    submission = factories.create_audited_submission(author=people["author"])
    return SimpleNamespace(
        submission=submission,
        author=people["author"],
        me=people["checker"],
        other=factories.create_user("bea", Role.CHECKER),
        admin=people["admin"],
    )


def _claims(submission):
    return list(AuditEntry.objects.filter(submission=submission, action__in=["claim", "unclaim"]))


# The claim services ---------------------------------------------------------------------


def test_a_checker_claims_a_request_and_it_is_logged(desk):
    waiting_since = desk.submission.updated_at
    submission_claim(submission=desk.submission, by=desk.me, now=NOW)

    desk.submission.refresh_from_db()
    assert desk.submission.claimed_by == desk.me and desk.submission.claimed_at == NOW
    assert desk.submission.updated_at == waiting_since  # the queue's order is unchanged
    (entry,) = _claims(desk.submission)
    assert entry.action == "claim" and entry.actor == desk.me


def test_claiming_again_is_a_no_op(desk):
    submission_claim(submission=desk.submission, by=desk.me, now=NOW)
    submission_claim(submission=desk.submission, by=desk.me)
    desk.submission.refresh_from_db()
    assert desk.submission.claimed_at == NOW and len(_claims(desk.submission)) == 1


def test_a_second_checker_is_told_who_is_on_it_and_may_still_review(desk):
    submission_claim(submission=desk.submission, by=desk.me, now=NOW)
    with pytest.raises(ReviewInvalid, match="checker has been on request .* since 04 Mar 2025"):
        submission_claim(submission=desk.submission, by=desk.other)

    review = review_submit(
        submission=desk.submission,
        reviewer=desk.other,
        run_id=current_run(desk.submission).id,
        decision=Decision.APPROVE,  # one approval: the request stays in the queue, claimed
        reason="Members are exposed.",
        evidence=["attack:lira"],
    )
    assert review.reviewer == desk.other
    desk.submission.refresh_from_db()
    assert desk.submission.claimed_by == desk.me and len(_claims(desk.submission)) == 1


def test_a_claim_ends_when_the_request_leaves_the_queue(desk):
    """Sent back and resubmitted, the request comes back to the queue claimed by nobody."""
    submission_claim(submission=desk.submission, by=desk.me, now=NOW)
    review_submit(
        submission=desk.submission,
        run_id=current_run(desk.submission).id,
        reviewer=desk.other,
        decision=Decision.REQUEST_CHANGES,
        reason="small leaves",
        evidence=["rule:min_leaf_records"],
        comment="min_samples_leaf=20",
    )
    desk.submission.refresh_from_db()
    assert desk.submission.status == Status.CHANGES_REQUESTED
    assert (desk.submission.claimed_by, desk.submission.claimed_at) == (None, None)


@pytest.mark.parametrize("who", ["author", "admin"])
def test_only_a_checker_who_may_review_claims(desk, who):
    with pytest.raises(ReviewNotAllowed):
        submission_claim(submission=desk.submission, by=getattr(desk, who))
    assert _claims(desk.submission) == []


def test_the_holder_releases_the_claim_and_it_is_logged(desk):
    submission_claim(submission=desk.submission, by=desk.me, now=NOW)
    submission_unclaim(submission=desk.submission, by=desk.me)
    desk.submission.refresh_from_db()
    assert desk.submission.claimed_by is None and desk.submission.claimed_at is None
    assert [e.action for e in _claims(desk.submission)] == ["claim", "unclaim"]
    submission_claim(submission=desk.submission, by=desk.other)  # free again
    desk.submission.refresh_from_db()
    assert desk.submission.claimed_by == desk.other


def test_another_checker_cannot_release_a_claim_but_an_admin_can(desk):
    submission_claim(submission=desk.submission, by=desk.me, now=NOW)
    with pytest.raises(ReviewNotAllowed):
        submission_unclaim(submission=desk.submission, by=desk.other)
    submission_unclaim(submission=desk.submission, by=desk.admin)
    desk.submission.refresh_from_db()
    assert desk.submission.claimed_by is None
    assert _claims(desk.submission)[-1].reason == "claimed by checker"


# The claim on the queue page --------------------------------------------------------------


def _queue(client, user, **params) -> str:
    client.force_login(user)
    response = client.get(reverse("reviews:queue"), params)
    assert response.status_code == 200
    return response.content.decode()


def _claim(client, user, submission, follow=False, **data):
    client.force_login(user)
    return client.post(reverse("reviews:claim", args=[submission.pk]), data, follow=follow)


def test_the_queue_shows_who_is_on_it_to_the_other_checkers(client, desk):
    response = _claim(client, desk.me, desk.submission, next="/review/queue/?risk=medium")
    assert response.status_code == 302 and response.url == "/review/queue/?risk=medium"

    assert "You, since" in _queue(client, desk.me)
    theirs = _queue(client, desk.other)
    assert "checker, since" in theirs and "I&#x27;m on it" not in theirs

    refused = _claim(client, desk.other, desk.submission, follow=True)
    assert "has been on request" in refused.content.decode()


def test_the_claim_filter_shows_the_unclaimed_or_mine(client, desk):
    free = factories.create_audited_submission(author=desk.author)
    submission_claim(submission=desk.submission, by=desk.me)
    mine = [int(pk) for pk in LINK.findall(_queue(client, desk.me, claim="mine"))]
    unclaimed = [int(pk) for pk in LINK.findall(_queue(client, desk.me, claim="unclaimed"))]
    assert mine == [desk.submission.pk] and unclaimed == [free.pk]
    assert LINK.findall(_queue(client, desk.other, claim="mine")) == []


def test_releasing_from_the_queue(client, desk):
    submission_claim(submission=desk.submission, by=desk.me)
    _claim(client, desk.me, desk.submission, action="release")
    desk.submission.refresh_from_db()
    assert desk.submission.claimed_by is None


@pytest.mark.parametrize("who, expected", [("author", 403), ("admin", 403), (None, 302)])
def test_who_may_not_claim_from_the_web(client, desk, who, expected):
    if who is None:
        client.logout()
        response = client.post(reverse("reviews:claim", args=[desk.submission.pk]))
    else:
        response = _claim(client, getattr(desk, who), desk.submission)
    assert response.status_code == expected
    assert _claims(desk.submission) == []


def test_a_claim_never_redirects_off_the_queue(client, desk):
    response = _claim(client, desk.me, desk.submission, next="https://evil.example/review/queue/")
    assert response.url == reverse("reviews:queue")


# At TRE scale ---------------------------------------------------------------------------


@pytest.fixture
def crowd():
    """500 requests, 125 awaiting review; the checker reviewed every 10th of those."""
    me = factories.create_user("cy", Role.CHECKER)
    authors = [factories.create_user(f"res{i}", Role.RESEARCHER) for i in range(3)]
    projects = [Project.objects.create(name=f"Project {p}") for p in "ABC"]
    requests = bulk_requests(500, authors=authors, projects=projects)
    waiting = [s for s in requests if s.status == Status.AWAITING_REVIEW]
    runs = {run.submission_id: run for run in AuditRun.objects.all()}
    reviewed = waiting[::10]
    Review.objects.bulk_create(
        Review(submission=s, run=runs[s.pk], reviewer=me, decision="approve", reason="ok")
        for s in reviewed
    )
    queue = [s for s in waiting if s not in reviewed]
    return SimpleNamespace(
        me=me, authors=authors, queue=queue, risk={s.pk: runs[s.pk].risk for s in queue}
    )


def test_each_queue_page_takes_a_few_queries(client, crowd, django_assert_max_num_queries):
    client.force_login(crowd.me)
    pages = [{}, {"page": "2"}, {"page": "3"}, {"risk": "high", "sort": "-title"}]
    for params in pages:
        with django_assert_max_num_queries(MAX_QUERIES):
            response = client.get(reverse("reviews:queue"), params)
        assert response.status_code == 200
        assert 0 < len(LINK.findall(response.content.decode())) <= 50, params
    shown = []
    for page in (1, 2, 3):
        shown += [int(pk) for pk in LINK.findall(_queue(client, crowd.me, page=page))]
    oldest_first = sorted(crowd.queue, key=lambda s: (s.updated_at, s.pk))
    assert shown == [s.pk for s in oldest_first]  # none reviewed by me, none twice


def test_the_queue_filters_and_sorts_in_the_database(crowd):
    cases = {
        "risk": ({"risk": "low"}, lambda s: crowd.risk[s.pk] == "low"),
        "author": ({"author": "res2"}, lambda s: s.author == crowd.authors[2]),
        "project": ({"project": "Project B"}, lambda s: s.project.name == "Project B"),
        "search": ({"q": "readmission"}, lambda s: s.title.startswith("Readmission")),
        "dates": ({"since": "2025-03-08"}, lambda s: s.updated_at.day >= 8),
    }
    for name, (filters, wanted) in cases.items():
        rows = review_queue_rows(user=crowd.me, filters=filters)
        expected = {s.pk for s in crowd.queue if wanted(s)}
        assert expected and {row["submission"].pk for row in rows} == expected, name
    high_first = [row["risk"] for row in review_queue_rows(user=crowd.me, sort="-risk")]
    assert high_first == sorted(high_first, key=["low", "medium", "high"].index, reverse=True)
    titles = [row["submission"].title for row in review_queue_rows(user=crowd.me, sort="title")]
    assert titles == sorted(titles)


def test_bad_queue_parameters_are_ignored(client, crowd):
    for params in ({"risk": "x"}, {"claim": "everyone"}, {"sort": "status"}, {"page": "0"}):
        html = _queue(client, crowd.me, **params)
        assert f"of {len(crowd.queue)} requests waiting" in html, params
