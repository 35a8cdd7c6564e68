import pytest

from tests import factories
from tests.tre_audit.api.support import client_for
from tre_audit.inbox.enums import Kind
from tre_audit.inbox.models import Notification
from tre_audit.inbox.views import PAGE_SIZE

pytestmark = pytest.mark.django_db


def _rows(user, n: int) -> list[Notification]:
    return [
        Notification.objects.create(
            user=user, kind=Kind.RELEASE, subject=f"Request #{i}: released", body="b", url="/r/"
        )
        for i in range(n)
    ]


def test_the_inbox_lists_your_notifications_a_page_at_a_time(settings):
    settings.TRE_AUDIT_BASE_URL = "https://tre.example"
    ann = factories.create_user()
    _rows(ann, PAGE_SIZE + 1)
    _rows(factories.create_user(), 1)
    client = client_for(ann)
    first = client.get("/api/v1/inbox/").json()
    second = client.get("/api/v1/inbox/", {"page": 2}).json()
    assert first["count"] == PAGE_SIZE + 1 and len(first["results"]) == PAGE_SIZE
    assert first["results"][0]["subject"] == f"Request #{PAGE_SIZE}: released"  # newest first
    assert first["results"][0]["url"] == "https://tre.example/r/"
    assert [r["subject"] for r in second["results"]] == ["Request #0: released"]


def test_marking_read_one_or_all_of_your_own():
    ann = factories.create_user()
    first, _, _ = _rows(ann, 3)
    others = _rows(factories.create_user(), 1)
    client = client_for(ann)
    assert client.post(f"/api/v1/inbox/{others[0].pk}/read/").status_code == 404
    assert client.post(f"/api/v1/inbox/{first.pk}/read/").json()["read_at"] is not None
    assert client.post("/api/v1/inbox/read/").json() == {"marked": 2}
    assert Notification.objects.filter(read_at__isnull=True).get() == others[0]


def test_the_inbox_needs_a_token():
    assert client_for(None).get("/api/v1/inbox/").status_code == 401
