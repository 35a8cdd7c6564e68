"""The dashboard's trend charts: their selectors (clock injected) and the page."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.urls import reverse

from tests import factories
from tests.tre_audit.dashboard.helpers import (
    T0,
    audited,
    clock,
    decided_after,
    submitted_request,
)
from tests.tre_audit.dashboard.html_checks import accessibility_problems
from tre_audit.dashboard import selectors
from tre_audit.reviews.enums import Role
from tre_audit.submissions.enums import Status
from tre_audit.submissions.services import submission_set_status

pytestmark = pytest.mark.django_db

#: T0 is Monday 3 March 2025, 09:00 UTC; "now" is the Thursday of the next week.
NOW = T0 + timedelta(days=10)


@pytest.fixture(autouse=True)
def quiet_broker(monkeypatch):
    """The index page sees no broker; the real one is tested in tests/integration."""
    down = selectors.BrokerOverview(reachable=False, queue="celery", error="not in this test")
    monkeypatch.setattr(selectors, "broker_overview", lambda **kw: down)


def _week(rows: list[dict], day: date) -> dict:
    return next(row for row in rows if row["week"] == day)


# Selectors ------------------------------------------------------------------------


def test_the_window_starts_on_a_monday_weeks_before_now():
    start = selectors.chart_window_start(now=NOW, weeks=12)

    assert start.date() == date(2024, 12, 23) and start.weekday() == 0
    assert (start.hour, start.minute) == (0, 0)
    assert selectors.chart_window_start(now=NOW, weeks=1).date() == date(2025, 3, 10)


def test_activity_counts_new_requests_and_decisions_in_the_week_they_happened():
    decided_after(2, Status.APPROVED)
    decided_after(30, Status.CHANGES_REQUESTED)
    decided_after(24 * 7, Status.REJECTED)  # decided on Monday 10 March
    submitted_request(at=T0 + timedelta(days=8))
    submitted_request(at=T0 - timedelta(weeks=20))  # before the window

    rows = selectors.submission_activity_by_week(now=NOW, weeks=12)

    assert len(rows) == 12 and rows[0]["week"] == date(2024, 12, 23)
    assert [row["week"] for row in rows] == sorted(row["week"] for row in rows)
    assert _week(rows, date(2025, 3, 3)) == {
        "week": date(2025, 3, 3),
        "submitted": 3,
        "approved": 1,
        "changes_requested": 1,
        "rejected": 0,
    }
    assert _week(rows, date(2025, 3, 10))["submitted"] == 1
    assert _week(rows, date(2025, 3, 10))["rejected"] == 1
    assert sum(row["submitted"] for row in rows) == 4


def test_activity_ignores_what_happens_after_now():
    submitted_request(at=NOW + timedelta(hours=1))

    rows = selectors.submission_activity_by_week(now=NOW, weeks=2)

    assert sum(row["submitted"] for row in rows) == 0


def test_time_to_decision_is_binned_from_submission_to_the_first_decision():
    decided_after(0.5)
    decided_after(2)
    decided_after(3.9)
    decided_after(30)
    decided_after(24 * 8)
    request = decided_after(2, Status.CHANGES_REQUESTED)
    with clock(T0 + timedelta(hours=30)):  # a second decision does not move the first
        for step in (Status.SUBMITTED, Status.AUDITING, Status.AWAITING_REVIEW, Status.APPROVED):
            submission_set_status(submission=request, to=step, by=None)
    decided_after(1, start=T0 - timedelta(weeks=30))  # decided before the window
    audited(submitted_request())  # not decided yet

    bins = selectors.decision_time_histogram(now=NOW + timedelta(days=1), weeks=12)

    assert [b["label"] for b in bins] == [label for _, label in selectors.DECISION_TIME_BINS]
    assert [b["count"] for b in bins] == [1, 3, 0, 1, 0, 1]


# The page -------------------------------------------------------------------------


@pytest.fixture
def admin(client):
    user = factories.create_user("ada", role=Role.TRE_ADMIN)
    client.force_login(user)
    return user


def _index(client, *, at) -> str:
    with clock(at):
        response = client.get(reverse("dashboard:index"))
    assert response.status_code == 200
    return response.content.decode()


def test_the_dashboard_shows_each_chart_with_the_table_behind_it(client, admin):
    decided_after(3, Status.APPROVED)

    page = _index(client, at=NOW)

    for chart_id in ("activity-chart", "decision-time-chart", "risk-chart"):
        figure = page[page.index(f'id="{chart_id}-figure"') :].split("</figure>")[0]
        assert f'role="img" aria-labelledby="{chart_id}-title {chart_id}-desc"' in figure
        assert "<summary>Data behind the chart</summary>" in figure
    assert '<th scope="row">3 Mar</th><td class="num">1</td><td class="num">1</td>' in page
    assert '<th scope="row">1–4 h</th><td class="num">1</td>' in page
    assert "style=" not in page
    assert accessibility_problems(page) == []


def test_an_empty_dashboard_says_there_is_nothing_to_chart(client, admin):
    page = _index(client, at=NOW)

    assert "No request was submitted or decided in the last 12 weeks." in page
    assert "No request had its first decision in the last 12 weeks." in page
    assert "No request has a finished audit yet." in page
    assert "chart-svg" not in page


def test_the_charts_take_the_same_queries_for_many_requests(
    client, admin, django_assert_max_num_queries
):
    decided_after(2, Status.APPROVED)
    with django_assert_max_num_queries(100) as few:
        _index(client, at=NOW)
    author = factories.create_user()
    for i in range(100):  # a hundred requests, a tenth of them decided, over six weeks
        submitted_request(at=T0 - timedelta(hours=10 * i), author=author)
    for i in range(10):
        decided_after(24 * i, Status.REJECTED, start=T0 - timedelta(days=3 * i))

    with django_assert_max_num_queries(len(few)) as many:
        page = _index(client, at=NOW)

    assert len(many) == len(few)
    assert '<th scope="row">&gt; 7 d</th>' in page
