"""The shared listing helper, and the dashboard's audit-run list it pages at TRE scale.

The run list's 500 requests and their runs are made with ``bulk_create``
(tests/tre_audit/scale.py): the list reads only the runs and their requests' columns.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from django.http import QueryDict
from django.urls import reverse

from tests import factories
from tests.tre_audit.scale import bulk_requests
from tre_audit.dashboard.selectors import audit_run_rows
from tre_audit.listing import Rows, listing_order, listing_page, search_q
from tre_audit.reviews.enums import Role
from tre_audit.reviews.forms import QueueForm
from tre_audit.submissions.enums import RunStatus
from tre_audit.submissions.forms import SubmissionListForm
from tre_audit.submissions.models import AuditRun, Project, Submission

#: The most queries one page of the run list may take, whatever its length.
MAX_QUERIES = 8
ROW = re.compile(r'<tr><th scope="row">#(\d+)</th>')


# The helper -------------------------------------------------------------------------------


def test_bad_values_are_dropped_and_said_at_their_field():
    form = SubmissionListForm(QueryDict("risk=purple&status=approved&since=soon&sort=-risk"))
    assert form.filters() == {"status": "approved"}
    assert form.sort_value() == "-risk"
    assert set(form.errors) == {"risk", "since"}


def test_an_unknown_sort_falls_back_to_the_default():
    assert SubmissionListForm(QueryDict("sort=author__password")).sort_value() == "-date"
    assert SubmissionListForm().sort_value() == "-date"
    assert listing_order("password", columns={"date": "updated_at"}) == []


def test_the_sort_menu_shows_the_order_the_list_is_in():
    """Without a sort, or with a bad one, the menu shows the default: Apply keeps the order."""
    for query in ("", "status=submitted", "sort=author__password"):
        sort = SubmissionListForm(QueryDict(query))["sort"]
        assert sort.value() == "-date"
        assert '<option value="-date" selected>' in str(sort)
    assert SubmissionListForm(QueryDict("sort=title"))["sort"].value() == "title"
    assert QueueForm(QueryDict("q=x"))["sort"].value() == "date"  # the queue's default


def test_a_number_too_long_for_the_column_is_searched_as_text_only():
    assert "pk" in str(search_q("#12", title="title", number="pk"))
    assert "pk" not in str(search_q("9" * 30, title="title", number="pk"))


@pytest.mark.django_db
def test_a_page_keeps_the_query_without_its_page_number_and_reads_one_page():
    author = factories.create_user(role=Role.RESEARCHER)
    Submission.objects.bulk_create(Submission(title=f"M{i}", author=author) for i in range(7))
    form = SubmissionListForm(QueryDict("status=submitted&page=2&sort=title"))
    made = []
    rows = Rows(Submission.objects.order_by("title"), lambda s: made.append(s) or s.title)

    listing = listing_page(form=form, rows=rows, page="2", per_page=3)

    assert listing.rows == ["M3", "M4", "M5"] and len(made) == 3  # one page turned into rows
    assert listing.query == "status=submitted&sort=title"
    assert listing.sort_links["title"] == {
        "query": "status=submitted&sort=-title",
        "aria": "ascending",
    }
    assert listing.sort_links["date"]["aria"] == "none"
    assert listing_page(form=form, rows=rows, page="99", per_page=3).page.number == 3


# The dashboard's audit runs at TRE scale ----------------------------------------------------


@pytest.fixture
def runs(db):
    """500 requests; 375 finished runs, and some failed, queued, running or retried."""
    authors = [factories.create_user(f"res{i}", Role.RESEARCHER) for i in range(3)]
    projects = [Project.objects.create(name=f"Project {p}") for p in "AB"]
    requests = bulk_requests(500, authors=authors, projects=projects)
    AuditRun.objects.bulk_create(
        AuditRun(
            submission=s,
            status=status,
            attempts=1 + (i % 4 == 0),
            error="stopped" * (status == "failed"),
        )
        for i, s in enumerate(requests[:120])
        for status in [(RunStatus.FAILED, RunStatus.QUEUED, RunStatus.RUNNING)[i % 3]]
    )
    admin = factories.create_user("ada", Role.TRE_ADMIN)
    return SimpleNamespace(
        admin=admin,
        authors=authors,
        all=list(AuditRun.objects.select_related("submission__author")),
    )


def test_each_run_page_takes_a_few_queries(client, runs, django_assert_max_num_queries):
    client.force_login(runs.admin)
    pages = [{}, {"page": "5"}, {"page": "10"}, {"status": "active", "sort": "title"}]
    for params in pages:
        with django_assert_max_num_queries(MAX_QUERIES):
            response = client.get(reverse("dashboard:runs"), params)
        assert response.status_code == 200
        assert 0 < len(ROW.findall(response.content.decode())) <= 50, params


def test_the_run_list_filters_and_sorts(runs):
    cases = {
        "failed": ({"status": "failed"}, lambda r: r.status == RunStatus.FAILED),
        "active": ({"status": "active"}, lambda r: r.status in ("queued", "running")),
        "retried": ({"retried": True}, lambda r: r.attempts > 1),
        "risk": ({"risk": "medium"}, lambda r: r.risk == "medium"),
        "author": ({"author": "res1"}, lambda r: r.submission.author.username == "res1"),
        "search": ({"q": "readmission"}, lambda r: r.submission.title.startswith("Readmission")),
    }
    for name, (filters, wanted) in cases.items():
        expected = {r.id for r in runs.all if wanted(r)}
        assert expected and {row["id"] for row in audit_run_rows(filters=filters)} == expected, name
    order = ["queued", "running", "done", "failed"]
    statuses = [row["status"].lower() for row in audit_run_rows(sort="-status")]
    assert statuses == sorted(statuses, key=order.index, reverse=True)


def test_the_overview_links_each_long_list_to_the_run_list(client, runs, monkeypatch):
    from tre_audit.dashboard import selectors

    monkeypatch.setattr(
        selectors, "broker_overview", lambda **kw: selectors.BrokerOverview(False, "celery")
    )
    client.force_login(runs.admin)
    page = client.get(reverse("dashboard:index")).content.decode()
    assert 'href="/dashboard/runs/?status=failed">search, sort and page through all 40' in page
    assert 'href="/dashboard/runs/?status=active">search, sort and page through all 80' in page
    assert 'href="/dashboard/runs/?retried=on">search, sort and page through all 30' in page


def _index_queries(client, admin) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(admin)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(reverse("dashboard:index")).status_code == 200
    return len(queries)


def test_the_overview_takes_as_many_queries_for_30_or_100_pending_sign_offs(
    client, runs, monkeypatch
):
    """The approvals are bulk-made rows: the list reads only them, their runs and requests."""
    from tre_audit.dashboard import selectors
    from tre_audit.reviews.models import Review

    monkeypatch.setattr(
        selectors, "broker_overview", lambda **kw: selectors.BrokerOverview(False, "celery")
    )
    checker = factories.create_user(role=Role.CHECKER)
    waiting = [
        r for r in runs.all if r.status == "done" and r.submission.status == "awaiting_review"
    ]

    def approve(some):
        Review.objects.bulk_create(
            Review(submission=r.submission, run=r, reviewer=checker, decision="approve",
                   reason="ok", justification="endpoint", needs_admin_signoff=True)
            for r in some
        )  # fmt: skip

    approve(waiting[:30])
    few = _index_queries(client, runs.admin)
    approve(waiting[30:100])
    page = client.get(reverse("dashboard:index")).content.decode()
    assert _index_queries(client, runs.admin) == few
    assert f"The oldest 20 of {len(waiting[:100])} are shown" in page


@pytest.mark.parametrize(
    "name, role",
    [
        ("submissions:list", Role.TRE_ADMIN),
        ("reviews:queue", Role.CHECKER),
        ("dashboard:runs", Role.TRE_ADMIN),
    ],
)
def test_list_pages_with_their_filters_are_accessible(client, db, name, role):
    from tests.tre_audit.dashboard.html_checks import accessibility_problems
    from tre_audit.reviews.services import submission_claim

    checker = factories.create_user(role=Role.CHECKER)
    submission_claim(submission=factories.create_audited_submission(), by=checker)
    factories.create_audited_submission()
    client.force_login(checker if role == Role.CHECKER else factories.create_user(role=role))
    html = client.get(reverse(name), {"risk": "purple", "sort": "title"}).content.decode()
    assert 'class="errorlist"' in html and "<table>" in html
    assert accessibility_problems(html) == []


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_older_runs_their_reports_risk():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    (mine,) = [
        key
        for key in executor.loader.disk_migrations
        if key[0] == "submissions" and key[1].endswith("_submission_claim_and_run_risk")
    ]  # found by name: the number may change when branches merge
    before = [
        d for d in executor.loader.disk_migrations[mine].dependencies if d[0] == "submissions"
    ]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    author = old.get_model("auth", "User").objects.create(username="old")
    submission = old.get_model("submissions", "Submission").objects.create(title="t", author=author)
    runs = old.get_model("submissions", "AuditRun").objects
    high = runs.create(submission=submission, report={"verdict": {"risk": "high"}}, risk="")
    odd = runs.create(submission=submission, report={"verdict": {"risk": "purple"}}, risk="")
    queued = runs.create(submission=submission, report=None, risk="")

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())  # back to the newest

    risks = dict(AuditRun.objects.values_list("id", "risk"))
    assert (risks[high.id], risks[odd.id], risks[queued.id]) == ("high", "", "")
