"""Build state through the services, so a test cannot reach a state the app cannot."""

from __future__ import annotations

import itertools
from contextlib import contextmanager

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.urls import reverse

from tre_audit.reviews.enums import Decision, ReleaseCondition, Role
from tre_audit.reviews.services import (
    pending_sign_offs,
    review_sign_off,
    review_submit,
    submission_release,
)
from tre_audit.submissions.enums import FileRole, RunStatus, Status
from tre_audit.submissions.models import AuditRun, Project, Submission, SubmissionFile
from tre_audit.submissions.selectors import current_run
from tre_audit.submissions.services import Declaration, file_store, submission_set_status

_names = itertools.count()

#: The declaration every real submission carries (the web form and the API require it).
EXACT = Declaration(files_are_exact=True)

#: A path of allowed transitions from SUBMITTED to each status.
PATHS = {
    Status.SUBMITTED: [],
    Status.AUDITING: [Status.AUDITING],
    Status.AUDIT_FAILED: [Status.AUDITING, Status.AUDIT_FAILED],
    Status.AWAITING_REVIEW: [Status.AUDITING, Status.AWAITING_REVIEW],
    Status.CHANGES_REQUESTED: [Status.AUDITING, Status.AWAITING_REVIEW, Status.CHANGES_REQUESTED],
    Status.APPROVED: [Status.AUDITING, Status.AWAITING_REVIEW, Status.APPROVED],
    Status.REJECTED: [Status.AUDITING, Status.AWAITING_REVIEW, Status.REJECTED],
    Status.WITHDRAWN: [Status.WITHDRAWN],
    Status.RELEASED: [Status.AUDITING, Status.AWAITING_REVIEW, Status.APPROVED, Status.RELEASED],
}


def create_user(username: str | None = None, role: str | None = None):
    name = username or f"user{next(_names)}"
    user = get_user_model().objects.create_user(name, email=f"{name}@tre.example", password="pw")
    if role is not None:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def create_submission_at_status(
    status: Status, author=None, risk: str = "low", title: str = "A model"
) -> Submission:
    """A request walked to ``status``; from AUDITING on, it has a finished audit of ``risk``."""
    submission = Submission.objects.create(title=title, author=author or create_user())
    for step in PATHS[status]:
        if step == Status.AWAITING_REVIEW:
            AuditRun.objects.create(
                submission=submission,
                status=RunStatus.DONE,
                progress=1.0,
                report={"verdict": {"risk": risk, "reasons": []}},
                risk=risk,
            )
        submission_set_status(submission=submission, to=step, by=None, reason="test")
    return submission


# Audited requests with a realistic report ----------------------------------------------

#: Stands in for the report PDF: release bundles and downloads copy its bytes unread.
REPORT_PDF = b"%PDF-1.4\n% tre-audit test report\n1 0 obj << >> endobj\n%%EOF\n"

#: The findings of ``realistic_report``: what a review may cite as evidence.
FINDINGS = ["attack:lira", "attack:rmia", "attack:shadow", "record", "rule:min_leaf_records"]

_FILE_NAMES = {"model": "forest.skops", "train": "train.csv", "test": "test.csv"}

#: Statuses reached by checkers' decisions after the audit, not by the audit itself.
_DECIDED = {Status.APPROVED, Status.RELEASED, Status.CHANGES_REQUESTED, Status.REJECTED}


def realistic_report(risk: str = "medium") -> dict:
    """A report shaped as the audit writes it: attacks (one failed), a rule, and a verdict
    whose reasons cite them by source, one of them ("record") only in the verdict."""
    return {
        "schema_version": "1.0",
        "verdict": {
            "risk": risk,
            "summary": f"{risk.capitalize()} risk: members are told apart from non-members.",
            "reasons": [
                {
                    "risk": risk,
                    "source": "attack:lira",
                    "title": "LiRA (online)",
                    "text": "AUC 0.712 (95% CI 0.690 to 0.734).",
                },
                {
                    "risk": risk,
                    "source": "rule:min_leaf_records",
                    "title": "Leaves can hold one record",
                    "text": "min_samples_leaf=1.",
                },
                {
                    "risk": "medium",
                    "source": "record",
                    "title": "The queried record",
                    "text": "A member with probability 0.81.",
                },
            ],
        },
        "attacks": [
            _attack_entry("lira", "LiRA (online)", 0.712),
            _attack_entry("rmia", "RMIA", 0.655),
            {
                **_attack_entry("shadow", "Shadow model (Shokri)", None),
                "error": "Shadow models did not converge on the population data.",
            },
        ],
        "rules": [
            {
                "rule": "min_leaf_records",
                "title": "Leaves can hold one record",
                "risk": risk,
                "reason": "min_samples_leaf=1 lets a leaf hold a single training record.",
            }
        ],
    }


def _attack_entry(name: str, title: str, auc: float | None) -> dict:
    ran = auc is not None
    return {
        "name": name,
        "title": title,
        "auc": auc,
        "auc_ci": [auc - 0.022, auc + 0.022] if ran else None,
        "tpr_at_fpr": {"0.001": None, "0.01": 0.041 if ran else None, "0.1": 0.27 if ran else None},
        "advantage": round(2 * auc - 1, 3) if ran else None,
        "error": None,
    }


def create_audited_submission(
    status: Status = Status.AWAITING_REVIEW,
    author=None,
    risk: str = "medium",
    project=None,
    condition: str = ReleaseCondition.AS_FILE,
    model_bytes: bytes | None = None,
    declaration_bytes: bytes | None = None,
) -> Submission:
    """A request with stored files whose DONE run holds ``realistic_report(risk)`` and a PDF
    (and, given ``declaration_bytes``, a network's declaration among its files).

    It is walked to AWAITING_REVIEW like ``create_submission_at_status``; the decisions
    after that are made through the review services by fresh checkers (two approvals
    with ``condition``, an admin's sign-off when the risk is high, and the author's
    release), so an APPROVED or RELEASED request is one the app could have made.
    """
    submission = Submission.objects.create(
        title="Readmission forest",
        author=author or create_user(role=Role.RESEARCHER),
        label="response",
        project=project,
        files_are_exact=True,
    )
    for role, name in _FILE_NAMES.items():
        data = f"{role} of request {submission.pk}".encode()
        if role == FileRole.MODEL and model_bytes is not None:
            data = model_bytes  # a real model, for tests that serve it
        SubmissionFile.objects.create(
            submission=submission, role=role, name=name, stored=file_store(data=data)
        )
    if declaration_bytes is not None:
        SubmissionFile.objects.create(
            submission=submission,
            role=FileRole.DECLARATION,
            name="declaration.json",
            stored=file_store(data=declaration_bytes),
        )
    for step in PATHS[Status.AWAITING_REVIEW if status in _DECIDED else status]:
        _audit_step(submission, step, risk)
        submission_set_status(submission=submission, to=step, by=None, reason="test")
    _decide(submission, status, condition, risk)
    submission.refresh_from_db()
    return submission


def _audit_step(submission: Submission, step: Status, risk: str) -> None:
    if step == Status.AWAITING_REVIEW:
        AuditRun.objects.create(
            submission=submission,
            version=submission.version,
            status=RunStatus.DONE,
            stage="done",
            progress=1.0,
            attempts=1,
            report=realistic_report(risk),
            risk=risk,
            report_pdf=file_store(data=REPORT_PDF),
        )
    if step == Status.AUDIT_FAILED:
        AuditRun.objects.create(
            submission=submission,
            version=submission.version,
            status=RunStatus.FAILED,
            attempts=1,
            error="The model file is not a skops file: it is not a zip archive.",
        )


def _decide(submission: Submission, status: Status, condition: str, risk: str) -> None:
    def review(decision, **extra):
        review_submit(
            submission=submission,
            run_id=current_run(submission).id,
            reviewer=create_user(role=Role.CHECKER),
            decision=decision,
            reason="Judged on the attacks and the leaf rule.",
            evidence=["attack:lira", "rule:min_leaf_records"],
            **extra,
        )

    if status == Status.CHANGES_REQUESTED:
        review(Decision.REQUEST_CHANGES, comment="Set min_samples_leaf to 20.")
    if status == Status.REJECTED:
        review(Decision.REJECT)
    if status not in (Status.APPROVED, Status.RELEASED):
        return
    justification = "Served behind the endpoint." if risk == "high" else ""
    for _ in range(2):
        review(Decision.APPROVE, justification=justification, condition=condition)
    if status == Status.RELEASED:
        admin = create_user(role=Role.TRE_ADMIN)
        for pending in pending_sign_offs(submission):
            review_sign_off(review=pending, admin=admin, reason="Endpoint reviewed.")
        submission_release(submission=submission, by=submission.author)


#: A broker address nothing listens on (port 1 is never a Redis).
CLOSED_BROKER = "redis://127.0.0.1:1/0"


@contextmanager
def broker_unreachable():
    """Point the Celery app at a closed port, as when Redis is down; restored on exit.

    The app is the one the audit task is sent through (Celery's current app, which a
    test creating its own Celery app replaces). It caches its pools on first use, so
    those are dropped too: the task is really sent to the closed port, and fails like
    it. (kombu keeps the pools of the closed address; they hold no open socket.)
    """
    from tre_audit.submissions.tasks import audit_run_execute_task

    app = audit_run_execute_task.app
    saved = app.conf.broker_url, app._pool, app.amqp._producer_pool
    app.conf.broker_url = CLOSED_BROKER
    app._pool = app.amqp._producer_pool = None
    try:
        yield
    finally:
        app.conf.broker_url, app._pool, app.amqp._producer_pool = saved


def complete_audit(submission: Submission, risk: str = "medium") -> AuditRun:
    """Finish the queued run of the current version as the audit would (AWAITING_REVIEW)."""
    submission.refresh_from_db()
    run = submission.runs.get(version=submission.version, status=RunStatus.QUEUED)
    submission_set_status(submission=submission, to=Status.AUDITING, by=None, reason="test")
    AuditRun.objects.filter(pk=run.pk).update(
        status=RunStatus.DONE,
        stage="done",
        progress=1.0,
        attempts=1,
        report=realistic_report(risk),
        risk=risk,
        report_pdf=file_store(data=REPORT_PDF),
    )
    submission_set_status(submission=submission, to=Status.AWAITING_REVIEW, by=None)
    run.refresh_from_db()
    return run


# Permission tables -----------------------------------------------------------------

#: The people of a permission table, in the order of its columns.
ROLES = ["anonymous", "author", "other", "member", "checker", "admin"]

#: Expected instead of a status code: redirected to the login page.
LOGIN = "login"


def create_people() -> dict:
    """The author and a fellow member of project "Readmissions" (both researchers),
    another researcher, a checker and a TRE admin; "anonymous" is None."""
    author = create_user("author", Role.RESEARCHER)
    member = create_user("member", Role.RESEARCHER)
    Project.objects.create(name="Readmissions").members.add(author, member)
    return {
        "anonymous": None,
        "author": author,
        "other": create_user("other", Role.RESEARCHER),
        "member": member,
        "checker": create_user("checker", Role.CHECKER),
        "admin": create_user("admin", Role.TRE_ADMIN),
    }


def codes(*expected) -> dict:
    """One expected status code (or LOGIN) per person, in the order of ROLES."""
    return dict(zip(ROLES, expected, strict=True))


def assert_response(response, expected) -> None:
    """The response has the expected code, or is a redirect to the login page."""
    if expected == LOGIN:
        assert response.status_code == 302
        assert response.url.startswith(reverse("login") + "?next=")
    else:
        assert response.status_code == expected


#: A record value that must never reach a report, a reason or a log.
JANE = "PATIENT-Jane-Doe-1961-03-02"


def unseen_category_uploads() -> dict:
    """Issue 9's case: a one-hot pipeline whose test file holds a category it never saw
    (row 50, past the rows intake tries, so the audit itself meets it)."""
    import numpy as np
    import pandas as pd
    import skops.io
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from attacks.audit import Upload

    rng = np.random.default_rng(0)
    train = pd.DataFrame(
        {
            "site": [f"S{i % 5}" for i in range(80)],
            "age": rng.integers(20, 80, 80),
            "response": rng.integers(0, 2, 80),
        }
    )
    test = train.copy()
    test.loc[50, "site"] = JANE
    model = make_pipeline(OneHotEncoder(handle_unknown="error"), LogisticRegression())
    model.fit(train[["site", "age"]], train["response"])
    return {
        "model": Upload(name="model.skops", data=skops.io.dumps(model)),
        "train": Upload(name="train.csv", data=train.to_csv(index=False).encode()),
        "test": Upload(name="test.csv", data=test.to_csv(index=False).encode()),
    }
