from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from tests import factories
from tests.tre_audit.dashboard.helpers import (
    audited,
    broker_connects,
    decided_after,
    review,
    submitted_request,
)
from tests.tre_audit.dashboard.html_checks import accessibility_problems
from tre_audit.dashboard import selectors
from tre_audit.reviews.enums import Decision, Role
from tre_audit.submissions.enums import Status
from tre_audit.submissions.models import AuditEntry, PolicyVersion
from tre_audit.submissions.selectors import user_roles

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery"

BUSY_BROKER = selectors.BrokerOverview(
    reachable=True,
    queue="celery",
    queue_depth=3,
    workers=[
        {
            "name": "celery@audit-1",
            "tasks": [
                {
                    "id": "5f0c-task",
                    "name": "submissions.audit_run_execute",
                    "run_id": 17,
                    "since": datetime(2025, 3, 3, 9, 15, tzinfo=UTC),
                }
            ],
        },
        {"name": "celery@audit-2", "tasks": []},
    ],
)


@pytest.fixture(autouse=True)
def busy_broker(monkeypatch):
    """The index page sees a fixed broker; the real one is tested in tests/integration."""
    monkeypatch.setattr(selectors, "broker_overview", lambda **kw: BUSY_BROKER)


@pytest.fixture
def admin(client):
    user = factories.create_user("ada", role=Role.TRE_ADMIN)
    client.force_login(user)
    return user


def _page(client, name, *args, status=200):
    response = client.get(reverse(f"dashboard:{name}", args=args))
    assert response.status_code == status
    return response.content.decode()


# Who may see what ------------------------------------------------------------

PAGES = ["index", "audit_log", "users", "policy"]
POSTS = {  # endpoint -> (args, data, what an admin gets for this data)
    "sign_off": ((999999,), {"reason": "ok"}, 404),
    "user_roles": ((None,), {"roles": []}, 400),  # None: the admin's own id
    "user_new": ((), {}, 400),
    "policy_new": ((), {}, 400),
}


@pytest.mark.parametrize("role", [None, Role.RESEARCHER, Role.CHECKER, Role.TRE_ADMIN, "anon"])
@pytest.mark.parametrize("name", PAGES + list(POSTS))
def test_permission_matrix(client, role, name):
    user = None
    if role != "anon":
        user = factories.create_user(role=role)
        client.force_login(user)
    if name in POSTS:
        args, data, admin_status = POSTS[name]
        args = tuple(user.pk if a is None and user else (a or 1) for a in args)
        response = client.post(reverse(f"dashboard:{name}", args=args), data)
    else:
        admin_status = 200
        response = client.get(reverse(f"dashboard:{name}"))

    if role == "anon":
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))
    elif role == Role.TRE_ADMIN:
        assert response.status_code == admin_status
    else:
        assert response.status_code == 403


def test_non_admins_change_nothing_through_the_post_endpoints(client):
    checker = factories.create_user(role=Role.CHECKER)
    client.force_login(checker)
    text = selectors.policy_overview()["current"]["text"]

    client.post(reverse("dashboard:policy_new"), {"text": text, "note": "mine"})
    client.post(reverse("dashboard:user_roles", args=[checker.pk]), {"roles": [Role.TRE_ADMIN]})
    client.post(
        reverse("dashboard:user_new"),
        {"username": "eve", "password": PASSWORD, "roles": [Role.TRE_ADMIN]},
    )

    assert not PolicyVersion.objects.exists()
    assert user_roles(checker) == {Role.CHECKER}
    assert not get_user_model().objects.filter(username="eve").exists()
    assert not AuditEntry.objects.exists()


def test_post_endpoints_refuse_get(client, admin):
    assert client.get(reverse("dashboard:policy_new")).status_code == 405
    assert client.post(reverse("dashboard:policy")).status_code == 405


@pytest.mark.parametrize("name", PAGES)
def test_pages_are_accessible(client, admin, name):
    review(audited(submitted_request()), Decision.APPROVE, ["record"])  # a sign-off form
    decided_after(2)
    assert accessibility_problems(_page(client, name)) == []


def test_dashboard_code_never_writes():
    """The dashboard reads; every write goes through a service of another package."""
    package = Path(selectors.__file__).parent
    for path in package.glob("*.py"):
        source = path.read_text()
        for call in (".save(", ".create(", ".update(", ".delete(", "bulk_", "get_or_create("):
            assert call not in source, f"{path.name} calls {call}"


# The overview ------------------------------------------------------------------


def test_index_shows_every_section(client, admin):
    decided_after(3, Status.REJECTED)
    five_hours_ago = timezone.now() - timedelta(hours=5)
    review(audited(submitted_request(at=five_hours_ago)), Decision.REJECT, ["attack:rmia"])

    html = _page(client, "index")

    assert "Awaiting review" in html and "Audit failed" in html  # every state, zeros too
    assert '<p class="stat">3</p>' in html  # queue depth
    assert "celery@audit-1" in html and "#17" in html and "5f0c-task" in html
    assert "celery@audit-2" in html and "idle" in html
    assert "4.0 h" in html  # median time to decision: of 3 h and 5 h
    assert "RMIA" in html and "attack:rmia" in html
    assert "No audit has failed." in html


def test_index_lists_audits_in_progress_with_a_stop_button(client, admin):
    from tre_audit.submissions.enums import RunStatus
    from tre_audit.submissions.models import AuditRun

    submission = factories.create_submission_at_status(Status.AUDITING)
    run = AuditRun.objects.create(submission=submission, status=RunStatus.RUNNING, attempts=2)

    html = _page(client, "index")

    assert "Audits in progress" in html
    assert html.count(f'action="{reverse("submissions:stop", args=[run.id])}"') == 2  # and retried
    assert 'name="next" value="/dashboard/"' in html


def test_index_survives_an_unreachable_broker(client, admin, monkeypatch):
    from tre_audit.celery import app

    monkeypatch.undo()  # the real selector, against a port nobody listens on
    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")

    with broker_connects(1) as attempts:
        html = _page(client, "index")

    assert attempts and len(attempts) <= 3  # no retry loop
    assert all(timeout is not None and timeout <= 1.0 for timeout in attempts)
    assert "Broker unreachable" in html
    assert "Unknown: the broker is unreachable." in html


def test_admin_signs_off_a_high_risk_approval(client, admin):
    approval = review(audited(submitted_request()), Decision.APPROVE, ["record"])
    assert f'action="/dashboard/sign-offs/{approval.id}/"' in _page(client, "index")

    response = client.post(
        reverse("dashboard:sign_off", args=[approval.id]), {"reason": "Endpoint only."}
    )

    assert response.status_code == 302
    approval.refresh_from_db()
    assert approval.signed_off_by == admin
    assert AuditEntry.objects.filter(action="sign-off", actor=admin).exists()
    assert "No approval is waiting for a sign-off." in _page(client, "index")


def test_sign_off_without_reason_is_refused_with_the_reason(client, admin):
    approval = review(audited(submitted_request()), Decision.APPROVE, ["record"])

    response = client.post(reverse("dashboard:sign_off", args=[approval.id]), {"reason": " "})

    assert response.status_code == 400
    assert "Say why you sign off this approval." in response.content.decode()
    approval.refresh_from_db()
    assert approval.signed_off_at is None


def test_author_cannot_sign_off_their_own_request(client, admin):
    approval = review(audited(submitted_request(author=admin)), Decision.APPROVE, ["record"])
    assert "someone other than the checker or author" in _page(client, "index")

    response = client.post(reverse("dashboard:sign_off", args=[approval.id]), {"reason": "mine"})

    assert response.status_code == 403
    approval.refresh_from_db()
    assert approval.signed_off_at is None


# The audit log -----------------------------------------------------------------


def test_audit_log_shows_an_intact_chain_and_the_newest_entries(client, admin):
    submission = decided_after(2)

    html = _page(client, "audit_log")

    assert "Hash chain intact" in html
    assert f'href="{submission.get_absolute_url()}"' in html
    assert "awaiting_review → rejected" in html
    assert AuditEntry.objects.order_by("-id").first().entry_hash[:12] in html


def test_audit_log_shows_the_entry_edited_in_the_database(client, admin):
    decided_after(2)
    edited = AuditEntry.objects.filter(action="status").order_by("id")[1]
    AuditEntry.objects.filter(id=edited.id).update(reason="approved by nobody")

    html = _page(client, "audit_log")

    assert "Hash chain intact" not in html
    assert f"Hash chain broken at entry #{edited.id}" in html
    assert "its content was changed after it was written" in html
    assert 'role="alert"' in html
    assert '<tr class="bad">' in html
    assert "No change to any request can be recorded" in html


def test_the_overview_says_when_the_audit_log_failed_verification(client, admin):
    decided_after(2)
    assert "The audit log failed verification" not in _page(client, "index")
    edited = AuditEntry.objects.order_by("id").first()
    AuditEntry.objects.filter(id=edited.id).update(reason="approved by nobody")
    _page(client, "audit_log")  # the full check, which records the outcome

    html = _page(client, "index")

    assert "The audit log failed verification" in html
    assert f"Entry #{edited.id}: its content was changed after it was written." in html


def test_audit_log_names_an_anchored_entry_that_was_removed(client, admin, settings):
    decided_after(2)
    newest = AuditEntry.objects.order_by("-id").first()
    settings.TRE_AUDIT_ANCHOR_FILE.write_text(f"{newest.id} {newest.entry_hash}\n")
    AuditEntry.objects.filter(id=newest.id)._raw_delete(AuditEntry.objects.db)

    html = _page(client, "audit_log")

    assert f"Hash chain broken at entry #{newest.id}" in html
    assert "it was anchored, and it and the entries after it were removed" in html


# Users -------------------------------------------------------------------------


def test_users_page_lists_roles_and_a_form_per_user(client, admin):
    bob = factories.create_user("bob", role=Role.CHECKER)

    html = _page(client, "users")

    assert "Output checker" in html
    assert f'action="/dashboard/users/{bob.pk}/roles/#roles-{bob.pk}"' in html
    assert f'id="roles-{bob.pk}-checker" name="roles" value="checker" checked' in html
    assert "Roles of bob" in html


def test_admin_sets_roles_and_the_change_is_logged(client, admin):
    bob = factories.create_user("bob", role=Role.RESEARCHER)

    response = client.post(
        reverse("dashboard:user_roles", args=[bob.pk]), {"roles": [Role.CHECKER, Role.RESEARCHER]}
    )

    assert response.status_code == 302
    assert user_roles(bob) == {Role.CHECKER, Role.RESEARCHER}
    entry = AuditEntry.objects.get(action="roles")
    assert (entry.actor, entry.reason) == (admin, "bob: checker, researcher")


def test_admin_cannot_remove_their_own_admin_role(client, admin):
    response = client.post(
        reverse("dashboard:user_roles", args=[admin.pk]), {"roles": [Role.CHECKER]}
    )

    assert response.status_code == 400
    assert "You cannot remove your own admin role." in response.content.decode()
    assert user_roles(admin) == {Role.TRE_ADMIN}


def test_unknown_role_is_refused(client, admin):
    bob = factories.create_user("bob", role=Role.RESEARCHER)
    response = client.post(reverse("dashboard:user_roles", args=[bob.pk]), {"roles": ["root"]})
    assert response.status_code == 400
    assert user_roles(bob) == {Role.RESEARCHER}


def test_admin_creates_a_user_who_can_sign_in(client, admin):
    response = client.post(
        reverse("dashboard:user_new"),
        {"username": "carol", "email": "", "password": PASSWORD, "roles": [Role.CHECKER]},
    )

    assert response.status_code == 302
    carol = get_user_model().objects.get(username="carol")
    assert user_roles(carol) == {Role.CHECKER}
    assert AuditEntry.objects.get(action="user-created").reason == "carol: checker"
    client.logout()
    signed_in = client.post(reverse("login"), {"username": "carol", "password": PASSWORD})
    assert signed_in.status_code == 302


def test_weak_password_is_refused_with_the_services_sentence(client, admin):
    response = client.post(
        reverse("dashboard:user_new"), {"username": "carol", "password": "carol", "roles": []}
    )

    assert response.status_code == 400
    html = response.content.decode()
    assert "This password is too short." in html
    assert 'value="carol"' in html  # what was typed is kept
    assert not get_user_model().objects.filter(username="carol").exists()


# The risk policy ----------------------------------------------------------------


def test_policy_page_prefills_the_current_text(client, admin):
    html = _page(client, "policy")
    assert "Current policy: version 1" in html
    assert "auc_high = 0.8" in html
    assert '<textarea name="text"' in html
    assert "Save as version 2" in html


def test_saving_a_policy_version_shows_it_with_its_diff(client, admin):
    text = selectors.policy_overview()["current"]["text"].replace(
        "auc_high = 0.8", "auc_high = 0.7"
    )

    response = client.post(reverse("dashboard:policy_new"), {"text": text, "note": "Stricter"})

    assert response.status_code == 302
    saved = PolicyVersion.objects.get()
    assert (saved.version, saved.note, saved.created_by) == (2, "Stricter", admin)
    html = _page(client, "policy")
    assert "Current policy: version 2" in html
    assert '<span class="remove">-auc_high = 0.8</span>' in html
    assert '<span class="add">+auc_high = 0.7</span>' in html
    assert AuditEntry.objects.filter(action="policy", after="2").exists()


@pytest.mark.parametrize(
    "change, sentence",
    [
        (lambda t: t + "\n[broken\n", "The policy file is not valid TOML"),
        (
            lambda t: t.replace("auc_high = 0.8", "auc_high = 1.5"),
            "auc_high in [attacks] must lie between",
        ),
        (
            lambda t: t.replace("auc_medium = 0.6", "auc_medium = 0.9"),
            "auc_medium must not exceed auc_high",
        ),
    ],
)
def test_invalid_policy_is_refused_and_nothing_saved(client, admin, change, sentence):
    text = change(selectors.policy_overview()["current"]["text"])

    response = client.post(reverse("dashboard:policy_new"), {"text": text, "note": "Try"})

    assert response.status_code == 400
    assert sentence in response.content.decode()
    assert not PolicyVersion.objects.exists()
    assert not AuditEntry.objects.exists()


def test_policy_needs_a_note(client, admin):
    text = selectors.policy_overview()["current"]["text"]
    response = client.post(reverse("dashboard:policy_new"), {"text": text, "note": "  "})
    assert response.status_code == 400
    assert "This field is required." in response.content.decode()
    assert not PolicyVersion.objects.exists()
