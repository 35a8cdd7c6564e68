import logging
from datetime import UTC, datetime

import pytest
from django.db import transaction

from tests import factories
from tre_audit.inbox.enums import Kind
from tre_audit.inbox.models import Notification
from tre_audit.inbox.services import (
    notification_open,
    notification_send,
    notifications_mark_all_read,
)

pytestmark = pytest.mark.django_db
NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _send(users, **extra):
    fields = dict(kind=Kind.DECISION, subject="Request #7: approved", body="Fine.", url="/r/7/")
    notification_send(users=users, **fields | extra)


def test_each_person_gets_one_row_and_each_address_one_email(
    mailoutbox, django_capture_on_commit_callbacks
):
    ann, bob = factories.create_user(), factories.create_user()
    no_address = factories.create_user()
    no_address.email = ""
    with django_capture_on_commit_callbacks(execute=True):
        _send([ann, bob, ann, no_address])
    rows = Notification.objects.order_by("user_id")
    assert [r.user for r in rows] == [ann, bob, no_address]
    assert all(r.read_at is None and r.kind == Kind.DECISION for r in rows)
    assert sorted(m.to[0] for m in mailoutbox) == sorted([ann.email, bob.email])
    assert {(len(m.to), m.subject) for m in mailoutbox} == {(1, "[tre-audit] Request #7: approved")}


def test_the_email_links_to_the_page_by_the_services_address(
    settings, mailoutbox, django_capture_on_commit_callbacks
):
    settings.TRE_AUDIT_BASE_URL = "https://tre-audit.example.org/"
    with django_capture_on_commit_callbacks(execute=True):
        _send([factories.create_user()])
    assert "https://tre-audit.example.org/r/7/" in mailoutbox[0].body
    assert Notification.objects.get().url == "/r/7/"


def test_nothing_is_sent_when_the_change_is_rolled_back(
    mailoutbox, django_capture_on_commit_callbacks
):
    user = factories.create_user()
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        _send([user])
        raise RuntimeError("the change failed")
    assert callbacks == [] and mailoutbox == []
    assert not Notification.objects.exists()


def test_a_failing_mail_server_leaves_the_inbox_row_and_a_log_line(
    settings, caplog, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 1  # nothing listens on port 1
    with caplog.at_level(logging.WARNING), django_capture_on_commit_callbacks(execute=True):
        _send([factories.create_user()])
    assert Notification.objects.count() == 1
    assert "The decision e-mail to 1 people was not sent" in caplog.text


def test_opening_marks_read_once():
    user = factories.create_user()
    row = Notification.objects.create(user=user, kind=Kind.QUEUE, subject="s", body="b", url="/")
    notification_open(notification=row, now=NOON)
    notification_open(notification=row, now=datetime(2026, 3, 3, tzinfo=UTC))
    row.refresh_from_db()
    assert row.read_at == NOON


def test_mark_all_read_marks_only_that_persons_unread():
    ann, bob = factories.create_user(), factories.create_user()
    for user in (ann, ann, bob):
        Notification.objects.create(user=user, kind=Kind.QUEUE, subject="s", body="b", url="/")
    assert notifications_mark_all_read(user=ann, now=NOON) == 2
    assert notifications_mark_all_read(user=ann, now=NOON) == 0
    assert Notification.objects.filter(user=bob, read_at__isnull=True).count() == 1
