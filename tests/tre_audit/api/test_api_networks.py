"""An ONNX network and its declaration through the API: submitted, refused with a
skops model, and changed by a new version."""

from __future__ import annotations

import pytest

from attacks.nn.declared import NOT_ONNX
from tests.nn_support import MLP_LABEL, recipe_changed
from tests.tre_audit.api.support import client_for, multipart_files, submit_data
from tre_audit.submissions.enums import FileRole, RunStatus
from tre_audit.submissions.models import StoredFile, Submission
from tre_audit.submissions.services import audit_run_fail, submission_set_status

API = "/api/v1"


def _submit(world, files, label: str = MLP_LABEL):
    data = submit_data(files, label=label)
    return client_for(world.author).post(f"{API}/requests/", data, format="multipart")


def _declared(submission: Submission, version: int) -> str | None:
    stored = submission.files.filter(version=version, role=FileRole.DECLARATION).first()
    return stored.stored_id if stored else None


@pytest.mark.django_db
def test_a_network_is_submitted_with_its_declaration(world, mlp_files):
    response = _submit(world, mlp_files)
    assert response.status_code == 201, response.content
    submission = Submission.objects.get(pk=response.json()["id"])
    assert _declared(submission, 1) == mlp_files["declaration"].sha256
    assert submission.runs.get().status == RunStatus.QUEUED


@pytest.mark.django_db
def test_a_declaration_with_a_skops_model_is_a_400_storing_nothing(world, example_files, mlp_files):
    files = {**example_files, "declaration": mlp_files["declaration"]}
    response = _submit(world, files, label="response")
    assert response.status_code == 400
    assert response.json()["detail"].startswith(NOT_ONNX.split(";")[0])
    assert not Submission.objects.exists() and not StoredFile.objects.exists()


@pytest.mark.django_db
def test_a_new_version_sends_its_own_declaration(world, mlp_files):
    submission = Submission.objects.get(pk=_submit(world, mlp_files).json()["id"])
    submission_set_status(submission=submission, to="auditing", by=None)
    audit_run_fail(run=submission.runs.get(), error="the worker ran out of memory")
    lighter = recipe_changed(mlp_files["declaration"], epochs=10)
    response = client_for(world.author).post(
        f"{API}/requests/{submission.pk}/versions/",
        {"note": "fewer epochs", **multipart_files({**mlp_files, "declaration": lighter})},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    assert _declared(submission, 2) == lighter.sha256 != _declared(submission, 1)
