"""The same form conventions on the admin's pages and the request page: errors at the
field, messages in the section acted on, pages a screen reader can follow."""

import html

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests import factories
from tests.tre_audit.dashboard.html_checks import accessibility_problems
from tre_audit.reviews.enums import Role
from tre_audit.submissions.enums import Status

pytestmark = pytest.mark.django_db

PASSWORD = "a long enough passphrase"


def _field(page: str, name: str) -> str:
    return page.split(f'id="id_{name}_field">', 1)[1].split("\n</div>", 1)[0]


@pytest.fixture
def admin(client):
    user = factories.create_user("ada", Role.TRE_ADMIN)
    client.force_login(user)
    return user


def test_a_weak_password_is_said_at_its_field_on_the_users_page(client, admin):
    response = client.post(
        reverse("dashboard:user_new"), {"username": "carol", "password": "carol", "roles": []}
    )
    page = html.unescape(response.content.decode())
    assert response.status_code == 400
    assert "This password is too short." in _field(page, "password")
    assert 'aria-invalid="true"' in _field(page, "password")
    assert f'action="{reverse("dashboard:user_new")}#new-user-form"' in page
    assert not get_user_model().objects.filter(username="carol").exists()


def test_a_created_user_is_said_beside_the_form(client, admin):
    response = client.post(
        reverse("dashboard:user_new"), {"username": "carol", "password": PASSWORD, "roles": []}
    )
    assert response.url == f"{reverse('dashboard:users')}#new-user"
    page = client.get(response.url).content.decode()
    top, section = page.split('<h2 id="new-user">', 1)
    assert "User carol created." in section and "User carol created." not in top
    assert '<input type="email" name="email"' in _field(page, "email")


def test_pages_with_kept_files_and_errors_are_accessible(client, example_files):
    people = factories.create_people()
    client.force_login(people["author"])
    uploads = {role: SimpleUploadedFile(u.name, u.data) for role, u in example_files.items()}
    create = client.post(reverse("submissions:create"), {"label": "outcome", **uploads})
    assert create.status_code == 400
    assert accessibility_problems(create.content.decode()) == []
    submission = factories.create_audited_submission(Status.APPROVED, author=people["author"])
    detail = client.get(submission.get_absolute_url()).content.decode()
    assert 'id="release-form"' in detail and 'id="withdraw-form"' in detail
    assert accessibility_problems(detail) == []


def test_a_deploy_refusal_is_said_in_the_serving_section(client):
    people = factories.create_people()
    submission = factories.create_audited_submission(Status.RELEASED, author=people["author"])
    client.force_login(people["author"])
    url = reverse("serving:deploy", args=[submission.pk])
    response = client.post(url, {"kind": ""}, follow=True)
    assert response.redirect_chain[-1][0] == f"{submission.get_absolute_url()}#serving"
    top, serving = response.content.decode().split('<h2 id="serving">', 1)
    assert 'id="serving-messages"' in serving and "Choose how to serve the model." in serving
    assert "Choose how to serve the model." not in top
