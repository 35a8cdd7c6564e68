"""Under attack: plain 500s, throttled and locked-out sign-ins, weak passwords, CSP."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from tests import factories
from tre_audit.api.throttling import TokenRateThrottle
from tre_audit.reviews.enums import Role
from tre_audit.submissions import selectors

API = "/api/v1"
#: What an unexpected error must not show: settings, paths, frame locals.
INTERNALS = ("Traceback", "SECRET", "/work/", "site-packages", "redis://", "secret-in-a-local")


@pytest.fixture
def author(db):
    return factories.create_user("author", Role.RESEARCHER)


@pytest.fixture
def broken_listing(monkeypatch):
    """A bug in the selector both request lists use: an unexpected exception."""

    def fail(**kwargs):
        secret_in_a_local = "secret-in-a-local"
        raise RuntimeError(f"{secret_in_a_local} at redis://broker {__file__}")

    monkeypatch.setattr(selectors, "submission_rows", fail)


def _no_internals(body: str) -> None:
    for leak in INTERNALS:
        assert leak not in body, leak


# -- unexpected errors --------------------------------------------------------------------


def test_an_unexpected_web_error_is_a_plain_page(author, broken_listing, settings):
    assert settings.DEBUG is False
    client = Client(raise_request_exception=False)
    client.force_login(author)
    response = client.get(reverse("submissions:list"))
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
    _no_internals(response.content.decode())


def test_an_unexpected_api_error_is_json_with_one_sentence(author, broken_listing):
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(author)
    response = client.get(f"{API}/requests/")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "detail": "The server failed to answer this request; the error has been logged."
    }
    _no_internals(response.content.decode())


# -- throttling and lockout ---------------------------------------------------------------


class _Clock:
    """The token throttle's clock, moved by the test instead of by waiting."""

    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _after_cool_off(settings, clock: _Clock | None = None) -> None:
    """As if the lockout's cool-off had passed: failures and the throttle's window age."""
    passed = settings.AXES_COOLOFF_TIME + timedelta(minutes=1)
    for attempt in AccessAttempt.objects.all():
        attempt.attempt_time -= passed
        attempt.save(update_fields=["attempt_time"])
    if clock is not None:
        clock.now += passed.total_seconds()


def test_thirty_wrong_passwords_for_a_token_are_throttled_then_locked_out(
    author, settings, monkeypatch
):
    clock = _Clock()
    monkeypatch.setattr(TokenRateThrottle, "timer", clock)
    client = APIClient()
    codes = [
        client.post(f"{API}/token/", {"username": "author", "password": f"guess{i}"}).status_code
        for i in range(30)
    ]
    assert codes[:4] == [400] * 4
    assert codes[4:] == [429] * 26
    right = {"username": "author", "password": "pw"}
    throttled = client.post(f"{API}/token/", right)
    assert throttled.status_code == 429
    detail = throttled.json()["detail"]
    assert re.fullmatch(r"Too many requests: try again in \d+ seconds\.", detail)
    clock.now += 120  # the throttle's window has passed, not the lockout's cool-off
    locked = client.post(f"{API}/token/", right)
    assert locked.status_code == 429
    assert locked.json() == {"detail": settings.AXES_COOLOFF_MESSAGE}
    _after_cool_off(settings, clock)
    assert client.post(f"{API}/token/", right).status_code == 200


def test_thirty_wrong_passwords_on_the_sign_in_page_lock_it(author, settings):
    client = Client()
    login = reverse("login")
    codes = [
        client.post(login, {"username": "author", "password": f"guess{i}"}).status_code
        for i in range(30)
    ]
    assert codes[:4] == [200] * 4  # the form again, with its error
    assert codes[4:] == [429] * 26
    locked = client.post(login, {"username": "author", "password": "pw"})
    assert locked.status_code == 429
    page = locked.content.decode()
    assert settings.AXES_COOLOFF_MESSAGE in page
    assert page.count('role="alert"') == 1
    assert "_auth_user_id" not in client.session
    _after_cool_off(settings)
    assert client.post(login, {"username": "author", "password": "pw"}).status_code == 302
    assert client.session["_auth_user_id"] == str(author.pk)


def test_a_lockout_is_per_username_and_address(author, settings):
    factories.create_user("other", Role.RESEARCHER)
    client = Client()
    for i in range(settings.AXES_FAILURE_LIMIT):
        client.post(reverse("login"), {"username": "author", "password": f"guess{i}"})
    other = client.post(reverse("login"), {"username": "other", "password": "pw"})
    assert other.status_code == 302
    from_elsewhere = Client(REMOTE_ADDR="10.0.0.7")
    right = {"username": "author", "password": "pw"}
    assert from_elsewhere.post(reverse("login"), right).status_code == 302


def test_the_api_is_throttled_per_user(author, monkeypatch):
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "user", "3/min")
    client = APIClient()
    client.force_authenticate(author)
    codes = [client.get(f"{API}/requests/").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    other = APIClient()
    other.force_authenticate(factories.create_user("other", Role.RESEARCHER))
    assert other.get(f"{API}/requests/").status_code == 200


# -- passwords ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    ["weakuser1", "short1pass", "password1234", "123456789012", "weakuser1@tre.example"],
)
def test_weak_passwords_are_refused(db, password):
    user = factories.create_user("weakuser1", Role.RESEARCHER)
    user.email = "weakuser1@tre.example"
    with pytest.raises(ValidationError):
        validate_password(password, user)


def test_a_long_unrelated_password_is_accepted(db):
    user = factories.create_user("weakuser1", Role.RESEARCHER)
    validate_password("violet kettle orbit", user)


# -- headers ------------------------------------------------------------------------------


def _policy(response) -> dict[str, list[str]]:
    parts = [part.split() for part in response["Content-Security-Policy"].split(";")]
    return {part[0]: part[1:] for part in parts if part}


def test_pages_carry_a_csp_without_inline_code(client):
    response = client.get(reverse("login"))
    policy = _policy(response)
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "style=" not in response.content.decode()
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_the_progress_script_runs_by_the_pages_nonce(db):
    author = factories.create_user("author", Role.RESEARCHER)
    submission = factories.create_submission_at_status("auditing", author=author)
    client = Client()
    client.force_login(author)
    response = client.get(submission.get_absolute_url())
    nonce = re.search(r"<script nonce=\"([^\"]+)\">", response.content.decode()).group(1)
    assert f"'nonce-{nonce}'" in _policy(response)["script-src"]
    assert "'unsafe-inline'" not in _policy(response)["script-src"]


def test_only_the_api_docs_page_allows_its_inline_code(author, client):
    client.force_login(author)
    policy = _policy(client.get(reverse("api-docs")))
    assert "'unsafe-inline'" in policy["script-src"]
    assert "blob:" in policy["worker-src"]


def test_session_cookies_last_a_working_day_and_are_http_only(author, settings):
    client = Client()
    response = client.post(reverse("login"), {"username": "author", "password": "pw"})
    cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert cookie["max-age"] == 8 * 3600
    assert cookie["httponly"]
    assert cookie["samesite"] == "Lax"
