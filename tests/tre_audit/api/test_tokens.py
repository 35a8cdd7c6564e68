"""API tokens (knox): stored as hashes, expiring, ended by a sign-out or a new password."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from tests import factories
from tre_audit.reviews.enums import Role

API = "/api/v1"


@pytest.fixture
def author(db):
    return factories.create_user("author", Role.RESEARCHER)


def _token(username: str = "author", password: str = "pw") -> str:
    response = APIClient().post(f"{API}/token/", {"username": username, "password": password})
    assert response.status_code == 200, response.json()
    return response.json()["token"]


def _listing(token: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client.get(f"{API}/requests/")


def test_the_token_is_stored_only_as_a_hash(author):
    token = _token()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {AuthToken._meta.db_table}")
        stored = [str(value) for row in cursor.fetchall() for value in row]
    assert stored
    assert not any(token in value for value in stored)
    assert _listing(token).status_code == 200


def test_the_token_answer_says_when_it_expires(author, settings):
    response = APIClient().post(f"{API}/token/", {"username": "author", "password": "pw"})
    expiry = AuthToken.objects.get(user=author).expiry
    assert response.json()["expiry"] is not None
    assert timedelta(hours=9) < expiry - timezone.now() <= settings.REST_KNOX["TOKEN_TTL"]


def test_an_expired_token_is_refused(author):
    token = _token()
    AuthToken.objects.filter(user=author).update(expiry=timezone.now() - timedelta(seconds=1))
    response = _listing(token)
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}


def test_api_logout_ends_every_token_of_the_user(author):
    first, second = _token(), _token()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {first}")
    assert client.post(f"{API}/token/logout/").status_code == 204
    assert _listing(first).status_code == 401
    assert _listing(second).status_code == 401


def test_web_sign_out_ends_the_api_tokens(author, client):
    token = _token()
    other = factories.create_user("other", Role.RESEARCHER)
    others_token = _token("other")
    client.force_login(author)
    assert client.post(reverse("logout")).status_code == 302
    assert _listing(token).status_code == 401
    assert _listing(others_token).status_code == 200
    assert AuthToken.objects.filter(user=other).count() == 1


def test_a_new_password_ends_the_api_tokens(author):
    token = _token()
    author.set_password("a much longer new secret")
    author.save()
    assert _listing(token).status_code == 401
    assert _token(password="a much longer new secret")


def test_saving_the_user_without_a_new_password_keeps_the_tokens(author):
    token = _token()
    author.email = "new@tre.example"
    author.save()
    author.save(update_fields=["last_login"])
    assert _listing(token).status_code == 200
