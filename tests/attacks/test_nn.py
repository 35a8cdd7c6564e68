"""Declared neural networks: schema, ONNX matching, the training loop, the teaching models."""

from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
import warnings

import numpy as np
import onnx
import onnxruntime
import pandas as pd
import pytest
import torch
from onnx import helper, numpy_helper
from sklearn.base import clone

from attacks.exceptions import IntakeError
from attacks.nn.matching import OnnxLayer, OnnxNetwork, check_matches_onnx, onnx_network
from attacks.nn.schema import DeclarationLimits, layer_shapes, parse_declaration
from attacks.nn.teaching import (
    CASES,
    DECLARATIONS,
    teaching_case,
    teaching_model,
    teaching_write,
)
from attacks.nn.torch_model import TorchRecipeClassifier, build_network, export_onnx
from attacks.shadows import reseeded_clone, shadow_pool_fit
from attacks.target import Target

MLP = DECLARATIONS["breast_cancer_mlp"]
CNN = DECLARATIONS["digits_cnn_regularised"]

#: Every allow-listed layer and recipe choice in one small network.
EVERY_LAYER = {
    "input_shape": [2, 6, 6],
    "output": "probabilities",
    "architecture": [
        {"type": "Conv2d", "in_channels": 2, "out_channels": 4, "kernel_size": 3, "bias": False},
        {"type": "BatchNorm2d", "num_features": 4},
        "GELU",
        {"type": "Conv2d", "in_channels": 4, "out_channels": 3, "kernel_size": 2, "stride": 1},
        "Tanh",
        {"type": "AvgPool2d", "kernel_size": 1},
        {"type": "MaxPool2d", "kernel_size": 2, "stride": 1},
        "Flatten",
        {"type": "Dropout", "p": 0.2},
        {"type": "BatchNorm1d", "num_features": 12},
        {"type": "Linear", "in_features": 12, "out_features": 5, "bias": False},
        "ReLU",
        {"type": "Linear", "in_features": 5, "out_features": 3},
    ],
    "recipe": {
        "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9},
        "epochs": 2,
        "batch_size": 8,
        "weight_decay": 0.001,
        "lr_schedule": {"type": "step", "step_size": 1, "gamma": 0.5},
        "augmentation": [
            "hflip",
            {"type": "random_crop", "padding": 1},
            {"type": "gaussian_noise", "std": 0.1},
        ],
        "seed": 3,
    },
}


def _changed(declaration: dict, change) -> dict:
    changed = copy.deepcopy(declaration)
    change(changed)
    return changed


def _refusal(data, n_classes=2, **kwargs) -> str:
    with pytest.raises(IntakeError) as caught:
        parse_declaration(data, n_classes=n_classes, **kwargs)
    return str(caught.value)


@pytest.fixture(scope="module")
def every_layer_data():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(41, 72)).astype(np.float32)  # 41: a last batch of one is skipped
    return X, rng.randint(3, size=41)


@pytest.fixture(scope="module")
def mlp_case():
    case = teaching_case("breast_cancer_mlp")
    small = _changed(case.declaration, lambda d: d["recipe"].update(epochs=5))
    return case, TorchRecipeClassifier(small).fit(case.X_train, case.y_train)


@pytest.fixture(scope="module")
def cnn_case():
    case = teaching_case("digits_cnn_regularised")
    small = _changed(case.declaration, lambda d: d["recipe"].update(epochs=3))
    return case, TorchRecipeClassifier(small).fit(case.X_train, case.y_train)


def _export_graph(classifier, **export_options):
    if not export_options:
        return onnx.load_from_string(export_onnx(classifier)).graph
    buffer = io.BytesIO()
    example = torch.zeros(1, *classifier.declaration_.input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            classifier.network_,
            (example,),
            buffer,
            dynamo=False,
            opset_version=17,
            **export_options,
        )
    return onnx.load_from_string(buffer.getvalue()).graph


# --------------------------------------------------------------------------- schema


def test_schema_imports_without_torch():
    code = (  # torch is installed here: it must simply not be imported
        "import sys\n"
        "import attacks.nn.schema, attacks.nn.matching, attacks.nn.teaching, attacks.nn.declared\n"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", CASES)
def test_teaching_declarations_parse_and_write_back(name):
    n_classes = 2 if name.startswith("breast") else 10
    declaration = parse_declaration(json.dumps(DECLARATIONS[name]), n_classes=n_classes)
    assert parse_declaration(declaration.to_dict(), n_classes=n_classes) == declaration
    assert declaration.n_classes == n_classes
    network = build_network(declaration)
    assert declaration.n_parameters == sum(p.numel() for p in network.parameters())


def test_every_layer_chains_as_torch_computes_it():
    declaration = parse_declaration(EVERY_LAYER, n_classes=3)
    x = torch.zeros(2, *declaration.input_shape)
    network = build_network(declaration).eval()
    for module, shape in zip(network, layer_shapes(declaration)):
        x = module(x)
        assert tuple(x.shape[1:]) == shape
    assert declaration.n_parameters == sum(p.numel() for p in network.parameters())


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        (
            lambda d: d["architecture"][2].update(out_features=0),
            "architecture[2].out_features must be a positive integer.",
        ),
        (
            lambda d: d["architecture"][0].update(in_features=30.0),
            "architecture[0].in_features must be a positive integer.",
        ),
        (
            lambda d: d["architecture"][0].update(bias="yes"),
            "architecture[0].bias must be true or false.",
        ),
        (
            lambda d: d["architecture"][0].update(init="zeros"),
            "architecture[0] has unknown key(s) 'init'.",
        ),
        (
            lambda d: d["architecture"].insert(1, "Softmax"),
            "architecture[1].type must be one of Linear, Conv2d, BatchNorm1d, BatchNorm2d, "
            "ReLU, GELU, Tanh, MaxPool2d, AvgPool2d, Dropout, Flatten, not 'Softmax'.",
        ),
        (
            lambda d: d["architecture"][0].pop("type"),
            "architecture[0].type is required (one of Linear, Conv2d, BatchNorm1d, "
            "BatchNorm2d, ReLU, GELU, Tanh, MaxPool2d, AvgPool2d, Dropout, Flatten).",
        ),
        (
            lambda d: d["architecture"].__setitem__(1, 7),
            'architecture[1] must be an object with a "type", or a type\'s name.',
        ),
        (
            lambda d: d["architecture"].insert(1, {"type": "Dropout", "p": 1}),
            "architecture[1].p must be a number at least 0 and below 1.",
        ),
        (lambda d: d.update(architecture={}), "architecture must be a list of layers."),
        (lambda d: d.update(architecture=[]), "architecture must list at least one layer."),
        (
            lambda d: d.update(input_shape=[8, 8]),
            "input_shape must be a list of one size (features) or three (channels, height, width).",
        ),
        (lambda d: d.update(input_shape=[0]), "input_shape[0] must be a positive integer."),
        (lambda d: d.update(output="scores"), "output must be 'logits' or 'probabilities'."),
        (lambda d: d.pop("output"), "output is required."),
        (lambda d: d.update(notes="x"), "The declaration has unknown key(s) 'notes'."),
        (lambda d: d.update(recipe=[]), "recipe must be an object."),
        (lambda d: d["recipe"].pop("epochs"), "recipe.epochs is required."),
        (lambda d: d["recipe"].update(epochs=True), "recipe.epochs must be a positive integer."),
        (
            lambda d: d["recipe"].update(batch_size=-4),
            "recipe.batch_size must be a positive integer.",
        ),
        (
            lambda d: d["recipe"].update(weight_decay=2),
            "recipe.weight_decay must be a number at least 0 and at most 1.",
        ),
        (
            lambda d: d["recipe"]["optimizer"].update(lr=0),
            "recipe.optimizer.lr must be a number above 0 and at most 10.",
        ),
        (
            lambda d: d["recipe"]["optimizer"].update(lr=10**400),
            "recipe.optimizer.lr must be a number above 0 and at most 10.",
        ),
        (
            lambda d: d["recipe"]["optimizer"].update(lr=float("inf")),
            "recipe.optimizer.lr must be a number above 0 and at most 10.",
        ),
        (
            lambda d: d["architecture"][0].update(in_features=10**400),
            "architecture[0].in_features must be at most 2147483647.",
        ),
        (
            lambda d: d["recipe"]["optimizer"].update(momentum=0.9),
            "recipe.optimizer has unknown key(s) 'momentum'.",
        ),
        (
            lambda d: d["recipe"]["optimizer"].update(betas=[0.9]),
            "recipe.optimizer.betas must be a list of two numbers.",
        ),
        (
            lambda d: d["recipe"]["optimizer"].update(betas=[0.9, 1.0]),
            "recipe.optimizer.betas[1] must be a number at least 0 and below 1.",
        ),
        (
            lambda d: d["recipe"].update(optimizer="adam"),
            "recipe.optimizer.lr is required.",
        ),
        (
            lambda d: d["recipe"].update(optimizer={"type": "lbfgs"}),
            "recipe.optimizer.type must be one of sgd, adam, adamw, not 'lbfgs'.",
        ),
        (
            lambda d: d["recipe"].update(lr_schedule={"type": "step", "step_size": 2, "gamma": 0}),
            "recipe.lr_schedule.gamma must be a number above 0 and at most 1.",
        ),
        (
            lambda d: d["recipe"].update(augmentation="none"),
            "recipe.augmentation must be a list of augmentations.",
        ),
        (
            lambda d: d["recipe"].update(augmentation=["hflip"]),
            "recipe.augmentation[0] (hflip) needs images, but input_shape is flat.",
        ),
        (
            lambda d: d["recipe"].update(seed=2**32),
            "recipe.seed must be at most 4294967295.",
        ),
    ],
)
def test_each_bad_field_is_refused_naming_its_path(change, sentence):
    assert _refusal(_changed(MLP, change)) == sentence


def test_epochs_are_capped_by_the_limits():
    huge = _changed(MLP, lambda d: d["recipe"].update(epochs=10**6))
    assert _refusal(huge) == "recipe.epochs is 1000000, above this service's cap of 1000."
    assert (
        _refusal(MLP, limits=DeclarationLimits(max_epochs=50))
        == "recipe.epochs is 100, above this service's cap of 50."
    )


@pytest.mark.parametrize(
    ("limits", "sentence"),
    [
        (
            DeclarationLimits(max_parameters=1000),
            "The architecture has 1370 parameters, above this service's cap of 1000.",
        ),
        (
            DeclarationLimits(max_layers=3),
            "architecture has 5 layers, above this service's cap of 3.",
        ),
        (
            DeclarationLimits(max_batch_size=16),
            "recipe.batch_size is 32, above this service's cap of 16.",
        ),
        (
            DeclarationLimits(max_input_values=63),
            "input_shape has 64 values per record, above this service's cap of 63.",
        ),
        (
            DeclarationLimits(max_activation_values=500),
            "architecture[0] gives 8x8x8 values per record, above this service's cap of 500.",
        ),
    ],
)
def test_each_cap_is_named(limits, sentence):
    overfit = DECLARATIONS["digits_cnn_overfit"]
    assert _refusal(overfit, n_classes=10, limits=limits) == sentence


def test_a_huge_layer_is_refused_before_anything_is_built():
    huge = _changed(MLP, lambda d: d["architecture"][0].update(out_features=10**9))
    assert _refusal(huge).startswith("The architecture has 31000000034 parameters")


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        (
            lambda d: d["architecture"][6].update(in_features=64),
            "architecture[6].in_features is 64, but architecture[5] (Dropout) gives 128 features.",
        ),
        (
            lambda d: d["architecture"].pop(4),
            "architecture[5] (Linear) needs a flat input, but architecture[4] (Dropout) gives "
            "8x4x4; put a Flatten before it.",
        ),
        (
            lambda d: d["architecture"][1].update(num_features=4),
            "architecture[1].num_features is 4, but architecture[0] (Conv2d) gives 8 channels.",
        ),
        (
            lambda d: d["architecture"][0].update(in_channels=3),
            "architecture[0].in_channels is 3, but input_shape gives 1 channel.",
        ),
        (
            lambda d: d["architecture"][0].update(kernel_size=11),
            "architecture[0].kernel_size is 11, larger than its 8x8 input with its padding.",
        ),
        (
            lambda d: d["architecture"][0].update(padding=3),
            "architecture[0].padding must be smaller than its kernel_size.",
        ),
        (
            lambda d: d["architecture"][3].update(kernel_size=9),
            "architecture[3].kernel_size is 9, larger than its 8x8 input.",
        ),
        (
            lambda d: d.update(input_shape=[64]),
            "architecture[0] (Conv2d) needs an input of channels x height x width, "
            "but input_shape gives 64.",
        ),
        (
            lambda d: d["architecture"].pop(),
            "The architecture ends with 128 outputs, but the labels hold 10 classes.",
        ),
        (
            lambda d: d["architecture"][6].update(out_features=9),
            "The architecture ends with 9 outputs, but the labels hold 10 classes.",
        ),
        (
            lambda d: d.update(architecture=d["architecture"][:4]),
            "The architecture must end in one score per class, but it gives 8x4x4; "
            "end it with a Linear layer.",
        ),
        (
            lambda d: d.update(architecture=["ReLU", "Flatten", "Tanh"]),
            "The architecture has no layer with parameters to train.",
        ),
    ],
)
def test_layers_that_do_not_chain_are_refused(change, sentence):
    assert _refusal(_changed(CNN, change), n_classes=10) == sentence


@pytest.mark.parametrize(
    ("data", "sentence"),
    [
        (
            b'{"output": "logits", "output": "probabilities"}',
            "The declaration repeats the key(s) 'output'.",
        ),
        (
            b'{"input_shape": [NaN]}',
            "The declaration holds NaN or Infinity, which JSON does not allow.",
        ),
        (b"[1, 2]", "The declaration must be one JSON object."),
        (b"\xff\xfe", "The declaration is not UTF-8 text."),
        (b'{"input_shape": ', "The declaration is not valid JSON (line 1, column 17)."),
        (b"[" * 100_000, "The declaration is not valid JSON."),
        (b"", "The declaration is empty."),
        (b" " * (2**18 + 1), "The declaration is larger than the limit of 256 KiB."),
    ],
)
def test_malformed_json_is_one_sentence(data, sentence):
    assert _refusal(data) == sentence


# --------------------------------------------------------------------------- ONNX matching


def test_the_teaching_mlp_export_matches_its_declaration(mlp_case):
    case, classifier = mlp_case
    graph = _export_graph(classifier)
    names = [t.name for t in graph.initializer]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias"]  # what the exporter names
    check_matches_onnx(classifier.declaration_, onnx_network(graph))


def test_the_cnn_with_batchnorm_matches_fused_and_unfused(cnn_case):
    case, classifier = cnn_case
    fused = _export_graph(classifier)
    assert "BatchNormalization" not in [n.op_type for n in fused.node]  # folded into the Conv
    names = [t.name for t in fused.initializer]  # the fused conv's, stored last
    assert names[:2] == ["6.weight", "6.bias"] and names[2].startswith("onnx::Conv_")
    unfused = _export_graph(classifier, do_constant_folding=False)
    assert "BatchNormalization" in [n.op_type for n in unfused.node]
    for graph in (fused, unfused):
        check_matches_onnx(classifier.declaration_, onnx_network(graph))


def test_every_layer_export_matches(every_layer_data):
    X, y = every_layer_data
    classifier = TorchRecipeClassifier(EVERY_LAYER).fit(X, y)
    graph = _export_graph(classifier)
    ops = [n.op_type for n in graph.node]
    assert "MatMul" in ops and "Erf" in ops and ops[-1] == "Softmax"
    check_matches_onnx(classifier.declaration_, onnx_network(graph))
    for options in ({"do_constant_folding": False}, {"keep_initializers_as_inputs": True}):
        check_matches_onnx(
            classifier.declaration_, onnx_network(_export_graph(classifier, **options))
        )


def test_aliased_tensors_of_an_untrained_batchnorm_are_followed():
    declaration = parse_declaration(
        _changed(
            MLP, lambda d: d["architecture"].insert(1, {"type": "BatchNorm1d", "num_features": 16})
        ),
        n_classes=2,
    )
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            build_network(declaration).eval(), (torch.zeros(1, 30),), buffer, dynamo=False
        )
    graph = onnx.load_from_string(buffer.getvalue()).graph
    assert "Identity" in [n.op_type for n in graph.node]  # running stats stored once, aliased
    check_matches_onnx(declaration, onnx_network(graph))


def _mlp_declaration(change) -> object:
    return parse_declaration(_changed(MLP, change), n_classes=2)


def _insert_hidden(d):
    d["architecture"][2:2] = [{"type": "Linear", "in_features": 16, "out_features": 16}, "ReLU"]


def _single_layer(d):
    d["architecture"] = [{"type": "Linear", "in_features": 30, "out_features": 2}]


def _image_input(d):
    d["input_shape"] = [1, 5, 6]
    d["architecture"].insert(0, "Flatten")


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        (
            lambda d: (
                d["architecture"][0].update(out_features=32),
                d["architecture"][2].update(in_features=32),
            ),
            "architecture[0] (Linear) declares weight 32x30, the ONNX file has 16x30.",
        ),
        (
            lambda d: d["architecture"][2].update(bias=False),
            "architecture[2] (Linear) declares weight, but the ONNX file's Gemm has a bias.",
        ),
        (_insert_hidden, "architecture[2] (Linear) declares weight 16x16, the ONNX file has 2x16."),
        (_single_layer, "architecture[0] (Linear) declares weight 2x30, the ONNX file has 16x30."),
        (_image_input, "input_shape is 1x5x6, but the ONNX file takes 30 per record."),
    ],
)
def test_a_mismatched_declaration_names_the_first_differing_layer(mlp_case, change, sentence):
    _, classifier = mlp_case
    network = onnx_network(_export_graph(classifier))
    with pytest.raises(IntakeError) as caught:
        check_matches_onnx(_mlp_declaration(change), network)
    assert str(caught.value) == sentence


@pytest.mark.parametrize("stored_as", ["initializer", "value", "value_floats"])
def test_weights_outside_the_declared_layers_are_refused(mlp_case, stored_as):
    _, classifier = mlp_case
    graph = onnx.load_from_string(export_onnx(classifier)).graph
    if stored_as == "initializer":
        graph.initializer.append(numpy_helper.from_array(np.ones(2, np.float32), "scale"))
    else:
        ones = np.ones(2, np.float32)
        value = numpy_helper.from_array(ones) if stored_as == "value" else ones.tolist()
        graph.node.append(helper.make_node("Constant", [], ["scale"], **{stored_as: value}))
    graph.node.append(helper.make_node("Mul", ["output", "scale"], ["scaled"]))
    with pytest.raises(IntakeError) as caught:
        check_matches_onnx(classifier.declaration_, onnx_network(graph))
    assert str(caught.value) == (
        "The ONNX file has a Mul node with weights the declaration does not list."
    )


GOOD_MLP_LAYERS = (
    OnnxLayer("Gemm", ((16, 30), (16,))),
    OnnxLayer("Gemm", ((2, 16), (2,))),
)


@pytest.mark.parametrize(
    ("network", "sentence"),
    [
        (
            OnnxNetwork(input_shape=(30,), layers=()),
            "architecture[0] (Linear) has no counterpart in the ONNX file, "
            "which has no more layers with weights.",
        ),
        (
            OnnxNetwork(input_shape=(30,), layers=(OnnxLayer("Conv", ((16, 30), (16,))),)),
            "architecture[0] (Linear) has no counterpart in the ONNX file, "
            "whose next node with weights is a Conv.",
        ),
        (
            OnnxNetwork(input_shape=(30,), layers=(OnnxLayer("Gemm", (None, (16,))),)),
            "architecture[0] (Linear): the ONNX file's Gemm computes its weight instead of "
            "storing it.",
        ),
        (
            OnnxNetwork(input_shape=(30,), layers=(OnnxLayer("Gemm", ((16, 30),)),)),
            "architecture[0] (Linear) declares weight and bias, but the ONNX file's Gemm has "
            "no bias.",
        ),
        (
            OnnxNetwork(input_shape=None, layers=GOOD_MLP_LAYERS),
            "The ONNX file has no input to check input_shape against.",
        ),
        (
            OnnxNetwork(input_shape=(None, 30), layers=GOOD_MLP_LAYERS),
            "input_shape is 30, but the ONNX file takes ?x30 per record.",
        ),
    ],
)
def test_plain_data_mismatches(network, sentence):
    with pytest.raises(IntakeError) as caught:
        check_matches_onnx(_mlp_declaration(lambda d: None), network)
    assert str(caught.value) == sentence


def test_a_symbolic_input_size_is_not_held_against_the_declaration():
    network = OnnxNetwork(input_shape=(None,), layers=GOOD_MLP_LAYERS)
    check_matches_onnx(_mlp_declaration(lambda d: None), network)


# --------------------------------------------------------------------------- training


def _torch_state():
    return (
        torch.random.get_rng_state(),
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
    )


def test_same_seed_gives_bit_identical_probabilities(every_layer_data):
    X, y = every_layer_data
    first = TorchRecipeClassifier(EVERY_LAYER, random_state=7).fit(X, y).predict_proba(X)
    again = TorchRecipeClassifier(EVERY_LAYER, random_state=7).fit(X, y).predict_proba(X)
    other = TorchRecipeClassifier(EVERY_LAYER, random_state=8).fit(X, y).predict_proba(X)
    assert first.dtype == np.float64 and first.shape == (41, 3)
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)


def test_fit_leaves_torch_as_it_found_it(every_layer_data):
    X, y = every_layer_data
    torch.manual_seed(123)
    before = _torch_state()
    TorchRecipeClassifier(EVERY_LAYER, n_threads=2).fit(X, y).predict_proba(X)
    after = _torch_state()
    assert torch.equal(before[0], after[0]) and before[1:] == after[1:]


def test_none_trains_with_the_declared_seed(mlp_case):
    case, classifier = mlp_case
    declared = clone(classifier).set_params(random_state=None).fit(case.X_train, case.y_train)
    seeded = clone(classifier).set_params(random_state=1).fit(case.X_train, case.y_train)
    assert np.array_equal(
        declared.predict_proba(case.X_test), classifier.predict_proba(case.X_test)
    )
    assert not np.array_equal(
        declared.predict_proba(case.X_test), seeded.predict_proba(case.X_test)
    )


def test_clone_and_reseeded_clone(mlp_case):
    case, classifier = mlp_case
    copy_ = clone(classifier)
    assert not hasattr(copy_, "network_") and copy_.get_params() == classifier.get_params()
    shadow = reseeded_clone(classifier, 42)
    assert shadow.random_state == 42
    twice = [reseeded_clone(classifier, 42).fit(case.X_train, case.y_train) for _ in range(2)]
    assert np.array_equal(twice[0].predict_proba(case.X_test), twice[1].predict_proba(case.X_test))


def test_shadow_pool_trains_declared_networks(mlp_case):
    case, classifier = mlp_case
    target = Target(classifier, case.X_train, case.y_train, case.X_test, case.y_test)
    pool = shadow_pool_fit(target, n_shadow_models=2, random_state=0, n_jobs=1)
    assert pool.confidences.shape == (2, len(case.y_train) + len(case.y_test))
    assert ((pool.confidences >= 0) & (pool.confidences <= 1)).all()
    assert not np.array_equal(pool.confidences[0], pool.confidences[1])  # other halves, seeds


def test_declared_classes_are_scored_even_if_a_shadow_never_sees_one(cnn_case):
    case, classifier = cnn_case
    keep = case.y_train != 3
    shadow = clone(classifier).set_params(classes=np.arange(10))
    shadow.fit(case.X_train[keep], case.y_train[keep])
    assert list(shadow.classes_) == list(range(10))
    assert shadow.predict_proba(case.X_test).shape == (len(case.y_test), 10)
    with pytest.raises(IntakeError, match="ends with 10 outputs, but the labels hold 9 classes"):
        clone(classifier).fit(case.X_train[keep], case.y_train[keep])


@pytest.mark.parametrize(
    ("declaration", "X", "sentence"),
    [
        (
            {k: v for k, v in MLP.items() if k != "recipe"},
            np.zeros((4, 30)),
            "The declaration has no recipe, so no shadow model can be trained.",
        ),
        (MLP, np.zeros((4, 29)), "The data has 29 feature columns, but input_shape 30 needs 30."),
    ],
)
def test_fit_refuses_what_it_cannot_train(declaration, X, sentence):
    with pytest.raises(IntakeError) as caught:
        TorchRecipeClassifier(declaration).fit(X, np.array([0, 1, 0, 1]))
    assert str(caught.value) == sentence


# --------------------------------------------------------------------------- ONNX export


@pytest.mark.parametrize("fixture", ["mlp_case", "cnn_case"])
def test_onnx_export_computes_what_torch_computes(fixture, request):
    case, classifier = request.getfixturevalue(fixture)
    session = onnxruntime.InferenceSession(
        export_onnx(classifier), providers=["CPUExecutionProvider"]
    )
    X = case.X_test.to_numpy(np.float32).reshape(-1, *classifier.declaration_.input_shape)
    (onnx_logits,) = session.run(None, {"input": X})
    np.testing.assert_allclose(onnx_logits, classifier.logits(case.X_test).numpy(), atol=1e-5)


def test_a_probabilities_export_ends_in_the_softmax(every_layer_data):
    X, y = every_layer_data
    classifier = TorchRecipeClassifier(EVERY_LAYER).fit(X, y)
    session = onnxruntime.InferenceSession(
        export_onnx(classifier), providers=["CPUExecutionProvider"]
    )
    (onnx_proba,) = session.run(None, {"input": X.reshape(-1, 2, 6, 6)})
    np.testing.assert_allclose(onnx_proba, classifier.predict_proba(X), atol=1e-6)


# --------------------------------------------------------------------------- teaching models


def test_teaching_cases_hold_their_data():
    shapes = {name: teaching_case(name) for name in CASES}
    mlp, overfit = shapes["breast_cancer_mlp"], shapes["digits_cnn_overfit"]
    assert mlp.X_train.shape == (284, 30) and mlp.X_test.shape == (285, 30)
    assert abs(mlp.X_train.to_numpy().mean()) < 1e-6  # standardised on the training half
    assert overfit.X_train.shape[1] == 64 and overfit.X_train.to_numpy().max() <= 1.0
    assert set(overfit.y_train) == set(range(10))


def test_teaching_write_gives_a_submission_that_matches_itself(tmp_path, monkeypatch):
    monkeypatch.setitem(DECLARATIONS["breast_cancer_mlp"]["recipe"], "epochs", 2)
    paths = teaching_write("breast_cancer_mlp", tmp_path)
    declaration = parse_declaration(paths["declaration"].read_bytes(), n_classes=2)
    graph = onnx.load_from_string(paths["model"].read_bytes()).graph
    check_matches_onnx(declaration, onnx_network(graph))
    train = pd.read_csv(paths["train"])
    assert list(train.columns[-1:]) == ["label"] and train.shape == (284, 31)


def test_the_overfit_cnn_memorises_its_training_images_and_the_regularised_one_does_not():
    """On 60 images their held-out accuracies are alike (90% and 82%); what differs is
    memorisation, which the audit's attacks measure (tests/attacks/test_nn_audit.py)."""
    train_accuracy = {}
    for name in ("digits_cnn_overfit", "digits_cnn_regularised"):
        case = teaching_case(name)
        train_accuracy[name] = teaching_model(case).score(case.X_train, case.y_train)
    assert train_accuracy["digits_cnn_overfit"] == 1.0
    assert train_accuracy["digits_cnn_regularised"] < 0.95
