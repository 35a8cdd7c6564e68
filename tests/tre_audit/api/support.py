"""State and clients for the API tests, built through the services."""

from __future__ import annotations

import socket

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from knox.models import AuthToken
from rest_framework.test import APIClient

from attacks.audit import AuditConfig
from tests import factories
from tre_audit.reviews.enums import Decision, Role
from tre_audit.reviews.services import finding_sources, review_sign_off, review_submit
from tre_audit.submissions.models import Project, Submission
from tre_audit.submissions.selectors import current_run
from tre_audit.submissions.services import audit_run_execute, submission_create

#: A real but small audit: one attack, four shadow models, no sweep (about a second).
SMALL_AUDIT = AuditConfig(n_shadow_models=4, attacks=("shadow",), sweep=False, n_jobs=1)


def client_for(user) -> APIClient:
    """A client that sends ``user``'s API token, as a script would; anonymous for None."""
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user=user)[1]}")
    return client


def multipart_files(example_files) -> dict:
    return {
        role: SimpleUploadedFile(upload.name, upload.data) for role, upload in example_files.items()
    }


def submit_data(example_files, **overrides) -> dict:
    """A complete, valid submission form."""
    return {
        "title": "SVC on the famous-patient data",
        "label": "response",
        "model_type": "SVC",
        "preprocessing": "none",
        "purpose": "teaching",
        "hosting": "public_file",
        "files_are_exact": "true",
        **multipart_files(example_files),
        **overrides,
    }


def audited(example_files, author, project: Project | None = None) -> Submission:
    """Submitted and really audited: awaiting review, with report.json and report.pdf."""
    submission = submission_create(
        author=author,
        title="SVC",
        label="response",
        project=project,
        declaration=factories.EXACT,
        **example_files,
    )
    audit_run_execute(run=submission.runs.get(), config=SMALL_AUDIT)
    submission.refresh_from_db()
    return submission


def approved(example_files, author, checkers, admin) -> Submission:
    """Audited, approved by two checkers and (the verdict being high) signed off by an admin."""
    submission = audited(example_files, author)
    run = submission.runs.get()
    for checker in checkers:
        review = review_submit(
            submission=submission,
            run_id=current_run(submission).id,
            reviewer=checker,
            decision=Decision.APPROVE,
            reason="fine",
            evidence=finding_sources(run)[:1],
            justification="the SVC is only published behind a query service",
        )
        review_sign_off(review=review, admin=admin, reason="agreed")
    submission.refresh_from_db()
    return submission


class World:
    """One user per role the permission matrix checks."""

    def __init__(self):
        self.author = factories.create_user("author", Role.RESEARCHER)
        self.other = factories.create_user("other", Role.RESEARCHER)
        self.member = factories.create_user("member", Role.RESEARCHER)
        self.checker = factories.create_user("checker", Role.CHECKER)
        self.checker2 = factories.create_user("checker2", Role.CHECKER)
        self.admin = factories.create_user("admin", Role.TRE_ADMIN)
        self.project = Project.objects.create(name="cohort study")
        self.project.members.add(self.author, self.member)

    def user(self, role: str):
        return None if role == "anonymous" else getattr(self, role)

    def at(self, status, risk: str = "low") -> Submission:
        """A request of the author's, in the project, walked to ``status``."""
        submission = factories.create_submission_at_status(status, author=self.author, risk=risk)
        submission.project = self.project
        submission.save(update_fields=["project"])
        return submission


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reset_broker_pools(app) -> None:
    """Celery caches its connection pools by URL: drop them so a new URL takes effect."""
    app._pool = None
    app.amqp._producer_pool = None


def sending_app():
    """The app the audit task is sent through: Celery's current app (a shared_task)."""
    from tre_audit.submissions.tasks import audit_run_execute_task

    return audit_run_execute_task.app


@pytest.fixture
def broker_down(settings):
    """The broker is unreachable: enqueueing an audit fails, as in an outage."""
    app = sending_app()
    url, previous = f"redis://127.0.0.1:{closed_port()}/0", app.conf.broker_url
    settings.CELERY_BROKER_URL = url
    app.conf.broker_url = url
    _reset_broker_pools(app)
    yield url
    app.conf.broker_url = previous
    _reset_broker_pools(app)
