"""The request list at TRE scale: 500 requests, filtered, sorted and paged in the database.

The 500 requests are made with ``bulk_create`` (tests/tre_audit/scale.py): the list
reads only their own columns and their runs' risk, not state a service writes.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from django.urls import reverse

from tests import factories
from tests.tre_audit.api.support import client_for
from tests.tre_audit.scale import DAYS, T0, bulk_requests
from tre_audit.reviews.enums import Role
from tre_audit.submissions.enums import Status
from tre_audit.submissions.models import AuditRun, Project
from tre_audit.submissions.selectors import submission_rows

pytestmark = pytest.mark.django_db

N_REQUESTS = 500
#: The most queries one page of the list may take, whatever the number of requests
#: (session, user, roles, count, the page's rows, and a little room).
MAX_QUERIES = 8
LINK = re.compile(r'<td><a href="/requests/(\d+)/">')


@pytest.fixture
def world():
    authors = [factories.create_user(f"res{i}", Role.RESEARCHER) for i in range(4)]
    projects = [Project.objects.create(name=f"Project {p}") for p in "ABC"]
    submissions = bulk_requests(N_REQUESTS, authors=authors, projects=projects)
    admin = factories.create_user("ada", Role.TRE_ADMIN)
    risk = dict(AuditRun.objects.values_list("submission_id", "risk"))
    return SimpleNamespace(
        admin=admin, authors=authors, projects=projects, all=submissions, risk=risk
    )


def _get(client, user, **params):
    client.force_login(user)
    response = client.get(reverse("submissions:list"), params)
    assert response.status_code == 200
    return response.content.decode()


def _shown(html: str) -> list[int]:
    return [int(pk) for pk in LINK.findall(html)]


#: A first, a middle, the last and a filtered page.
PAGES = [{}, {"page": "5"}, {"page": "10"}, {"status": "approved", "risk": "high", "page": "2"}]


def test_each_page_takes_a_few_queries_whatever_the_size(
    client, world, django_assert_max_num_queries
):
    client.force_login(world.admin)
    for params in PAGES:
        with django_assert_max_num_queries(MAX_QUERIES):
            response = client.get(reverse("submissions:list"), params)
        assert response.status_code == 200
        assert 0 < len(_shown(response.content.decode())) <= 50, params


def test_pages_cover_every_request_once_newest_first(client, world):
    seen = []
    for page in range(1, 11):
        seen += _shown(_get(client, world.admin, page=page))
    assert sorted(seen) == sorted(s.pk for s in world.all)
    by_date = sorted(world.all, key=lambda s: (s.updated_at, s.pk), reverse=True)
    assert seen == [s.pk for s in by_date]


FILTERS = {
    "status": ({"status": "approved"}, lambda s, w: s.status == Status.APPROVED),
    "risk": ({"risk": "high"}, lambda s, w: w.risk.get(s.pk) == "high"),
    "author": ({"author": "RES1"}, lambda s, w: s.author == w.authors[1]),
    "project": ({"project": "project b"}, lambda s, w: s.project == w.projects[1]),
    "dates": (
        {"since": "2025-03-05", "until": "2025-03-06"},
        lambda s, w: s.updated_at.date().isoformat() in ("2025-03-05", "2025-03-06"),
    ),
    "search": ({"q": "readmission"}, lambda s, w: s.title.startswith("Readmission")),
    "number": ({"q": "#{pk}"}, lambda s, w: s.pk == w.all[123].pk),
    "combined": (
        {"status": "awaiting_review", "project": "Project A", "risk": "low"},
        lambda s, w: (
            s.status == Status.AWAITING_REVIEW
            and s.project == w.projects[0]
            and w.risk.get(s.pk) == "low"
        ),
    ),
}


def test_each_filter_selects_the_right_requests(world):
    for name, (params, wanted) in FILTERS.items():
        params = {k: v.format(pk=world.all[123].pk) for k, v in params.items()}
        rows = submission_rows(user=world.admin, filters=params)
        expected = {s.pk for s in world.all if wanted(s, world)}
        assert expected, name  # the filter has something to find
        assert {row["submission"].pk for row in rows} == expected, name


#: How each sortable column's values compare, as the list should order them.
SORT_KEYS = {
    "date": lambda row: row["submission"].updated_at,
    "status": lambda row: Status.values.index(row["submission"].status),
    "risk": lambda row: ("low", "medium", "high").index(row["risk"]),
    "title": lambda row: row["submission"].title,
}


def test_sorts_both_ways(world):
    for sort, key in SORT_KEYS.items():
        filters = {"q": "1"} if sort == "risk" else {"risk": "high", "q": "1"}
        ascending = list(submission_rows(user=world.admin, filters=filters, sort=sort))
        descending = list(submission_rows(user=world.admin, filters=filters, sort=f"-{sort}"))
        if sort == "risk":  # the unaudited have no risk: they come last either way
            assert ascending[-1]["risk"] is None and descending[-1]["risk"] is None
            ascending = [row for row in ascending if row["risk"]]
            descending = [row for row in descending if row["risk"]]
        assert len(ascending) > 10, sort
        assert [key(r) for r in ascending] == sorted(key(r) for r in ascending), sort
        assert [key(r) for r in descending] == sorted(map(key, descending), reverse=True), sort
        assert key(ascending[0]) != key(ascending[-1]), sort


def test_a_researcher_filters_only_their_own(client, world):
    html = _get(client, world.authors[2], project="Project A")
    mine = {
        s.pk
        for s in world.all
        if s.author == world.authors[2] and s.project_id == world.projects[0].pk
    }
    pages = _shown(html)
    assert set(pages) <= mine and len(pages) == min(50, len(mine))
    assert f"of {len(mine)} requests" in html


def test_page_links_keep_the_filters_and_the_sort(client, world):
    html = _get(client, world.admin, status="approved", sort="title")
    assert 'href="?status=approved&amp;sort=title&amp;page=2"' in html
    assert 'aria-sort="ascending"' in html
    assert 'href="?status=approved&amp;sort=-title"' in html  # the header sorts the other way


#: Parameters a user could type or a crawler send.
BAD_PARAMETERS = [
    {"risk": "purple"},
    {"status": "'; DROP TABLE"},
    {"since": "yesterday"},
    {"until": "2025-13-45"},
    {"sort": "password"},
    {"sort": "-author__password"},
    {"page": "abc"},
    {"page": "-1"},
    {"page": "999999"},
    {"q": "9" * 40},
    {"q": "x" * 5000},
    {"author": "%", "project": "_"},
]


def test_bad_parameters_are_ignored_never_a_500(client, world):
    for params in BAD_PARAMETERS:
        html = _get(client, world.admin, **params)  # 200, or it fails here
        dropped = set(params) & {"risk", "status", "since", "until", "sort"}
        if dropped or len(params.get("q", "")) > 200:
            assert f"of {N_REQUESTS} requests" in html, params  # the bad value was dropped...
            assert 'class="errorlist"' in html, params  # ...and said next to its field
    assert "No request matches these filters." in html  # no author called "%"


def test_the_dates_are_those_of_the_bulk_requests(world):
    days = {s.updated_at.date() for s in world.all}
    assert len(days) == DAYS and min(days) == T0.date()


def test_the_api_pages_and_filters_the_same_list_in_bounded_queries(
    world, django_assert_max_num_queries
):
    """The REST list is the web list's rows: 50 a page, the same filters and sort."""
    api = client_for(world.admin)
    with django_assert_max_num_queries(MAX_QUERIES):
        first = api.get("/api/v1/requests/").json()
    assert first["count"] == N_REQUESTS and len(first["results"]) == 50
    assert first["next"].endswith("?page=2") and first["previous"] is None
    last = api.get("/api/v1/requests/", {"page": 10}).json()
    seen = {r["id"] for r in first["results"]} | {r["id"] for r in last["results"]}
    assert len(seen) == 100 and last["next"] is None

    high = api.get("/api/v1/requests/", {"risk": "high", "sort": "title"}).json()
    assert high["count"] == sum(1 for r in world.risk.values() if r == "high")
    assert {r["risk"] for r in high["results"]} == {"high"}
    titles = [r["title"] for r in high["results"]]
    assert titles == sorted(titles)
    assert api.get("/api/v1/requests/", {"page": 99}).status_code == 404
