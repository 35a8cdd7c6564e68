"""Neural networks through the service: an ONNX file and its declared architecture and
recipe are checked, stored with their version and audited in this process (the fan-out's
shadow tasks: test_audit_fanout.py)."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from attacks import reading
from attacks.audit import AuditConfig, Upload
from attacks.nn.declared import NOT_ONNX
from attacks.shadows import NO_TRAINING_RECIPE
from tests import factories
from tests.nn_support import MLP_LABEL, recipe_changed
from tests.safe_model.onnx_models import sklearn_onnx
from tre_audit.submissions.enums import FileRole, RunStatus, Status
from tre_audit.submissions.exceptions import UploadRefused
from tre_audit.submissions.models import StoredFile, Submission
from tre_audit.submissions.selectors import declaration_changes, version_rows
from tre_audit.submissions.services import (
    audit_run_execute,
    file_read,
    submission_create,
    submission_new_version,
    version_uploads,
)

pytestmark = pytest.mark.django_db
FAST = AuditConfig(n_shadow_models=4, n_jobs=1, sweep=False)
POOL_ATTACKS = ("shadow", "lira", "lira_offline", "rmia")


def network(files: dict[str, Upload], **changes) -> dict[str, Upload]:
    """The MLP's uploads by the services' names (the declaration is ``architecture``)."""
    named = {"model": files["model"], "train": files["train"], "test": files["test"]}
    return named | {"architecture": files["declaration"]} | changes


def _create(files: dict[str, Upload], label: str = MLP_LABEL) -> Submission:
    return submission_create(
        author=factories.create_user(role="researcher"),
        declaration=factories.EXACT,
        title="Breast-cancer MLP",
        label=label,
        **files,
    )


def _regression_onnx(mlp_files) -> Upload:
    """A logistic regression on the MLP's members, exported by skl2onnx (probabilities out)."""
    train = np.genfromtxt(mlp_files["train"].data.splitlines(), delimiter=",", skip_header=1)
    model = LogisticRegression(max_iter=500).fit(train[:, :-1], train[:, -1].astype(int))
    return Upload("model.onnx", sklearn_onnx(model, train[:, :-1]))


def test_a_network_and_its_declaration_are_stored_and_audited_with_its_recipe(mlp_files):
    submission = _create(network(mlp_files))
    stored = {f.role: f for f in submission.files.all()}
    assert set(stored) == {FileRole.MODEL, FileRole.DECLARATION, FileRole.TRAIN, FileRole.TEST}
    declaration = stored[FileRole.DECLARATION]
    assert file_read(stored=declaration.stored) == mlp_files["declaration"].data
    assert declaration.name == "declaration.json"

    run = audit_run_execute(run=submission.runs.get(), config=FAST)
    assert run.status == RunStatus.DONE, run.error
    attacks = {a["name"]: a for a in run.report["attacks"]}
    assert all(attacks[name]["error"] is None for name in POOL_ATTACKS), attacks
    assert run.report["model"]["declaration"]["recipe"]["epochs"] == 20
    inputs = {i["role"]: i["sha256"] for i in run.report["inputs"]}
    assert inputs["declaration"] == declaration.stored_id
    submission.refresh_from_db()
    assert submission.status == Status.AWAITING_REVIEW


def test_a_declaration_with_a_skops_model_is_refused_and_nothing_is_stored(
    example_files, mlp_files
):
    with pytest.raises(UploadRefused, match=NOT_ONNX.split(";")[0]):
        _create({**example_files, "architecture": mlp_files["declaration"]}, label="response")
    assert not Submission.objects.exists() and not StoredFile.objects.exists()


def test_an_onnx_model_without_a_declaration_is_audited_by_the_attacks_needing_no_shadows(
    mlp_files,
):
    """A scikit-learn model exported to ONNX: nothing to declare, nothing to retrain."""
    submission = _create(network(mlp_files, model=_regression_onnx(mlp_files), architecture=None))
    assert FileRole.DECLARATION not in set(submission.files.values_list("role", flat=True))

    run = audit_run_execute(run=submission.runs.get(), config=FAST)
    errors = {a["name"]: a["error"] for a in run.report["attacks"]}
    assert errors.pop("worst_case") is None
    assert set(errors.values()) == {NO_TRAINING_RECIPE}
    assert run.report["shadow_rounds"]["stopped"] == NO_TRAINING_RECIPE
    assert reading.summary(run.report).verdict.startswith(reading.INCOMPLETE_VERDICT)


def test_a_new_version_can_change_the_declaration_or_go_without(mlp_files):
    submission = _create(network(mlp_files))
    factories.complete_audit(submission)
    lighter = recipe_changed(mlp_files["declaration"], epochs=10)
    submission_new_version(
        submission=submission,
        by=submission.author,
        note="fewer epochs",
        **network(mlp_files, architecture=lighter),
    )
    assert version_uploads(submission=submission, version=2)["declaration"] == lighter
    assert declaration_changes(submission=submission) == [FileRole.DECLARATION.label]
    first = version_uploads(submission=submission, version=1)["declaration"]
    assert first == mlp_files["declaration"]  # the earlier version keeps its own

    factories.complete_audit(submission)
    submission_new_version(
        submission=submission,
        by=submission.author,
        note="no declaration",
        **network(mlp_files, model=_regression_onnx(mlp_files), architecture=None),
    )
    assert "declaration" not in version_uploads(submission=submission, version=3)
    assert declaration_changes(submission=submission) == [FileRole.DECLARATION.label]  # dropped
    assert [row["changed"] for row in version_rows(submission=submission)] == [
        [FileRole.DECLARATION.label],
        [FileRole.DECLARATION.label],
        [],
    ]
