from datetime import UTC, datetime, timedelta

import pytest
from django.test import RequestFactory
from django.urls import reverse

from tests import factories
from tests.tre_audit.dashboard.html_checks import accessibility_problems
from tre_audit.inbox.context_processors import inbox
from tre_audit.inbox.enums import Kind
from tre_audit.inbox.models import Notification
from tre_audit.inbox.views import PAGE_SIZE

pytestmark = pytest.mark.django_db
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _rows(user, n: int, *, read: bool = False) -> list[Notification]:
    return [
        Notification.objects.create(
            user=user,
            kind=Kind.AUDIT_DONE,
            subject=f"Request #{i}: audit finished",
            body="It awaits output checking.",
            url=f"/requests/{i}/",
            created_at=START + timedelta(minutes=i),
            read_at=START if read else None,
        )
        for i in range(n)
    ]


@pytest.fixture
def ann(client):
    user = factories.create_user("ann")
    client.force_login(user)
    return user


def test_the_inbox_lists_newest_first_and_marks_the_unread(client, ann):
    _rows(ann, 2)
    Notification.objects.filter(subject__startswith="Request #0").update(read_at=START)
    _rows(factories.create_user(), 1)  # someone else's
    html = client.get(reverse("inbox:list")).content.decode()
    assert html.index("Request #1: audit finished") < html.index("Request #0: audit finished")
    assert html.count('class="unread"') == 1 and html.count('class="read"') == 1
    assert "Inbox (1)" in html  # the header's count
    assert accessibility_problems(html) == []


def test_the_inbox_paginates(client, ann):
    _rows(ann, PAGE_SIZE + 3, read=True)
    first = client.get(reverse("inbox:list")).content.decode()
    second = client.get(reverse("inbox:list"), {"page": 2}).content.decode()
    assert first.count("<li class=") == PAGE_SIZE and second.count("<li class=") == 3
    assert f"Request #{PAGE_SIZE + 2}:" in first and "Request #0:" in second
    assert "Page 2 of 2" in second and "Inbox (" not in second


def test_opening_a_notification_marks_it_read_and_goes_to_its_page(client, ann):
    (row,) = _rows(ann, 1)
    response = client.get(reverse("inbox:open", args=[row.pk]))
    assert response.status_code == 302 and response.url == "/requests/0/"
    row.refresh_from_db()
    assert row.read_at is not None


def test_someone_elses_notification_is_not_found(client, ann):
    (row,) = _rows(factories.create_user(), 1)
    assert client.get(reverse("inbox:open", args=[row.pk])).status_code == 404
    row.refresh_from_db()
    assert row.read_at is None


def test_mark_all_read(client, ann):
    _rows(ann, 3)
    assert client.get(reverse("inbox:read-all")).status_code == 405
    response = client.post(reverse("inbox:read-all"), follow=True)
    assert "3 notifications marked read." in response.content.decode()
    assert not Notification.objects.filter(read_at__isnull=True).exists()


def test_the_inbox_needs_a_sign_in(client):
    response = client.get(reverse("inbox:list"))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_the_unread_count_is_one_query(django_assert_num_queries):
    user = factories.create_user()
    _rows(user, 3)
    _rows(user, 2, read=True)
    request = RequestFactory().get("/")
    request.user = user
    with django_assert_num_queries(1):
        assert inbox(request) == {"inbox_unread": 3}
