"""A new version through the API: its files, its note and the declaration it changes."""

from __future__ import annotations

import pytest

from tests.tre_audit.api.support import client_for, multipart_files
from tre_audit.submissions.enums import Status
from tre_audit.submissions.models import AuditEntry, SubmissionVersion
from tre_audit.submissions.services import (
    Declaration,
    audit_run_fail,
    submission_create,
    submission_set_status,
)

API = "/api/v1"


@pytest.fixture
def failed(world, example_files):
    """The author's request, sent through the service, whose audit failed."""
    submission = submission_create(
        author=world.author,
        title="SVC",
        label="response",
        project=world.project,
        declaration=Declaration(purpose="Teaching", files_are_exact=True),
        **example_files,
    )
    submission_set_status(submission=submission, to=Status.AUDITING, by=None)
    audit_run_fail(run=submission.runs.get(), error="the worker ran out of memory")
    submission.refresh_from_db()
    return submission


def post_version(world, submission, example_files, **fields):
    return client_for(world.author).post(
        f"{API}/requests/{submission.pk}/versions/",
        {"note": "query service only", **fields, **multipart_files(example_files)},
        format="multipart",
    )


def test_a_new_version_changes_the_declaration_it_sends(world, failed, example_files):
    response = post_version(
        world, failed, example_files, purpose="Teaching and a paper", hosting="query_only"
    )
    assert response.status_code == 201
    body = response.json()
    assert (body["version"], body["purpose"], body["hosting"]) == (
        2,
        "Teaching and a paper",
        "query_only",
    )
    assert body["label"] == "response"  # not sent: kept
    records = SubmissionVersion.objects.filter(submission=failed).order_by("number")
    assert [(r.number, r.purpose, r.hosting, r.note) for r in records] == [
        (1, "Teaching", "public_file", ""),
        (2, "Teaching and a paper", "query_only", "query service only"),
    ]
    entry = AuditEntry.objects.filter(submission=failed, action="status").last()
    assert entry.reason.endswith("(declaration changed: purpose, hosting)")


def test_a_new_version_without_declaration_fields_keeps_the_declaration(
    world, failed, example_files
):
    response = post_version(world, failed, example_files)
    assert response.status_code == 201
    assert response.json()["purpose"] == "Teaching"
    entry = AuditEntry.objects.filter(submission=failed, action="status").last()
    assert entry.reason == "version 2: query service only"


def test_an_unknown_hosting_is_refused_in_one_sentence(world, failed, example_files):
    response = post_version(world, failed, example_files, hosting="the cloud")
    assert response.status_code == 400
    assert "hosting" in response.json()["errors"]
    failed.refresh_from_db()
    assert (failed.version, failed.hosting) == (1, "public_file")
    assert SubmissionVersion.objects.filter(submission=failed).count() == 1
