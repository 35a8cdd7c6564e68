"""A broken audit log pauses every change, whichever view or endpoint met it."""

import pytest
from django.urls import reverse

from tests import factories
from tests.tre_audit.api.support import client_for
from tre_audit.reviews.enums import Role
from tre_audit.submissions.enums import Status
from tre_audit.submissions.models import AuditEntry
from tre_audit.submissions.services import AUDIT_LOG_BROKEN, audit_chain_verify

pytestmark = pytest.mark.django_db


@pytest.fixture
def broken_log_request():
    submission = factories.create_submission_at_status(Status.AWAITING_REVIEW)
    AuditEntry.objects.filter(id=AuditEntry.objects.order_by("id").first().id).update(
        reason="forged"
    )
    assert not audit_chain_verify().ok
    return submission


def test_the_web_shows_the_reason_and_changes_nothing(client, broken_log_request):
    client.force_login(broken_log_request.author)
    response = client.post(
        reverse("submissions:withdraw", args=[broken_log_request.pk]),
        {"reason": "no longer", "confirm": "on"},
        follow=True,
    )
    assert AUDIT_LOG_BROKEN in response.content.decode()
    broken_log_request.refresh_from_db()
    assert broken_log_request.status == Status.AWAITING_REVIEW


def test_the_api_answers_503_in_one_sentence_and_changes_nothing(broken_log_request):
    api = client_for(broken_log_request.author)
    response = api.post(
        f"/api/v1/requests/{broken_log_request.pk}/withdraw/", {"reason": "no longer"}
    )
    assert response.status_code == 503
    assert response.json() == {"detail": AUDIT_LOG_BROKEN}
    broken_log_request.refresh_from_db()
    assert broken_log_request.status == Status.AWAITING_REVIEW


def test_a_view_that_does_not_catch_it_still_answers_503(client, broken_log_request):
    admin = factories.create_user("admin", Role.TRE_ADMIN)
    other = factories.create_user("someone", Role.RESEARCHER)
    client.force_login(admin)
    response = client.post(
        reverse("dashboard:user_roles", args=[other.pk]), {"roles": [Role.CHECKER]}
    )
    assert response.status_code == 503
    assert {g.name for g in other.groups.all()} == {Role.RESEARCHER}
