"""The user services the dashboard's user page calls (tre_audit.reviews.services)."""

import pytest
from django.contrib.auth import get_user_model

from tests import factories
from tre_audit.reviews.enums import Role
from tre_audit.reviews.exceptions import ReviewInvalid, ReviewNotAllowed
from tre_audit.reviews.services import user_create, user_roles_set
from tre_audit.submissions.models import AuditEntry
from tre_audit.submissions.selectors import user_roles
from tre_audit.submissions.services import audit_chain_verify

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery"


def test_admin_creates_a_user_with_roles_and_it_is_logged():
    admin = factories.create_user("ada", role=Role.TRE_ADMIN)

    user = user_create(
        username=" carol ",
        email="carol@tre.example",
        password=PASSWORD,
        roles={Role.CHECKER, Role.RESEARCHER},
        by=admin,
    )

    user.refresh_from_db()
    assert user.get_username() == "carol"
    assert user.check_password(PASSWORD)
    assert user_roles(user) == {Role.CHECKER, Role.RESEARCHER}
    entry = AuditEntry.objects.order_by("-id").first()
    assert (entry.action, entry.actor, entry.reason) == (
        "user-created",
        admin,
        "carol: checker, researcher",
    )
    assert audit_chain_verify().ok


def test_a_user_without_roles_is_logged_as_such():
    admin = factories.create_user(role=Role.TRE_ADMIN)
    user_create(username="dan", password=PASSWORD, roles=set(), by=admin)
    assert AuditEntry.objects.get(action="user-created").reason == "dan: no role"


@pytest.mark.parametrize(
    "username, password, roles, message",
    [
        ("erin", "short", set(), "too short"),
        ("erin", "password123", set(), "too common"),
        ("erin", PASSWORD, {"superuser"}, "There is no role called superuser."),
        ("er in", PASSWORD, set(), "Enter a valid username"),
        ("ADA", PASSWORD, set(), "There is already a user called ADA."),
    ],
)
def test_user_creation_refused_saves_nothing(username, password, roles, message):
    admin = factories.create_user("ada", role=Role.TRE_ADMIN)
    users_before = get_user_model().objects.count()

    with pytest.raises(ReviewInvalid, match=message):
        user_create(username=username, password=password, roles=roles, by=admin)

    assert get_user_model().objects.count() == users_before
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize("role", [None, Role.RESEARCHER, Role.CHECKER])
def test_only_admins_create_users(role):
    someone = factories.create_user(role=role)
    with pytest.raises(ReviewNotAllowed):
        user_create(username="mallory", password=PASSWORD, roles={Role.TRE_ADMIN}, by=someone)
    assert not get_user_model().objects.filter(username="mallory").exists()


def test_role_changes_are_logged():
    admin = factories.create_user("ada", role=Role.TRE_ADMIN)
    bob = factories.create_user("bob", role=Role.RESEARCHER)

    user_roles_set(user=bob, roles={Role.CHECKER}, by=admin)

    assert user_roles(bob) == {Role.CHECKER}
    entry = AuditEntry.objects.get(action="roles")
    assert (entry.actor, entry.reason) == (admin, "bob: checker")
