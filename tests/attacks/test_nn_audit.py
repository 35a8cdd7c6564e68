"""An ONNX network audited with its declaration: the declared recipe trains the shadow
models, so LiRA, RMIA and the shadow-model attack run as for a scikit-learn model."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from attacks.audit import AuditConfig, Upload, audit_run, audit_uploads, target_from_uploads
from attacks.exceptions import IntakeError
from attacks.nn.declared import NOT_ONNX
from attacks.nn.teaching import teaching_case, teaching_model, teaching_write
from attacks.nn.torch_model import export_onnx
from attacks.policy import default_policy_text, load_policy
from attacks.reading import RISKS
from attacks.sandboxed import uploads_audit, uploads_check
from attacks.target import Target

POOL_ATTACKS = ("shadow", "lira", "lira_offline", "rmia")


@pytest.fixture
def mlp(mlp_files):
    """The breast-cancer MLP as a researcher uploads it, with a lighter recipe (the
    audit trains it again for every shadow): tests/nn_support.py."""
    return mlp_files


def _audit(uploads, **config):
    settings = {"n_shadow_models": 4, "random_state": 0, "n_jobs": 1, "sweep": False} | config
    return uploads_audit(
        **uploads, label="label", policy=load_policy(), config=AuditConfig(**settings)
    )


def _csv(name, X, y) -> Upload:
    return Upload(name, X.assign(label=y).to_csv(index=False).encode())


def test_the_declared_recipe_trains_the_shadows_and_every_attack_runs(mlp):
    report = _audit(mlp)

    attacks = {a["name"]: a for a in report["attacks"]}
    for name in POOL_ATTACKS:
        assert attacks[name]["error"] is None, attacks[name]["error"]
        assert 0.0 <= attacks[name]["auc"] <= 1.0
    declared = report["model"]["declaration"]
    assert declared["input_shape"] == [30] and declared["recipe"]["epochs"] == 20
    assert [layer["type"] for layer in declared["architecture"]] == ["Linear", "ReLU", "Linear"]
    assert "declaration" in {i["role"] for i in report["inputs"]}


def test_the_same_seed_gives_the_same_attack_scores(mlp):
    first, second = (_audit(mlp) for _ in range(2))
    assert [a["auc"] for a in first["attacks"]] == [a["auc"] for a in second["attacks"]]
    assert first["most_exposed"] == second["most_exposed"]


def test_a_declaration_whose_layers_differ_from_the_file_is_refused_naming_the_layer(mlp):
    declared = json.loads(mlp["declaration"].data)
    declared["architecture"][0]["out_features"] = 32
    declared["architecture"][2]["in_features"] = 32
    wrong = {**mlp, "declaration": Upload("declaration.json", json.dumps(declared).encode())}
    sentence = r"^architecture\[0\] \(Linear\) declares weight 32x30, the ONNX file has 16x30\.$"
    with pytest.raises(IntakeError, match=sentence):
        uploads_check(**wrong, label="label")


def test_a_declaration_with_a_skops_model_is_refused(mlp, example_files):
    files = {**example_files, "declaration": mlp["declaration"]}
    with pytest.raises(IntakeError, match=NOT_ONNX.split(";")[0]):
        uploads_check(**files, label="response")


def test_a_recipe_beyond_the_policys_epochs_is_refused_naming_the_cap(mlp):
    declared = json.loads(mlp["declaration"].data)
    declared["recipe"]["epochs"] = 10**6
    greedy = {**mlp, "declaration": Upload("declaration.json", json.dumps(declared).encode())}
    cap = load_policy().sections["neural_networks"]["max_epochs"]
    with pytest.raises(IntakeError, match=rf"epochs.*{cap}"):
        uploads_check(**greedy, label="label")


def test_a_policy_sets_the_caps_a_recipe_is_held_to(mlp):
    text = default_policy_text().replace("max_epochs = 500", "max_epochs = 10")
    with pytest.raises(IntakeError, match=r"epochs.*10\b"):
        uploads_check(**mlp, label="label", policy=load_policy(text))  # it asks for 20
    uploads_check(**mlp, label="label")  # within the default's 500


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The over-trained and the regularised digits CNNs, as a researcher uploads them."""
    out = {}
    for name in ("digits_cnn_overfit", "digits_cnn_regularised"):
        paths = teaching_write(name, tmp_path_factory.mktemp(name))
        out[name] = {role: Upload(p.name, p.read_bytes()) for role, p in paths.items()}
    return out


def test_the_over_trained_cnn_is_found_high_and_the_regularised_one_lower(digits):
    reports = {
        name: _audit(uploads, n_shadow_models=8, n_jobs=2) for name, uploads in digits.items()
    }
    risks = {name: report["verdict"]["risk"] for name, report in reports.items()}
    strongest = {
        name: max(a["auc"] for a in report["attacks"] if a["auc"] is not None)
        for name, report in reports.items()
    }
    assert risks["digits_cnn_overfit"] == "high", reports["digits_cnn_overfit"]["verdict"]
    assert RISKS.index(risks["digits_cnn_regularised"]) < RISKS.index("high")
    assert strongest["digits_cnn_regularised"] < strongest["digits_cnn_overfit"]


def test_the_onnx_file_loses_nothing_against_the_in_memory_network():
    """LiRA and RMIA on the ONNX file agree, within their 95% intervals, with the same
    attacks on the PyTorch network it was exported from (the shadows are the same)."""
    case = teaching_case("breast_cancer_mlp")
    case.declaration["recipe"]["epochs"] = 20
    network = teaching_model(case)
    config = AuditConfig(n_shadow_models=4, random_state=0, n_jobs=1, sweep=False)
    in_memory = audit_run(
        Target(network, case.X_train, case.y_train, case.X_test, case.y_test),
        config=config,
        policy=load_policy(),
    )
    declared = Upload("declaration.json", json.dumps(case.declaration).encode())
    from_file = audit_uploads(
        model=Upload("model.onnx", export_onnx(network)),
        train=Upload(
            "train.csv", case.X_train.assign(label=case.y_train).to_csv(index=False).encode()
        ),
        test=Upload("test.csv", case.X_test.assign(label=case.y_test).to_csv(index=False).encode()),
        declaration=declared,
        label="label",
        policy=load_policy(),
        config=config,
    )
    ours = {a["name"]: a for a in in_memory["attacks"]}
    for attack in from_file["attacks"]:
        if attack["name"] in ("lira", "lira_offline", "rmia"):
            low, high = ours[attack["name"]]["auc_ci"]
            assert low <= attack["auc"] <= high, attack["name"]
            low, high = attack["auc_ci"]
            assert low <= ours[attack["name"]]["auc"] <= high, attack["name"]


def test_image_arrays_are_normalised_as_the_declaration_says(digits):
    """The digits as an npz of raw 0..16 pixels with ``scale`` 1/16 declared make the
    same inputs as the CSV of scaled pixels."""
    uploads = digits["digits_cnn_overfit"]
    declared = json.loads(uploads["declaration"].data)
    declared["preprocessing"] = {"scale": 0.0625}
    arrays = {}
    for role in ("train", "test"):
        table = pd.read_csv(io.BytesIO(uploads[role].data))
        pixels = (table.drop(columns="label").to_numpy() * 16).round().astype(np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, X=pixels.reshape(-1, 1, 8, 8), y=table["label"].to_numpy())
        arrays[role] = Upload(f"{role}.npz", buffer.getvalue())
    as_arrays = target_from_uploads(
        model=uploads["model"],
        **arrays,
        label="y",
        declaration=Upload("declaration.json", json.dumps(declared).encode()),
    )
    as_csv = target_from_uploads(**uploads, label="label")
    assert as_arrays.feature_names[:2] == ["pixel_0_0_0", "pixel_0_0_1"]
    np.testing.assert_allclose(as_arrays.X_train.to_numpy(), as_csv.X_train.to_numpy(), atol=1e-6)
    np.testing.assert_array_equal(as_arrays.y_test, as_csv.y_test)
