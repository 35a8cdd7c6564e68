"""A real worker's audit, then the checkers' decisions: who hears of what, in the inbox and
in the e-mail log both processes append to (the file the run command names)."""

from email import message_from_string, policy

import pytest

from tests import factories
from tests.integration.conftest import wait_for
from tre_audit.inbox.enums import Kind
from tre_audit.inbox.mail import SEPARATOR
from tre_audit.inbox.models import Notification
from tre_audit.reviews.enums import Decision, Role
from tre_audit.reviews.services import (
    finding_sources,
    pending_sign_offs,
    review_sign_off,
    review_submit,
    submission_release,
)
from tre_audit.submissions.enums import RunStatus, Status
from tre_audit.submissions.selectors import current_run
from tre_audit.submissions.services import submission_create

pytestmark = pytest.mark.django_db(transaction=True)
BASE_URL = "http://tre.example:8000"


@pytest.fixture
def mail_log(settings, tmp_path):
    """This process's e-mail goes to the log file the worker's goes to."""
    settings.EMAIL_BACKEND = "tre_audit.inbox.mail.MailLogBackend"
    settings.TRE_AUDIT_MAIL_LOG = tmp_path / "mail.log"
    settings.TRE_AUDIT_BASE_URL = BASE_URL
    return settings.TRE_AUDIT_MAIL_LOG


def _mails(log) -> list[tuple[str, str, str]]:
    """(to, subject, body) of each message in the log, in the order written."""
    if not log.exists():
        return []
    texts = [t for t in log.read_text(encoding="utf-8").split(f"\n{SEPARATOR}\n") if t.strip()]
    parsed = [message_from_string(t, policy=policy.default) for t in texts]  # unfolds headers
    return [(m["To"], m["Subject"], m.get_payload(decode=True).decode()) for m in parsed]


def _told() -> list[tuple[str, str]]:
    rows = Notification.objects.select_related("user").order_by("id")
    return [(r.user.get_username(), r.kind) for r in rows]


def test_a_real_audit_and_its_decisions_reach_each_person(worker_factory, example_files, mail_log):
    worker = worker_factory(
        TRE_AUDIT_FANOUT="false",  # one task: the fan-out has tests of its own
        TRE_AUDIT_EMAIL_BACKEND="log",
        TRE_AUDIT_MAIL_LOG=str(mail_log),
        TRE_AUDIT_BASE_URL=BASE_URL,
    )
    author = factories.create_user("author", Role.RESEARCHER)
    checkers = [factories.create_user(f"checker{i}", Role.CHECKER) for i in (1, 2)]
    admin = factories.create_user("admin", Role.TRE_ADMIN)
    submission = submission_create(
        author=author, title="SVC", label="response", declaration=factories.EXACT, **example_files
    )
    wait_for(lambda: len(_mails(mail_log)) == 3, what="the audit's e-mails", log=worker.log)
    assert submission.runs.get().status == RunStatus.DONE
    assert sorted(_told()) == [
        ("author", Kind.AUDIT_DONE),
        ("checker1", Kind.QUEUE),
        ("checker2", Kind.QUEUE),
    ]
    _approve_sign_off_release(submission, checkers, admin)
    assert _told()[3:] == [
        ("author", Kind.DECISION),  # the first approval: a second is needed
        ("admin", Kind.SIGN_OFF_WAITS),  # it was given against a high risk
        ("author", Kind.DECISION),  # the second: approved, and it waits for sign-off too
        ("admin", Kind.SIGN_OFF_WAITS),
        ("author", Kind.SIGN_OFF),
        ("author", Kind.SIGN_OFF),
        ("author", Kind.RELEASE),
    ]
    mails = _mails(mail_log)
    assert [(to.split("@")[0], subject.split(": ", 1)[1]) for to, subject, _ in mails[3:]] == [
        ("author", "approved by one checker"),
        ("admin", "a high-risk approval waits for your sign-off"),
        ("author", "approved"),
        ("admin", "a high-risk approval waits for your sign-off"),
        ("author", "approval signed off"),
        ("author", "approval signed off"),
        ("author", "released"),
    ]
    link = f"Open it here: {BASE_URL}/requests/{submission.pk}/"
    assert all(link in body for _, _, body in mails), mails


def _approve_sign_off_release(submission, checkers, admin) -> None:
    submission.refresh_from_db()
    run = current_run(submission)
    assert run.report["verdict"]["risk"] == "high"
    for checker in checkers:
        review_submit(
            submission=submission,
            run_id=run.id,
            reviewer=checker,
            decision=Decision.APPROVE,
            reason="Served behind an endpoint only.",
            evidence=finding_sources(run)[:1],
            justification="The endpoint hides the scores.",
        )
    for pending in pending_sign_offs(submission):
        review_sign_off(review=pending, admin=admin, reason="Endpoint reviewed.")
    submission_release(submission=submission, by=submission.author)
    assert submission.status == Status.RELEASED
