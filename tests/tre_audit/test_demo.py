"""The demo accounts and the demo request that scripts/run sets up."""

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.password_validation import validate_password
from django.test import RequestFactory

from tre_audit.demo import DEMO_TITLE, demo_request_ensure, demo_users_ensure
from tre_audit.reviews.enums import Role
from tre_audit.submissions.enums import FileRole, RunStatus, Status
from tre_audit.submissions.models import Project, Submission
from tre_audit.submissions.selectors import user_roles

pytestmark = pytest.mark.django_db


def _sign_in(username: str, password: str):
    """As the sign-in page does: with a request, which the lockout backend needs."""
    return authenticate(
        RequestFactory().post("/accounts/login/"), username=username, password=password
    )


EXPECTED_ROLES = {
    "researcher": {Role.RESEARCHER},
    "checker1": {Role.CHECKER},
    "checker2": {Role.CHECKER},
    "admin": {Role.TRE_ADMIN},
}


def test_the_demo_accounts_have_their_roles_and_passwords():
    passwords = demo_users_ensure()
    assert set(passwords) == set(EXPECTED_ROLES)
    for username, password in passwords.items():
        user = _sign_in(username, password)
        assert user is not None and user.get_username() == username
        validate_password(password, user)  # as strong as the service asks of anyone
        assert user_roles(user) == EXPECTED_ROLES[username]
    assert len(set(passwords.values())) == 4
    project = Project.objects.get(name="Demo project")
    assert list(project.members.values_list("username", flat=True)) == ["researcher"]


def test_ensuring_the_accounts_again_resets_their_passwords_and_roles():
    old = demo_users_ensure()
    get_user_model().objects.get(username="checker1").groups.clear()
    new = demo_users_ensure()
    assert get_user_model().objects.filter(username__in=EXPECTED_ROLES).count() == 4
    for username in EXPECTED_ROLES:
        assert old[username] != new[username]
        assert _sign_in(username, old[username]) is None
        user = _sign_in(username, new[username])
        assert user is not None and user_roles(user) == EXPECTED_ROLES[username]
    assert Project.objects.filter(name="Demo project").count() == 1


def test_the_demo_request_is_made_once():
    demo_users_ensure()
    submission = demo_request_ensure()
    assert demo_request_ensure() == submission
    assert Submission.objects.count() == 1
    assert (submission.title, submission.author.get_username()) == (DEMO_TITLE, "researcher")
    assert submission.project.name == "Demo project" and submission.files_are_exact
    assert (submission.status, submission.label) == (Status.SUBMITTED, "response")
    roles = set(submission.files.values_list("role", flat=True))
    assert roles == {FileRole.MODEL, FileRole.TRAIN, FileRole.TEST}
    assert submission.runs.get().status == RunStatus.QUEUED
