"""Tests of the ONNX intake: real exports are accepted and predict as the models they came
from; crafted and renamed files are refused with one sentence; an ONNX audit runs end to
end in the sandbox, its shadow-free attacks with it."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from attacks.audit import AuditConfig, Upload, audit_uploads
from attacks.exceptions import AttackError
from attacks.policy import load_policy
from attacks.sandboxed import uploads_audit
from attacks.shadows import NO_TRAINING_RECIPE, training_template
from safe_model import loader
from safe_model.exceptions import ModelRefused
from safe_model.loader import PICKLE_REFUSAL, model_file_problem
from safe_model.onnx_check import MAX_NODES, check_onnx_model
from safe_model.onnx_model import OnnxClassifier, classes_from_labels, load_onnx_classifier
from tests import hostile_files
from tests.intake_support import one_sentence
from tests.safe_model import onnx_models

#: float32 inference against float64 (scikit-learn) or float32 (torch) in memory.
TOLERANCE = 1e-5
MAX_BYTES = 2**24


def refusal(data: bytes, *, classes=(0, 1), output="probabilities") -> str:
    """Load ``data`` as an ONNX classifier, expect ModelRefused, return its one sentence."""
    return one_sentence(
        ModelRefused,
        load_onnx_classifier,
        data,
        classes=list(classes),
        output=output,
        max_bytes=MAX_BYTES,
    )


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    X = X / X.max(axis=0)  # on a common scale: a logistic regression converges at once
    return X.astype(np.float32)[:200], y[:200]


@pytest.fixture(scope="module")
def mlp():
    return onnx_models.torch_mlp()


# --------------------------------------------------------------------------- accepted


def test_a_torch_mlp_gives_the_in_memory_networks_probabilities(mlp, cancer):
    net, data = mlp
    X, _ = cancer
    model = load_onnx_classifier(data, classes=[0, 1], output="logits", max_bytes=MAX_BYTES)
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(X)), dim=1).numpy()
    got = model.predict_proba(pd.DataFrame(X))  # a DataFrame, as the attacks pass
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(model.predict(X), expected.argmax(axis=1))
    assert model.n_features_in_ == 30


def test_a_torch_cnn_with_a_fixed_batch_reads_flat_pixel_columns():
    net, data = onnx_models.torch_cnn()
    X = (load_digits().data[:50] / 16).astype(np.float32)  # 50 = 12 batches of 4, and 2
    model = load_onnx_classifier(
        data, classes=list(range(10)), output="logits", max_bytes=MAX_BYTES
    )
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(X.reshape(-1, 1, 8, 8))), dim=1).numpy()
    np.testing.assert_allclose(model.predict_proba(X), expected, atol=TOLERANCE)
    assert model.n_features_in_ == 64


@pytest.mark.parametrize(
    "estimator",
    [LogisticRegression(), RandomForestClassifier(n_estimators=10, random_state=0)],
    ids=["logistic", "forest"],
)
def test_a_plain_skl2onnx_export_gives_the_estimators_probabilities(estimator, cancer):
    X, y = cancer
    estimator = clone(estimator).fit(X, y)
    model = load_onnx_classifier(
        onnx_models.sklearn_onnx(estimator, X), classes=[0, 1], max_bytes=MAX_BYTES
    )
    np.testing.assert_allclose(model.predict_proba(X), estimator.predict_proba(X), atol=TOLERANCE)
    assert model.score(X, y) == pytest.approx(estimator.score(X, y))


def test_skl2onnx_text_labels_name_the_columns_in_sorted_order(cancer):
    X, y = cancer
    labels = np.array(["malignant", "benign"])[y]
    estimator = LogisticRegression().fit(X, labels)
    classes = classes_from_labels(pd.Series([*labels, None]))
    model = load_onnx_classifier(
        onnx_models.sklearn_onnx(estimator, X), classes=classes, max_bytes=MAX_BYTES
    )
    np.testing.assert_array_equal(model.classes_, estimator.classes_)
    np.testing.assert_array_equal(model.predict(X), estimator.predict(X))


def test_the_session_runs_on_cpu_with_the_threads_asked_for(mlp):
    model = OnnxClassifier(mlp[1], classes=[0, 1], output="logits", n_threads=2)
    session = model._onnx_runner().session
    assert session.get_providers() == ["CPUExecutionProvider"]
    options = session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 2)
    assert OnnxClassifier(mlp[1], classes=[0, 1]).n_threads == 1


def test_the_classifier_pickles_and_clones_as_its_bytes_not_its_session(mlp, cancer):
    X, _ = cancer
    model = load_onnx_classifier(mlp[1], classes=[0, 1], output="logits", max_bytes=MAX_BYTES)
    expected = model.predict_proba(X)
    state = model.__getstate__()
    assert "_runner" not in state and "_runner" in model.__dict__  # the live one stays
    again = pickle.loads(pickle.dumps(model))  # noqa: S301 - the test's own bytes
    np.testing.assert_array_equal(again.predict_proba(X), expected)
    np.testing.assert_array_equal(clone(model).predict_proba(X), expected)


def test_the_form_check_accepts_an_onnx_file_and_refuses_a_renamed_one(mlp):
    assert model_file_problem(mlp[1], filename="net.onnx") is None
    zipped = model_file_problem(hostile_files.skops_model(), filename="net.onnx")
    assert "is a zip archive" in zipped
    assert "not an ONNX model" in model_file_problem(b"GIF89a...", filename="net.ONNX")
    assert model_file_problem(b"\x80\x04K\x01.", filename="net.onnx") == PICKLE_REFUSAL


# --------------------------------------------------------------------------- refused


def test_a_custom_domain_operator_is_refused_naming_it():
    message = refusal(onnx_models.custom_domain_graph())
    assert "'FusedGemm'" in message and "'com.microsoft'" in message


def test_external_data_is_refused():
    message = refusal(onnx_models.external_data_graph())
    assert "external file" in message and "'w'" in message
    assert "etc" not in message  # the path it names is not repeated


@pytest.mark.parametrize("version", [8, 23])
def test_an_opset_outside_the_supported_range_is_refused(version):
    message = refusal(onnx_models.softmax_graph(opsets={"": version}))
    assert f"ai.onnx opset {version}, outside the supported 9 to 22" in message


def test_an_operator_off_the_allowlist_is_refused_by_name():
    message = refusal(onnx_models.disallowed_op_graph())
    assert message.startswith("The ONNX model uses the operator 'Tile', which is not one")


def test_too_many_nodes_are_refused_before_anything_reads_them():
    assert refusal(onnx_models.many_nodes_graph(MAX_NODES + 1)) == (
        f"The ONNX model has {MAX_NODES + 1:,} nodes, more than the limit of {MAX_NODES:,}."
    )
    check_onnx_model(onnx_models.many_nodes_graph(MAX_NODES), max_bytes=MAX_BYTES)  # at the limit


def test_functions_and_subgraphs_are_refused():
    assert "functions of its own" in refusal(onnx_models.function_graph())
    assert "'Softmax' holds a subgraph" in refusal(onnx_models.subgraph_graph())


def test_an_output_that_is_not_one_row_per_record_is_refused():
    declared = refusal(onnx_models.rank3_output_graph())
    assert "'y' has 3 dimensions" in declared
    found_running = refusal(onnx_models.pooled_output_graph())
    assert "output has shape 1 x 2 for 2 records" in found_running


def test_two_float_outputs_are_refused():
    message = refusal(onnx_models.two_outputs_graph())
    assert "2 float outputs ('y', 'z'); exactly one" in message


def test_a_class_count_other_than_the_labels_is_refused(mlp):
    message = refusal(mlp[1], classes=(0, 1, 2), output="logits")
    assert message == (
        "The ONNX model gives 2 scores per record but the training labels have 3 classes; "
        "its output needs one column per class."
    )


def test_input_dimensions_other_than_the_batch_must_be_fixed():
    assert "not fixed besides the batch" in refusal(onnx_models.free_feature_dims_graph())


def test_logits_declared_as_probabilities_are_refused_and_a_bad_kind_too(mlp):
    assert "declare the output as 'logits'" in refusal(mlp[1])
    assert "not 'scores'" in refusal(mlp[1], output="scores")


def test_a_feature_count_other_than_the_inputs_is_refused(mlp):
    model = load_onnx_classifier(mlp[1], classes=[0, 1], output="logits", max_bytes=MAX_BYTES)
    message = one_sentence(ModelRefused, model.predict_proba, np.zeros((3, 29)))
    assert "takes 30 features per record" in message


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_files_are_refused(mlp, cut):
    data = mlp[1]
    message = refusal(data[: int(len(data) * cut)])
    assert message.startswith(("The model file could not be read", "The ONNX model is not"))


def test_garbage_and_files_too_large_are_refused(mlp):
    assert "truncated or corrupt" in refusal(b"\x08\x09" + bytes(range(256)) * 4)
    assert "does not open with an ONNX model's header" in refusal(b"hello, world")
    too_large = one_sentence(
        ModelRefused, load_onnx_classifier, mlp[1], classes=[0, 1], max_bytes=100
    )
    assert "larger than the limit" in too_large


def test_a_zip_or_pickle_named_onnx_is_refused_by_the_loader(cancer):
    labels = cancer[1]
    load = loader.load_model
    zipped = one_sentence(
        ModelRefused, load, hostile_files.skops_model(), filename="m.onnx", labels=labels
    )
    assert "named .onnx but is not an ONNX model: it is a zip archive" in zipped
    pickled = pickle.dumps(LogisticRegression())
    assert one_sentence(ModelRefused, load, pickled, filename="m.onnx") == PICKLE_REFUSAL


def test_the_loader_reads_onnx_only_by_name_and_content(cancer):
    X, labels = cancer
    data = onnx_models.sklearn_onnx(LogisticRegression().fit(X, labels), X)
    assert isinstance(loader.load_model(data, filename="m.onnx", labels=labels), OnnxClassifier)
    as_skops = one_sentence(ModelRefused, loader.load_model, data, filename="m.skops")
    assert "not a skops file" in as_skops
    no_labels = one_sentence(ModelRefused, loader.load_model, data, filename="m.onnx")
    assert "training labels" in no_labels


# --------------------------------------------------------------------------- the audit


def test_shadows_of_an_onnx_model_need_its_declared_template(mlp):
    model = OnnxClassifier(mlp[1], classes=[0, 1])
    with pytest.raises(AttackError, match=NO_TRAINING_RECIPE):
        training_template(model)
    template = LogisticRegression()
    assert training_template(clone(model).set_params(shadow_template=template)) is template
    assert training_template(template) is template  # a scikit-learn model is its own


def _csv(X: np.ndarray, y: np.ndarray) -> bytes:
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])]).assign(label=y)
    return frame.to_csv(index=False).encode()


def test_an_onnx_audit_runs_in_the_sandbox_with_its_shadow_free_attacks():
    X, y = load_breast_cancer(return_X_y=True)
    _, data = onnx_models.torch_mlp(softmax=True)  # probabilities, the default declaration
    args = {
        "model": Upload("net.onnx", data),
        "train": Upload("train.csv", _csv(X[:100], y[:100])),
        "test": Upload("test.csv", _csv(X[100:200], y[100:200])),
        "label": "label",
        "policy": load_policy(),
        "config": AuditConfig(n_shadow_models=2, random_state=0, n_jobs=1),
    }
    report = uploads_audit(**args)
    attacks = {attack["name"]: attack for attack in report["attacks"]}
    assert attacks["worst_case"]["error"] is None
    assert 0.0 <= attacks["worst_case"]["auc"] <= 1.0
    for name in ("shadow", "lira", "lira_offline", "rmia"):
        assert attacks[name]["error"] == NO_TRAINING_RECIPE
    assert report["model"]["type"] == "safe_model.onnx_model.OnnxClassifier"
    assert "model_bytes" not in report["model"]["params"]  # the file is no setting
    assert "declaration" not in report["model"]
    assert report["model"]["classes"] == [0, 1]
    assert any(NO_TRAINING_RECIPE in reason["text"] for reason in report["verdict"]["reasons"])
    here = audit_uploads(**args)  # the session the child built gives this process's numbers
    assert _untimed(here) == _untimed(report)


def _untimed(report: dict) -> dict:
    return {key: value for key, value in report.items() if key != "run"}
