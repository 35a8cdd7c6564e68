"""An ONNX network audited with its declaration: the declared recipe trains the shadow
models, so LiRA, RMIA and the shadow-model attack run as for a scikit-learn model."""

from __future__ import annotations

import json

import pytest

from attacks.audit import AuditConfig, Upload
from attacks.exceptions import IntakeError
from attacks.nn.declared import NOT_ONNX
from attacks.policy import load_policy
from attacks.sandboxed import uploads_audit, uploads_check

POOL_ATTACKS = ("shadow", "lira", "lira_offline", "rmia")


@pytest.fixture
def mlp(mlp_files):
    """The breast-cancer MLP as a researcher uploads it, with a lighter recipe (the
    audit trains it again for every shadow): tests/nn_support.py."""
    return mlp_files


def _audit(uploads, **config):
    return uploads_audit(
        **uploads,
        label="label",
        policy=load_policy(),
        config=AuditConfig(n_shadow_models=4, random_state=0, n_jobs=1, sweep=False, **config),
    )


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
