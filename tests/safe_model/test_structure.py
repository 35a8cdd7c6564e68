"""Structural validation of compiled estimators: crafted files refused, honest models pass.

A crafted model is never predicted with in this process (a segfault would end
the test session): the tests that show the crafted files really crash or hang
an unchecked predict run it in a child process.
"""

from __future__ import annotations

import importlib
import io
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import skops.io
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.ensemble import (
    AdaBoostClassifier,
    BaggingClassifier,
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    StackingClassifier,
    VotingClassifier,
)
from sklearn.linear_model import LogisticRegression, Perceptron, SGDClassifier
from sklearn.multiclass import OneVsOneClassifier, OneVsRestClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier, RadiusNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC, LinearSVC, NuSVC
from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

from attacks.datasets import famous_patient_data, famous_patient_model
from safe_model.exceptions import ModelRefused
from safe_model.structure import COMPILED_TYPES_ALLOWED, check_model_structure, is_compiled_type
from tests.safe_model import crafted_models

ROOT = Path(__file__).resolve().parents[2]

#: Seconds a child process may take to import scikit-learn and load a model on
#: a loaded machine, and then to show that a crafted predict does not return.
CHILD_TIMEOUT = 300
HANG_WAIT = 8

#: Seeded fuzz cases the test runs (the measurement runs thousands).
FUZZ_CASES = 400


def _load(data: bytes):
    return skops.io.loads(data, trusted=skops.io.get_untrusted_types(data=data))


def _refusal(model) -> str:
    with pytest.raises(ModelRefused) as caught:
        check_model_structure(model)
    return str(caught.value)


def _data(n_classes: int = 2):
    X, y = make_classification(
        n_samples=60, n_features=4, n_informative=3, n_redundant=0,
        n_classes=n_classes, random_state=0,
    )  # fmt: skip
    return X, y


# --------------------------------------------------------------------------- crafted files


CRAFTED_REFUSALS = {
    "tree_left_child_huge": "The model's DecisionTreeClassifier is inconsistent: "
    "a child index is out of range.",
    "tree_feature_out_of_range": "The model's DecisionTreeClassifier is inconsistent: "
    "a split feature is out of range.",
    "tree_negative_child": "The model's DecisionTreeClassifier is inconsistent: "
    "a child index is out of range.",
    "tree_cyclic_root": "The model's DecisionTreeClassifier is inconsistent: "
    "a node is its own ancestor.",
    "hgb_node_index_huge": "The model's HistGradientBoostingClassifier is inconsistent: "
    "in its tree 0, a child index is out of range.",
    "kdtree_index_out_of_range": "The model's KNeighborsClassifier is inconsistent: "
    "its k-d tree has an index out of range.",
    "svc_support_mismatch": "The model's SVC is inconsistent: a support vector count is negative.",
    "tree_latent_bad_node": "The model's decision tree 3 of RandomForestClassifier is "
    "inconsistent: a child index is out of range.",
}


def test_every_crafted_file_has_an_expected_refusal():
    assert set(CRAFTED_REFUSALS) == set(crafted_models.CRAFTED)


@pytest.mark.parametrize("name", sorted(crafted_models.CRAFTED))
def test_crafted_file_is_refused_with_one_sentence(name):
    make, _ = crafted_models.CRAFTED[name]
    assert _refusal(_load(make())) == CRAFTED_REFUSALS[name]


_CHILD = """
import io, sys, warnings
import pandas as pd, skops.io
from tests.safe_model import crafted_models
warnings.filterwarnings("ignore")
make, _ = crafted_models.CRAFTED[sys.argv[1]]
data = make()
model = skops.io.loads(data, trusted=skops.io.get_untrusted_types(data=data))
train, _, label = crafted_models.matching_tables()
X = pd.read_csv(io.BytesIO(train)).drop(columns=label)
rows = int(sys.argv[2]) or len(X)
print("predicting", flush=True)
model.predict_proba(X.iloc[:rows])
print("returned", flush=True)
"""


def _unchecked_predict(name: str, *, rows: int = 0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, name, str(rows)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def _wait_until_predicting(child: subprocess.Popen) -> None:
    started = time.monotonic()
    line = child.stdout.readline()
    waited = time.monotonic() - started
    print(f"child reached predict after {waited:.1f} s (import, craft and load)")
    assert line.strip() == "predicting", "the child died before it could predict"


@pytest.mark.parametrize(
    "name", sorted(n for n, (_, effect) in crafted_models.CRAFTED.items() if effect == "crash")
)
def test_crafted_file_really_crashes_an_unchecked_predict(name):
    child = _unchecked_predict(name)
    try:
        _wait_until_predicting(child)
        code = child.wait(timeout=CHILD_TIMEOUT)
    finally:
        child.kill()
    print(f"{name}: unchecked predict_proba ended with exit code {code}")
    assert code < 0, f"{name} did not kill the process (exit code {code})"


def test_cyclic_tree_really_hangs_an_unchecked_predict():
    child = _unchecked_predict("tree_cyclic_root")
    try:
        _wait_until_predicting(child)
        print(f"waiting {HANG_WAIT} s: a 60-row predict returns in milliseconds")
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=HANG_WAIT)
    finally:
        child.kill()
        child.wait()


def test_latent_bad_node_passes_a_trial_predict_on_the_first_rows():
    child = _unchecked_predict("tree_latent_bad_node", rows=crafted_models.N_TRIAL_ROWS)
    try:
        _wait_until_predicting(child)
        code = child.wait(timeout=CHILD_TIMEOUT)
    finally:
        child.kill()
    assert code == 0 and child.stdout.read().strip() == "returned"


def test_matching_tables_fit_every_crafted_file():
    train, test, label = crafted_models.matching_tables()
    train, test = pd.read_csv(io.BytesIO(train)), pd.read_csv(io.BytesIO(test))
    assert list(train.columns) == [*crafted_models.FEATURES, label] == list(test.columns)
    assert len(train) == len(test) == 60 and not train.merge(test).shape[0]
    for make, _ in crafted_models.CRAFTED.values():
        assert list(_load(make()).feature_names_in_) == crafted_models.FEATURES


# --------------------------------------------------------------------------- honest models


def _honest_models():
    X, y = _data()
    X3, y3 = _data(3)
    frame = pd.DataFrame(X, columns=list("abcd")).assign(site=np.where(X[:, 0] > 0, "x", "y"))
    encode = ColumnTransformer(
        [("site", OneHotEncoder(handle_unknown="ignore"), ["site"])], remainder="passthrough"
    )
    X_cat = X.copy()
    X_cat[:, 0] = np.digitize(X[:, 0], [-1.0, 0.0, 1.0])
    X_nan = X.copy()
    X_nan[::7, 2] = np.nan
    train, _ = famous_patient_data()
    return {
        "tree": DecisionTreeClassifier(random_state=0).fit(X, y),
        "extra_tree": ExtraTreeClassifier(random_state=0).fit(X, y),
        "tree_pruned": DecisionTreeClassifier(ccp_alpha=0.02, random_state=0).fit(X, y),
        "tree_single_leaf": DecisionTreeClassifier().fit(X, np.zeros_like(y)),
        "tree_missing_values": DecisionTreeClassifier(random_state=0).fit(X_nan, y),
        "tree_best_first": DecisionTreeClassifier(max_leaf_nodes=5).fit(X, y),
        "tree_multioutput": DecisionTreeClassifier(random_state=0).fit(X, np.c_[y, y3]),
        "forest": RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y),
        "extra_trees": ExtraTreesClassifier(n_estimators=5, random_state=0).fit(X, y),
        "gb": GradientBoostingClassifier(n_estimators=5, random_state=0).fit(X, y),
        "gb_multiclass": GradientBoostingClassifier(n_estimators=3, random_state=0).fit(X3, y3),
        "gb_zero_init": GradientBoostingClassifier(n_estimators=3, init="zero").fit(X, y),
        "gb_exponential": GradientBoostingClassifier(n_estimators=3, loss="exponential").fit(X, y),
        "hgb": HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(X, y),
        "hgb_multiclass": HistGradientBoostingClassifier(max_iter=3).fit(X3, y3),
        "hgb_missing_values": HistGradientBoostingClassifier(max_iter=3).fit(X_nan, y),
        "hgb_categorical": HistGradientBoostingClassifier(
            max_iter=5, categorical_features=[0]
        ).fit(X_cat, y),
        "ada": AdaBoostClassifier(n_estimators=5, random_state=0).fit(X, y),
        "bagging": BaggingClassifier(n_estimators=3, max_features=2, random_state=0).fit(X, y),
        "knn_kd_tree": KNeighborsClassifier(algorithm="kd_tree").fit(X, y),
        "knn_ball_tree": KNeighborsClassifier(algorithm="ball_tree", leaf_size=3).fit(X, y),
        "knn_brute": KNeighborsClassifier(algorithm="brute").fit(X, y),
        "knn_manhattan": KNeighborsClassifier(algorithm="kd_tree", metric="manhattan").fit(X, y),
        "knn_weighted_minkowski": KNeighborsClassifier(
            algorithm="ball_tree", metric="minkowski", p=3, metric_params={"w": np.ones(4)}
        ).fit(X, y),
        "knn_multioutput": KNeighborsClassifier().fit(X, np.c_[y, y3]),
        "knn_one_point": KNeighborsClassifier(n_neighbors=1, algorithm="kd_tree").fit(X[:1], y[:1]),
        "radius": RadiusNeighborsClassifier(radius=5.0).fit(X, y),
        "svc_linear": SVC(kernel="linear").fit(X, y),
        "svc_rbf": SVC().fit(X, y),
        "svc_probability": SVC(probability=True, random_state=0).fit(X3, y3),
        "svc_precomputed": SVC(kernel="precomputed").fit(X @ X.T, y),
        "svc_poly": SVC(kernel="poly", degree=2).fit(X, y),
        "svc_sparse_weighted": SVC(class_weight="balanced").fit(scipy.sparse.csr_matrix(X), y),
        "nusvc": NuSVC().fit(X, y),
        "famous_patient_svc": famous_patient_model(train),
        "logistic": LogisticRegression().fit(X, y),
        "sgd": SGDClassifier(loss="log_loss", random_state=0).fit(X, y),
        "sgd_hinge": SGDClassifier(random_state=0).fit(X, y),
        "sgd_modified_huber": SGDClassifier(loss="modified_huber", random_state=0).fit(X, y),
        "sgd_squared_hinge": SGDClassifier(loss="squared_hinge", random_state=0).fit(X, y),
        "perceptron": Perceptron(random_state=0).fit(X, y),
        "linear_svc": LinearSVC().fit(X, y),
        "mlp": MLPClassifier(hidden_layer_sizes=(5,), max_iter=20, random_state=0).fit(X, y),
        "naive_bayes": GaussianNB().fit(X, y),
        "pipeline_one_hot": make_pipeline(
            encode, StandardScaler(), RandomForestClassifier(n_estimators=3, random_state=0)
        ).fit(frame, y),
        "calibrated": CalibratedClassifierCV(SVC(), cv=3).fit(X, y),
        "one_vs_rest": OneVsRestClassifier(DecisionTreeClassifier()).fit(X3, y3),
        "one_vs_one": OneVsOneClassifier(SVC()).fit(X3, y3),
        "voting": VotingClassifier(
            [("t", DecisionTreeClassifier()), ("k", KNeighborsClassifier())], voting="soft"
        ).fit(X, y),
        "stacking": StackingClassifier(
            [("t", DecisionTreeClassifier()), ("s", SVC())], cv=3
        ).fit(X, y),
    }  # fmt: skip


HONEST = _honest_models()


@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_model_passes(name):
    check_model_structure(HONEST[name])


@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_model_passes_after_a_skops_round_trip(name):
    check_model_structure(_load(skops.io.dumps(HONEST[name])))


def test_famous_patient_example_passes_as_a_researcher_submits_it(example_files):
    check_model_structure(_load(example_files["model"].data))


# --------------------------------------------------------------------------- tampering


def _tampered_tree(model, **fields):
    tree = model.tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    for name, (index, value) in fields.items():
        nodes[name][index] = value
    tree.__setstate__({**state, "nodes": nodes})
    return model


@pytest.fixture
def tree_model():
    X, y = _data()
    return DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)


def test_a_node_with_two_parents_is_refused(tree_model):
    left = int(tree_model.tree_.children_left[0])
    _tampered_tree(tree_model, right_child=(0, left))
    assert _refusal(tree_model).endswith("a node does not have exactly one parent.")


def test_a_child_pointing_back_up_is_refused(tree_model):
    inner = np.flatnonzero(tree_model.tree_.children_left != -1)
    assert len(inner) > 1
    _tampered_tree(tree_model, left_child=(int(inner[1]), 0))
    assert _refusal(tree_model).endswith("a node is its own ancestor.")


def test_a_half_leaf_is_refused(tree_model):
    _tampered_tree(tree_model, right_child=(0, -1))
    assert _refusal(tree_model).endswith("a node has only one child.")


def test_an_understated_depth_is_refused(tree_model):
    state = tree_model.tree_.__getstate__()
    tree_model.tree_.__setstate__({**state, "max_depth": 1})
    assert _refusal(tree_model).endswith("it is deeper than its recorded depth.")


def test_a_node_count_beyond_the_node_array_is_refused(tree_model):
    state = tree_model.tree_.__getstate__()
    tree_model.tree_.__setstate__({**state, "node_count": 10**9})
    assert _refusal(tree_model).endswith("its node count does not match its node arrays.")


def test_a_nan_threshold_is_refused(tree_model):
    _tampered_tree(tree_model, threshold=(0, np.nan))
    assert _refusal(tree_model).endswith("its thresholds are not all finite.")


def test_a_tree_without_its_number_of_features_is_refused(tree_model):
    del tree_model.n_features_in_
    assert _refusal(tree_model).endswith("it does not record its number of features.")


def test_forest_trees_that_disagree_on_features_are_refused():
    X, y = _data()
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    forest.estimators_[1].n_features_in_ = 3
    assert _refusal(forest).endswith("its trees disagree on the number of features.")


def test_gradient_boosting_with_too_few_tree_columns_is_refused():
    X3, y3 = _data(3)
    model = GradientBoostingClassifier(n_estimators=2, random_state=0).fit(X3, y3)
    model.n_trees_per_iteration_ = 2
    model.estimators_ = model.estimators_[:, :2]
    assert _refusal(model).endswith("its trees per iteration and its classes disagree.")


def test_hgb_categorical_bitset_index_out_of_range_is_refused():
    X, y = _data()
    X[:, 0] = 3 * y  # a categorical feature worth splitting on
    model = HistGradientBoostingClassifier(max_iter=3, categorical_features=[0]).fit(X, y)
    index, nodes = next(
        (i, p.nodes) for i, p in enumerate(it[0] for it in model._predictors)
        if (p.nodes["is_categorical"] & ~p.nodes["is_leaf"].astype(bool)).any()
    )  # fmt: skip
    nodes["bitset_idx"][np.flatnonzero(nodes["is_categorical"] & (nodes["is_leaf"] == 0))] = 10**6
    assert _refusal(model).endswith(
        f"in its tree {index}, a category bitset index is out of range."
    )


def test_hgb_known_category_beyond_a_bitset_is_refused():
    X, y = _data()
    X[:, 0] = np.digitize(X[:, 0], [-1.0, 0.0, 1.0])
    model = HistGradientBoostingClassifier(max_iter=3, categorical_features=[0]).fit(X, y)
    model._bin_mapper.bin_thresholds_[0] = np.array([0.0, 10.0**9])
    assert _refusal(model).endswith("a known category is out of range.")


def test_knn_label_out_of_range_is_refused():
    X, y = _data()
    model = KNeighborsClassifier().fit(X, y)
    model._y = model._y.copy()
    model._y[3] = 10**9
    assert _refusal(model).endswith("a training label is out of range.")


def test_ball_tree_node_range_beyond_its_data_is_refused():
    X, y = _data()
    model = KNeighborsClassifier(algorithm="ball_tree").fit(X, y)
    state = list(model._tree.__getstate__())
    state[2] = state[2].copy()
    state[2]["idx_end"][0] = 10**12
    model._tree.__setstate__(tuple(state))
    assert _refusal(model).endswith("its ball tree has a node range out of bounds.")


def test_svc_dual_coefficients_of_the_wrong_shape_are_refused():
    X, y = _data()
    model = SVC().fit(X, y)
    model._dual_coef_ = model._dual_coef_[:, :3].copy()
    assert _refusal(model).endswith("its dual coefficients have the wrong shape.")


def test_svc_libsvm_type_of_another_class_is_refused():
    X, y = _data()
    model = SVC().fit(X, y)
    model._impl = "one_class"
    assert _refusal(model).endswith("its libsvm type does not match its class.")


def test_a_compiled_tree_outside_its_slot_is_refused():
    X, y = _data()
    model = LogisticRegression().fit(X, y)
    model.helper_ = DecisionTreeClassifier().fit(X, y).tree_
    assert _refusal(model) == (
        "The model's LogisticRegression is inconsistent: "
        "it holds a compiled Tree where none belongs."
    )


def test_a_model_that_holds_itself_is_walked_once():
    X, y = _data()
    model = make_pipeline(StandardScaler(), DecisionTreeClassifier()).fit(X, y)
    model.steps[1][1].me_ = model
    check_model_structure(model)


def test_absurdly_deep_nesting_is_refused():
    X, y = _data()
    model = LogisticRegression().fit(X, y)
    nested = []
    model.nested_ = nested
    for _ in range(10_000):
        nested.append([])
        nested = nested[0]
    assert _refusal(model) == "The model is nested too deeply or holds too many objects."


def test_an_unfitted_template_is_not_required_to_hold_trees():
    X, y = _data()
    model = BaggingClassifier(DecisionTreeClassifier(), n_estimators=2).fit(X, y)
    assert not hasattr(model.estimator, "tree_")
    check_model_structure(model)


def test_a_tree_posing_as_unfitted_inside_gradient_boosting_is_refused():
    X, y = _data()
    model = GradientBoostingClassifier(n_estimators=2).fit(X, y)
    del model.estimators_[1, 0].tree_
    assert _refusal(model).endswith("one of its trees holds no tree arrays.")


# --------------------------------------------------------------------------- allowlist


def _schema_types(data: bytes) -> set[str]:
    """Every type a skops file names, trusted by default or not."""
    names = set(skops.io.get_untrusted_types(data=data))
    stack = [json.loads(zipfile.ZipFile(io.BytesIO(data)).read("schema.json"))]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__module__" in node and "__class__" in node:
                names.add(f"{node['__module__']}.{node['__class__']}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return names


def _is_compiled_sklearn_type(name: str) -> bool:
    module, _, attribute = name.rpartition(".")
    cls = getattr(importlib.import_module(module), attribute)
    return isinstance(cls, type) and is_compiled_type(cls)


def test_every_compiled_type_an_honest_model_names_is_allowed():
    """Fails when a new scikit-learn starts saving a compiled type nobody has checked."""
    compiled = set()
    for model in HONEST.values():
        compiled |= {
            n for n in _schema_types(skops.io.dumps(model)) if _is_compiled_sklearn_type(n)
        }
    assert compiled <= COMPILED_TYPES_ALLOWED, sorted(compiled - COMPILED_TYPES_ALLOWED)
    assert {"sklearn.tree._tree.Tree", "sklearn.neighbors._kd_tree.KDTree"} <= compiled


def test_only_scikit_learn_extension_types_count_as_compiled():
    assert is_compiled_type(type(HONEST["tree"].tree_)) and is_compiled_type(
        type(HONEST["knn_kd_tree"]._tree)
    )
    assert not any(is_compiled_type(cls) for cls in (DecisionTreeClassifier, np.ndarray, dict))


def test_every_allowed_compiled_type_exists_and_is_compiled():
    assert all(_is_compiled_sklearn_type(name) for name in COMPILED_TYPES_ALLOWED)


@pytest.mark.parametrize("name", sorted(n for n in COMPILED_TYPES_ALLOWED if "._loss." in n))
def test_allowed_gradient_losses_hold_no_state(name):
    module, _, attribute = name.rpartition(".")
    loss = getattr(importlib.import_module(module), attribute)()
    reduced = loss.__reduce_ex__(2)
    args = reduced[1]
    cython_pickle = len(args) == 3 and args[0] is type(loss)  # (class, checksum, state)
    assert len(reduced) == 2 and (args[2] if cython_pickle else args) == ()


@pytest.mark.parametrize("name", sorted(n for n in COMPILED_TYPES_ALLOWED if "._sgd_fast." in n))
def test_allowed_sgd_losses_hold_at_most_one_number_and_only_fit_reads_them(name):
    module, _, attribute = name.rpartition(".")
    reduced = getattr(importlib.import_module(module), attribute)().__reduce_ex__(2)
    assert len(reduced) == 2 and [type(arg) for arg in reduced[1]] in ([], [float])
    X, y = _data()
    model = SGDClassifier(random_state=0).fit(X, y)
    expected = model.decision_function(X)
    model._loss_function_ = None  # predicting never reads it
    np.testing.assert_array_equal(model.decision_function(X), expected)


# --------------------------------------------------------------------------- fuzz


def test_fuzzed_models_never_crash_or_hang_once_accepted():
    """Seeded corruptions of every admitted classifier; crashes are counted in a child."""
    started = time.monotonic()
    command = ["-m", "tests.safe_model.structure_fuzz", str(FUZZ_CASES), "20261201"]
    result = subprocess.run(
        [sys.executable, *command, "--accepted-only"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    print(f"fuzzing took {time.monotonic() - started:.0f} s; last lines:\n{result.stdout[-2000:]}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["cases"] == FUZZ_CASES and summary["refused"] > 0
    assert summary["unvalidated_failures"] == [] and result.returncode == 0
