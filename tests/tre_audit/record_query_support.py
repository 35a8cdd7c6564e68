"""A request audited for real (the teaching example, four shadows) to ask records of.

The report comes from a real small audit, run once per session in this process, so
its features, classes, seed and pool size are the ones the record query retrains from.
"""

from __future__ import annotations

import json

import pytest

from attacks.audit import AuditConfig, Upload, audit_uploads
from attacks.datasets import FAMOUS_PATIENT
from attacks.policy import load_policy
from tests import factories
from tests.factories import REPORT_PDF
from tre_audit.reviews.enums import Role
from tre_audit.submissions.enums import FileRole, RunStatus, Status
from tre_audit.submissions.models import AuditRun, Submission, SubmissionFile
from tre_audit.submissions.services import file_store, submission_set_status

#: Two pool attacks and the teaching example's own, four shadows: seconds, not minutes.
QUERY_AUDIT = AuditConfig(
    n_shadow_models=4, attacks=("lira", "rmia", "shadow"), sweep=False, n_jobs=1
)
#: A record that is not one of the example's rows (with its label).
STRANGER = {**FAMOUS_PATIENT, "age": 21, "bmi_group": 1, "response": 1}


@pytest.fixture(scope="session")
def example_report(example_files):
    return audit_uploads(
        **example_files, label="response", policy=load_policy(), config=QUERY_AUDIT
    )


@pytest.fixture
def record_audit(example_files, example_report, settings):
    """(submission, run): the teaching example awaiting review, its real report attached.
    The service audits with the report's pool attacks only, in one process."""
    settings.TRE_AUDIT_JOBS = 1
    author = factories.create_user("author", Role.RESEARCHER)
    member = factories.create_user("member", Role.RESEARCHER)
    submission = Submission.objects.create(
        title="Famous patient", author=author, label="response", files_are_exact=True
    )
    submission_project(submission, member)
    for role in (FileRole.MODEL, FileRole.TRAIN, FileRole.TEST):
        upload = example_files[role]
        SubmissionFile.objects.create(
            submission=submission, role=role, name=upload.name, stored=file_store(data=upload.data)
        )
    submission_set_status(submission=submission, to=Status.AUDITING, by=None, reason="test")
    run = AuditRun.objects.create(
        submission=submission,
        status=RunStatus.DONE,
        progress=1.0,
        report=example_report,
        risk=example_report["verdict"]["risk"],
        report_pdf=file_store(data=REPORT_PDF),
    )
    submission_set_status(submission=submission, to=Status.AWAITING_REVIEW, by=None)
    return submission, run


def submission_project(submission: Submission, member) -> None:
    """Put the request in a project with ``member``, who can see it but not ask."""
    from tre_audit.submissions.models import Project

    project = Project.objects.create(name="Famous")
    project.members.add(submission.author, member)
    submission.project = project
    submission.save(update_fields=["project"])


def json_record(row: dict, name: str = "row.json") -> Upload:
    return Upload(name=name, data=json.dumps(row).encode())


def csv_record(rows: list[dict], name: str = "row.csv") -> Upload:
    header = ",".join(rows[0])
    lines = [",".join(str(v) for v in row.values()) for row in rows]
    return Upload(name=name, data="\n".join([header, *lines, ""]).encode())
