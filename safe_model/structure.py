"""Structural validation of compiled scikit-learn estimators, before any predict.

scikit-learn's Cython and C code trusts the arrays it is handed: a decision
tree whose child index points outside its node array reads (and crashes on)
arbitrary memory, and a tree whose root is its own child loops forever. A
skops file sets those arrays to whatever its author wants, so every compiled
structure a fitted model holds is checked here, vectorised with NumPy, against
exactly what the compiled predict paths read:

* ``sklearn.tree._tree.Tree`` (decision trees, forests, extra trees, gradient
  boosting), as read by ``Tree.apply``/``predict``/``decision_path`` and by
  gradient boosting's ``predict_stages``;
* HistGradientBoosting's ``TreePredictor`` nodes and category bitsets, its bin
  mapper and its preprocessor, as read by ``_predict_from_raw_data``;
* the k-d and ball trees of the neighbours estimators, and their distance
  metric, as read by ``BinaryTree.query``;
* the libsvm model of ``SVC`` and ``NuSVC``, as rebuilt by ``set_model`` in
  ``_libsvm.pyx``.

The whole object graph is walked (pipelines, column transformers, ensembles,
calibrated and multiclass wrappers: every attribute), with a cap on depth and
on the number of objects, since its author controls it. A compiled object is
accepted only in the one attribute where scikit-learn's own code reads it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse
from sklearn._loss._loss import CyExponentialLoss, CyHalfBinomialLoss, CyHalfMultinomialLoss
from sklearn.ensemble import BaseEnsemble
from sklearn.ensemble._forest import BaseForest
from sklearn.ensemble._gb import BaseGradientBoosting
from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE
from sklearn.ensemble._hist_gradient_boosting.gradient_boosting import BaseHistGradientBoosting
from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
from sklearn.linear_model._sgd_fast import Hinge, ModifiedHuber, SquaredHinge
from sklearn.linear_model._stochastic_gradient import BaseSGD
from sklearn.metrics._dist_metrics import (
    ChebyshevDistance64,
    EuclideanDistance64,
    ManhattanDistance64,
    MinkowskiDistance64,
)
from sklearn.neighbors import BallTree, KDTree
from sklearn.neighbors._base import NeighborsBase
from sklearn.svm._base import BaseSVC
from sklearn.tree import BaseDecisionTree
from sklearn.tree._tree import TREE_LEAF, Tree

from safe_model.exceptions import ModelRefused

#: Deepest nesting of estimators, containers and attributes walked. A real
#: pipeline of ensembles is under 15 levels deep.
MAX_DEPTH = 64

#: Most Python objects walked in one model: a forest of 1000 trees is about
#: 10,000; more is an attacker's object graph, refused rather than walked.
MAX_OBJECTS = 1_000_000

#: Fully qualified names of the compiled (non-heap, Cython or C) scikit-learn
#: types, or Python subclasses of one (see :func:`is_compiled_type`), that a
#: skops file may name. Each is
#: either validated here in the one attribute where it is read, or holds no
#: state at all (the ``Cy*Loss`` objects: their pickled state is empty), or
#: holds one float that only ``fit`` reads (SGD's hinge-type losses). The
#: skops allowlist refuses every other compiled scikit-learn type.
COMPILED_TYPES_ALLOWED = frozenset(
    {
        "sklearn.tree._tree.Tree",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        "sklearn.metrics._dist_metrics.ManhattanDistance64",
        "sklearn.metrics._dist_metrics.ChebyshevDistance64",
        "sklearn.metrics._dist_metrics.MinkowskiDistance64",
        "sklearn._loss._loss.CyHalfBinomialLoss",
        "sklearn._loss._loss.CyHalfMultinomialLoss",
        "sklearn._loss._loss.CyExponentialLoss",
        "sklearn.linear_model._sgd_fast.Hinge",
        "sklearn.linear_model._sgd_fast.SquaredHinge",
        "sklearn.linear_model._sgd_fast.ModifiedHuber",
    }
)

#: Where scikit-learn reads each compiled type: (owner class, attribute).
_COMPILED_SLOTS = {
    Tree: (BaseDecisionTree, "tree_"),
    KDTree: (NeighborsBase, "_tree"),
    BallTree: (NeighborsBase, "_tree"),
    Hinge: (BaseSGD, "_loss_function_"),
    SquaredHinge: (BaseSGD, "_loss_function_"),
    ModifiedHuber: (BaseSGD, "_loss_function_"),
}
#: Compiled types that hold no state, so they may sit anywhere.
_STATELESS = (CyHalfBinomialLoss, CyHalfMultinomialLoss, CyExponentialLoss)
_METRICS = (EuclideanDistance64, ManhattanDistance64, ChebyshevDistance64, MinkowskiDistance64)
_HEAP_TYPE_FLAG = 1 << 9  # Py_TPFLAGS_HEAPTYPE: set on classes defined in Python
_NOUNS = {BaseDecisionTree: "decision tree", TreePredictor: "tree"}
_LIBSVM_IMPL = {"SVC": "c_svc", "NuSVC": "nu_svc"}
_KERNELS = frozenset({"linear", "poly", "rbf", "sigmoid", "precomputed"})


class _Inconsistent(Exception):
    """One problem found in a structure; becomes a ModelRefused naming its owner."""


def check_model_structure(model: Any) -> None:
    """Refuse a model if any compiled structure it holds is inconsistent.

    Parameters
    ----------
    model : object
        A fitted estimator, freshly loaded from an untrusted file and not yet
        used to predict.

    Raises
    ------
    ModelRefused
        With one sentence naming the estimator and the problem, for example
        "The model's decision tree 3 of RandomForestClassifier is
        inconsistent: a child index is out of range."
    """
    for obj, label, key, owner in _walk(model):
        try:
            _check_object(obj, key=key, owner=owner)
        except _Inconsistent as exc:
            raise ModelRefused(f"The model's {label} is inconsistent: {exc}.") from None
        except MemoryError:
            raise
        except Exception:  # whatever a malformed attribute makes numpy raise
            raise ModelRefused(
                f"The model's {label} is inconsistent: an attribute is missing or malformed."
            ) from None


# --------------------------------------------------------------------------- walk


def _walk(model: Any) -> Iterator[tuple[Any, str, Any, Any]]:
    """Every object reachable from ``model``, once: (object, owner label, key, owner)."""
    stack = [(model, None, None, None, 0)]
    seen: set[int] = set()
    while stack:
        obj, label, key, owner, depth = stack.pop()
        if id(obj) in seen or _is_leaf_value(obj):
            continue
        if depth > MAX_DEPTH or len(seen) >= MAX_OBJECTS:
            raise ModelRefused("The model is nested too deeply or holds too many objects.")
        seen.add(id(obj))
        if _has_attributes(obj):
            label = _label(obj, key=key, parent=label)
        yield obj, label or type(obj).__name__, key, owner
        stack.extend(
            (child, label, child_key, obj, depth + 1) for child_key, child in _children(obj, key)
        )


def _is_leaf_value(obj: Any) -> bool:
    if isinstance(obj, np.ndarray):
        return obj.dtype != object
    return obj is None or isinstance(obj, (str, bytes, int, float, complex, np.generic, type))


def _has_attributes(obj: Any) -> bool:
    return hasattr(obj, "__dict__") and type(obj).__module__.startswith("sklearn")


def _children(obj: Any, key: Any) -> list[tuple[Any, Any]]:
    if isinstance(obj, dict):
        return list(obj.items())
    if isinstance(obj, (list, tuple)):
        if len(obj) >= 2 and isinstance(obj[0], str):  # a (name, estimator, ...) step
            return [(obj[0], item) for item in obj[1:]]
        return [(_item_key(key, i), item) for i, item in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return list(enumerate(obj.ravel()))
    if _has_attributes(obj):
        return list(vars(obj).items())
    return []


def _item_key(key: Any, index: int) -> Any:
    """Nested lists (HistGradientBoosting's predictors) count on from their parent."""
    return index if not isinstance(key, int) else f"{key}.{index}"


def _label(obj: Any, *, key: Any, parent: str | None) -> str:
    if parent is None:
        return type(obj).__name__
    noun = next((n for cls, n in _NOUNS.items() if isinstance(obj, cls)), type(obj).__name__)
    if isinstance(key, int) or (isinstance(key, str) and "." in key and key[0].isdigit()):
        return f"{noun} {key} of {parent}"
    if isinstance(key, str) and not key.endswith("_"):
        return f"{noun} '{key}' of {parent}"
    return f"{noun} of {parent}"


def _check_object(obj: Any, *, key: Any, owner: Any) -> None:
    if is_compiled_type(type(obj)):
        _check_compiled_slot(obj, key=key, owner=owner)
    for cls, check in _CHECKS:
        if isinstance(obj, cls) and _is_fitted(obj):
            check(obj)


def _is_fitted(estimator: Any) -> bool:
    """Unfitted estimators (templates such as ``estimator``) refuse to predict on their own."""
    return any(name.endswith("_") and not name.startswith("__") for name in vars(estimator))


def is_compiled_type(cls: type) -> bool:
    """Whether a class is, or derives from, a compiled (non-heap) scikit-learn type.

    Such a class is admitted from a skops file only if its name is in
    :data:`COMPILED_TYPES_ALLOWED`.

    Parameters
    ----------
    cls : type

    Returns
    -------
    bool
    """
    return any(
        klass.__module__.startswith("sklearn") and not klass.__flags__ & _HEAP_TYPE_FLAG
        for klass in cls.__mro__
    )


def _check_compiled_slot(obj: Any, *, key: Any, owner: Any) -> None:
    name = f"{type(obj).__module__}.{type(obj).__qualname__}"
    slot = _COMPILED_SLOTS.get(type(obj))
    if name in COMPILED_TYPES_ALLOWED and type(obj) in _STATELESS:
        return
    if name not in COMPILED_TYPES_ALLOWED or slot is None:
        raise _Inconsistent(f"it holds a compiled {type(obj).__name__}, which cannot be checked")
    owner_class, attribute = slot
    if key != attribute or not isinstance(owner, owner_class):
        raise _Inconsistent(f"it holds a compiled {type(obj).__name__} where none belongs")


# --------------------------------------------------------------------------- helpers


def _require(condition: Any, problem: str) -> None:
    if not condition:
        raise _Inconsistent(problem)


def _count(value: Any, what: str) -> int:
    """A plain non-negative integer attribute, or refusal."""
    _require(
        isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0,
        f"its {what} is not a count",
    )
    return int(value)


def _array(value: Any, what: str, *, ndim: int, kind: str = "iuf") -> np.ndarray:
    _require(
        isinstance(value, np.ndarray) and value.ndim == ndim and value.dtype.kind in kind,
        f"its {what} is not a {ndim}-dimensional numeric array",
    )
    return value


def _finite(values: np.ndarray, what: str) -> None:
    _require(np.isfinite(values).all(), f"its {what} are not all finite")


def _n_features(estimator: Any) -> int:
    """``n_features_in_``: without it scikit-learn lets X of any width through."""
    _require(hasattr(estimator, "n_features_in_"), "it does not record its number of features")
    n_features = _count(estimator.n_features_in_, "number of features")
    _require(n_features >= 1, "its number of features is zero")
    return n_features


def _n_classes(estimator: Any) -> int:
    classes = getattr(estimator, "classes_", None)
    _require(isinstance(classes, np.ndarray) and classes.ndim == 1, "its classes are not a list")
    _require(len(classes) >= 2, "it has fewer than two classes")
    return len(classes)


def _tree_edges(left: np.ndarray, right: np.ndarray, *, leaf: int, n_nodes: int) -> None:
    """Children of inner nodes in range, after their parent, and one parent per node.

    scikit-learn numbers every child after its parent, so a child index not
    above its parent's is a cycle; with that and exactly one parent per
    non-root node, every node is reachable from the root exactly once.
    """
    inner = np.flatnonzero(left != leaf)
    _require(np.array_equal(inner, np.flatnonzero(right != leaf)), "a node has only one child")
    children = np.concatenate([left[inner], right[inner]]).astype(np.int64, copy=False)
    _require(((children >= 0) & (children < n_nodes)).all(), "a child index is out of range")
    _require((children > np.concatenate([inner, inner])).all(), "a node is its own ancestor")
    parents = np.bincount(children, minlength=n_nodes)
    _require(
        parents[0] == 0 and (parents[1:] == 1).all(), "a node does not have exactly one parent"
    )


def _tree_depth(left: np.ndarray, right: np.ndarray, *, leaf: int) -> int:
    """Depth of an (already checked) tree, by pointer doubling over parent links."""
    n_nodes = len(left)
    parent = np.zeros(n_nodes, dtype=np.int64)
    inner = np.flatnonzero(left != leaf)
    parent[left[inner]] = inner
    parent[right[inner]] = inner
    depth = (np.arange(n_nodes) > 0).astype(np.int64)
    for _ in range(max(1, n_nodes).bit_length()):
        depth = depth + depth[parent]
        parent = parent[parent]
    return int(depth.max())


# --------------------------------------------------------------------------- trees


def _check_decision_tree(estimator: BaseDecisionTree) -> None:
    tree = getattr(estimator, "tree_", None)
    _require(isinstance(tree, Tree), "it holds no tree arrays")
    n_features = _n_features(estimator)
    _require(tree.n_features == n_features, "its tree and its number of features disagree")
    _check_tree(tree)
    n_outputs = _count(getattr(estimator, "n_outputs_", None), "number of outputs")
    _require(tree.n_outputs == n_outputs, "its tree and its number of outputs disagree")
    if hasattr(estimator, "classes_"):
        n_classes = np.atleast_1d(getattr(estimator, "n_classes_", -1))
        _require(np.array_equal(tree.n_classes, n_classes), "its classes and its tree disagree")


def _check_tree(tree: Tree) -> None:
    n_nodes = _check_tree_shape(tree)
    state = tree.__getstate__()  # safe to read now: node_count is within the node array
    _check_tree_nodes(state["nodes"], n_nodes=n_nodes, n_features=tree.n_features)
    _finite(state["values"], "leaf values")
    _require(
        state["values"].shape == (n_nodes, tree.n_outputs, tree.max_n_classes),
        "its value array has the wrong shape",
    )
    _require(
        _tree_depth(state["nodes"]["left_child"], state["nodes"]["right_child"], leaf=TREE_LEAF)
        <= tree.max_depth,
        "it is deeper than its recorded depth",
    )


def _check_tree_shape(tree: Tree) -> int:
    """Node count, outputs and classes; returns the node count."""
    n_nodes, capacity = _count(tree.node_count, "node count"), _count(tree.capacity, "capacity")
    _require(1 <= n_nodes <= capacity, "its node count does not match its node arrays")
    _require(tree.n_outputs >= 1 and tree.n_features >= 1, "its shape is empty")
    n_classes = tree.n_classes
    _require(len(n_classes) == tree.n_outputs, "its class counts do not match its outputs")
    _require(
        n_classes.min() >= 1 and tree.max_n_classes == n_classes.max(),
        "its class counts are inconsistent",
    )
    return n_nodes


def _check_tree_nodes(nodes: np.ndarray, *, n_nodes: int, n_features: int) -> None:
    """What ``Tree.apply`` reads of each node on its way down."""
    left, right = nodes["left_child"], nodes["right_child"]
    _tree_edges(left, right, leaf=TREE_LEAF, n_nodes=n_nodes)
    inner = left != TREE_LEAF
    features = nodes["feature"][inner]
    _require(((features >= 0) & (features < n_features)).all(), "a split feature is out of range")
    _finite(nodes["threshold"][inner], "thresholds")
    _finite(nodes["weighted_n_node_samples"], "sample weights")
    _require((nodes["n_node_samples"] >= 0).all(), "a sample count is negative")


def _check_tree_ensemble(ensemble: BaseEnsemble) -> None:
    """Forests and gradient boosting pass X to their trees unchecked: one width for all."""
    n_features = _n_features(ensemble)
    trees = np.asarray(getattr(ensemble, "estimators_", None), dtype=object).ravel()
    _require(trees.size >= 1, "it holds no trees")
    for tree in trees:
        _require(isinstance(tree, BaseDecisionTree), "one of its trees is not a decision tree")
        _require(
            getattr(tree, "n_features_in_", None) == n_features,
            "its trees disagree on the number of features",
        )


def _check_gradient_boosting(model: BaseGradientBoosting) -> None:
    """``predict_stages`` reads one value per node and writes column k < K of its output."""
    estimators = getattr(model, "estimators_", None)
    _require(
        isinstance(estimators, np.ndarray) and estimators.ndim == 2, "its trees are not a 2-D array"
    )
    n_columns = _count(getattr(model, "n_trees_per_iteration_", None), "trees per iteration")
    _require(estimators.shape[1] == n_columns >= 1, "its trees per iteration are inconsistent")
    for tree in estimators.ravel():
        _require(
            isinstance(getattr(tree, "tree_", None), Tree), "one of its trees holds no tree arrays"
        )
        _require(
            tree.tree_.n_outputs == 1 and tree.tree_.max_n_classes == 1,
            "a tree has more than one value per node",
        )
    if hasattr(model, "classes_"):
        n_classes = _n_classes(model)
        _require(
            n_columns == (1 if n_classes == 2 else n_classes),
            "its trees per iteration and its classes disagree",
        )
        _require(
            model._loss.is_multiclass == (n_classes > 2), "its loss does not match its classes"
        )
        _check_init(model.init_, n_classes=n_classes)


def _check_init(init: Any, *, n_classes: int) -> None:
    if isinstance(init, str):
        _require(init == "zero", "its initial estimator is unknown")
        return
    from sklearn.dummy import DummyClassifier

    _require(isinstance(init, DummyClassifier), "its initial estimator cannot be checked")
    _require(
        init.n_outputs_ == 1 and _n_classes(init) == n_classes,
        "its initial estimator and its classes disagree",
    )


# --------------------------------------------------------------------------- HGB


def _check_hist_gradient_boosting(model: BaseHistGradientBoosting) -> None:
    n_features = _n_features(model)
    mapper = model._bin_mapper
    is_categorical = _array(
        getattr(mapper, "is_categorical_", None), "categorical flags", ndim=1, kind="bu"
    )
    _require(
        len(is_categorical) == n_features, "its bin mapper and its number of features disagree"
    )
    _check_known_categories(mapper, is_categorical)
    _require(
        _preprocessed_width(model._preprocessor, n_features) == n_features,
        "its preprocessor changes the number of features",
    )
    _check_predictors(model, is_categorical=is_categorical)
    if hasattr(model, "classes_"):
        n_classes = _n_classes(model)
        _require(
            model.n_trees_per_iteration_ == (1 if n_classes == 2 else n_classes),
            "its trees per iteration and its classes disagree",
        )


def _check_predictors(model: BaseHistGradientBoosting, *, is_categorical: np.ndarray) -> None:
    predictors = getattr(model, "_predictors", None)
    _require(isinstance(predictors, list) and predictors, "it holds no trees")
    for iteration in predictors:
        _require(
            isinstance(iteration, list) and len(iteration) == model.n_trees_per_iteration_,
            "its trees per iteration are inconsistent",
        )
    for index, predictor in enumerate(p for iteration in predictors for p in iteration):
        _require(isinstance(predictor, TreePredictor), f"its tree {index} is not a tree")
        try:
            _check_predictor(predictor, is_categorical=is_categorical)
        except _Inconsistent as exc:
            raise _Inconsistent(f"in its tree {index}, {exc}") from None


def _check_known_categories(mapper: Any, is_categorical: np.ndarray) -> None:
    """``make_known_categories_bitsets`` sets bit v of an 8-word bitset for each category v."""
    thresholds = getattr(mapper, "bin_thresholds_", None)
    _require(
        isinstance(thresholds, list) and len(thresholds) == len(is_categorical),
        "its bin thresholds do not match its features",
    )
    for categorical, values in zip(is_categorical, thresholds):
        values = _array(values, "bin thresholds", ndim=1)
        if categorical:
            _require(
                ((values >= 0) & (values <= 255) & (values == np.round(values))).all(),
                "a known category is out of range",
            )


def _preprocessed_width(preprocessor: Any, n_features: int) -> int:
    """Width of X after HistGradientBoosting's own ordinal-encoding ColumnTransformer."""
    if preprocessor is None:
        return n_features
    from sklearn.compose import ColumnTransformer

    _require(
        isinstance(preprocessor, ColumnTransformer), "its preprocessor is not a column transformer"
    )
    _require(
        _n_features(preprocessor) == n_features,
        "its preprocessor and its number of features disagree",
    )
    width = 0
    for _, transformer, columns in preprocessor.transformers_:
        columns = np.asarray(columns)
        _require(
            columns.dtype == bool and columns.shape == (n_features,),
            "its preprocessor's columns are not a feature mask",
        )
        if isinstance(transformer, str):
            _require(transformer == "drop", "its preprocessor cannot be checked")
            continue
        _require(_width_preserving(transformer), "its preprocessor cannot be checked")
        width += int(columns.sum())
    return width


def _width_preserving(transformer: Any) -> bool:
    """The two transformers HistGradientBoosting builds: an OrdinalEncoder and check_array."""
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder
    from sklearn.utils.validation import check_array

    if isinstance(transformer, OrdinalEncoder):
        return True
    func = getattr(transformer, "func", None)
    return (
        isinstance(transformer, FunctionTransformer)
        and isinstance(func, functools.partial)
        and func.func is check_array
        and transformer.inverse_func is None
    )


def _check_predictor(predictor: TreePredictor, *, is_categorical: np.ndarray) -> None:
    nodes = predictor.nodes
    _require(
        isinstance(nodes, np.ndarray) and nodes.ndim == 1 and nodes.dtype == PREDICTOR_RECORD_DTYPE,
        "its node array has the wrong type",
    )
    _require(len(nodes) >= 1, "a tree has no nodes")
    leaf = np.iinfo(np.uint32).max  # leaves' children are never read; mark them so
    is_leaf = nodes["is_leaf"] != 0
    left = np.where(is_leaf, leaf, nodes["left"]).astype(np.int64)
    right = np.where(is_leaf, leaf, nodes["right"]).astype(np.int64)
    _tree_edges(left, right, leaf=leaf, n_nodes=len(nodes))
    inner = nodes[~is_leaf]
    _check_predictor_splits(inner, is_categorical=is_categorical)
    _finite(nodes["value"][is_leaf], "leaf values")
    _check_predictor_bitsets(predictor, inner[inner["is_categorical"] != 0])


def _check_predictor_splits(inner: np.ndarray, *, is_categorical: np.ndarray) -> None:
    features = inner["feature_idx"]
    _require(
        ((features >= 0) & (features < len(is_categorical))).all(),
        "a split feature is out of range",
    )
    _require(not np.isnan(inner["num_threshold"]).any(), "a threshold is not a number")
    _require(
        is_categorical[features[inner["is_categorical"] != 0]].all(),
        "a categorical split is on a numeric feature",
    )


def _check_predictor_bitsets(predictor: TreePredictor, categorical: np.ndarray) -> None:
    """``in_bitset_2d_memoryview`` reads word v // 32 < 8 of row ``bitset_idx``."""
    for name in ("raw_left_cat_bitsets", "binned_left_cat_bitsets"):
        bitsets = getattr(predictor, name, None)
        _require(
            isinstance(bitsets, np.ndarray)
            and bitsets.dtype == np.uint32
            and bitsets.ndim == 2
            and bitsets.shape[1] == 8
            and bitsets.flags.c_contiguous,
            "its category bitsets have the wrong shape",
        )
        _require(
            (categorical["bitset_idx"] < len(bitsets)).all(),
            "a category bitset index is out of range",
        )


# --------------------------------------------------------------------------- neighbours


def _check_neighbors(model: NeighborsBase) -> None:
    n_features = _n_features(model)
    fit_x = getattr(model, "_fit_X", None)
    _require(
        isinstance(fit_x, np.ndarray) and fit_x.ndim == 2, "its training points are not a matrix"
    )
    n_samples = _count(getattr(model, "n_samples_fit_", None), "number of training points")
    _require(
        fit_x.shape == (n_samples, n_features) and n_samples >= 1,
        "its training points do not match its counts",
    )
    _require(model._fit_method in ("kd_tree", "ball_tree", "brute"), "its search method is unknown")
    tree = getattr(model, "_tree", None)
    if model._fit_method == "brute":
        _require(tree is None, "it holds a search tree it does not use")
    else:
        _require(isinstance(tree, (KDTree, BallTree)), "its search tree is missing")
        _check_binary_tree(tree, n_samples=n_samples, n_features=n_features)
    if hasattr(model, "classes_"):
        _check_neighbor_labels(model, n_samples=n_samples)


def _check_neighbor_labels(model: NeighborsBase, *, n_samples: int) -> None:
    y = _array(
        getattr(model, "_y", None), "training labels", ndim=2 if model.outputs_2d_ else 1, kind="iu"
    )
    _require(len(y) == n_samples, "its training labels do not match its training points")
    classes = model.classes_ if model.outputs_2d_ else [model.classes_]
    _require(
        y.ndim == 1 or y.shape[1] == len(classes), "its training labels do not match its outputs"
    )
    for column, labels in zip(y.reshape(n_samples, -1).T, classes):
        _require(((column >= 0) & (column < len(labels))).all(), "a training label is out of range")


def _check_binary_tree(tree: KDTree | BallTree, *, n_samples: int, n_features: int) -> None:
    """What ``BinaryTree.query`` reads: children 2i+1 and 2i+2, index ranges, bounds."""
    data, idx, node_data, bounds, leaf_size, n_levels, n_nodes = tree.__getstate__()[:7]
    metric, sample_weight = tree.__getstate__()[11:13]
    kind = "k-d tree" if isinstance(tree, KDTree) else "ball tree"
    _check_binary_tree_points(
        data, idx, sample_weight, n_samples=n_samples, n_features=n_features, kind=kind
    )
    _require(
        n_levels == _expected_levels(n_samples, leaf_size),
        f"its {kind}'s depth is inconsistent",
    )
    _require(
        n_nodes == 2**n_levels - 1 == len(node_data), f"its {kind}'s node count is inconsistent"
    )
    _require(
        bounds.shape == ((2 if isinstance(tree, KDTree) else 1), n_nodes, n_features),
        f"its {kind}'s bounds have the wrong shape",
    )
    _check_binary_tree_nodes(node_data, n_samples=n_samples, kind=kind)
    _check_metric(metric, n_features=n_features)


def _check_binary_tree_points(
    data: Any, idx: Any, sample_weight: Any, *, n_samples: int, n_features: int, kind: str
) -> None:
    _require(
        isinstance(data, np.ndarray) and data.shape == (n_samples, n_features),
        f"its {kind}'s points do not match its training points",
    )
    _require(
        isinstance(idx, np.ndarray) and idx.shape == (n_samples,),
        f"its {kind}'s index has the wrong length",
    )
    _require(
        np.array_equal(np.sort(idx), np.arange(n_samples)),
        f"its {kind} has an index out of range",
    )
    _require(
        sample_weight is None
        or (isinstance(sample_weight, np.ndarray) and sample_weight.shape == (n_samples,)),
        f"its {kind}'s sample weights have the wrong length",
    )


def _check_binary_tree_nodes(node_data: np.ndarray, *, n_samples: int, kind: str) -> None:
    """Index ranges within the data; nodes of the last level (no children) are leaves."""
    starts, ends = node_data["idx_start"], node_data["idx_end"]
    _require(
        ((starts >= 0) & (starts <= ends) & (ends <= n_samples)).all(),
        f"its {kind} has a node range out of bounds",
    )
    _require(
        (node_data["is_leaf"][(len(node_data) - 1) // 2 :] != 0).all(),
        f"its {kind} has a branch below its last level",
    )


def _expected_levels(n_samples: int, leaf_size: int) -> int:
    """``BinaryTree.__init__``'s rule: 1 + max(0, floor(log2((n_samples - 1) / leaf_size)))."""
    if leaf_size < 1:
        return -1
    return 1 + max(0, math.floor(math.log2(max(1, n_samples - 1) / leaf_size)))


def _check_metric(metric: Any, *, n_features: int) -> None:
    _require(type(metric) in _METRICS, "its distance metric cannot be checked")
    weights = np.asarray(metric.__getstate__()[1])
    if isinstance(metric, MinkowskiDistance64):
        _require(
            weights.shape in ((0,), (n_features,)), "its distance weights do not match its features"
        )


# --------------------------------------------------------------------------- libsvm


def _check_libsvm(model: BaseSVC) -> None:
    """The shapes ``set_model`` in ``_libsvm.pyx`` passes to libsvm as raw pointers."""
    _require(
        type(model).__name__ in _LIBSVM_IMPL, "its support vector machine type cannot be checked"
    )
    _require(
        model._impl == _LIBSVM_IMPL[type(model).__name__],
        "its libsvm type does not match its class",
    )
    _require(model.kernel in _KERNELS, "its kernel is unknown")
    _count(model.degree, "polynomial degree")
    n_features, n_classes = _n_features(model), _n_classes(model)
    n_vectors = _check_support(model, n_classes=n_classes)
    _check_support_vectors(model, n_vectors=n_vectors, n_features=n_features)
    _check_libsvm_coefficients(model, n_classes=n_classes, n_vectors=n_vectors)


def _check_support(model: BaseSVC, *, n_classes: int) -> int:
    """Per-class counts and indices of the support vectors; returns their number.

    scikit-learn compares only the counts' sum with the vectors (CVE-2020-28975);
    libsvm also takes each count as the length of that class's block.
    """
    n_support = _array(model._n_support, "support counts", ndim=1, kind="i")
    _require(len(n_support) == n_classes, "its support vector counts do not match its classes")
    _require((n_support >= 0).all(), "a support vector count is negative")
    n_vectors = int(n_support.sum())
    _require(n_vectors >= 1, "it has no support vectors")
    support = _array(model.support_, "support indices", ndim=1, kind="i")
    _require(
        len(support) == n_vectors, "its support vector count does not match its support counts"
    )
    if model.kernel == "precomputed":
        n_train = _count(model.shape_fit_[0], "number of training rows")
        _require(((support >= 0) & (support < n_train)).all(), "a support index is out of range")
    return n_vectors


def _check_libsvm_coefficients(model: BaseSVC, *, n_classes: int, n_vectors: int) -> None:
    _require(
        np.shape(model._dual_coef_) == (n_classes - 1, n_vectors),
        "its dual coefficients have the wrong shape",
    )
    n_pairs = n_classes * (n_classes - 1) // 2
    _require(np.shape(model._intercept_) == (n_pairs,), "its intercepts have the wrong length")
    _require(
        np.size(model._probA) in (0, n_pairs) and np.size(model._probA) == np.size(model._probB),
        "its probability calibration has the wrong length",
    )
    _require(
        np.size(getattr(model, "class_weight_", [])) in (0, n_classes),
        "its class weights do not match its classes",
    )
    for name in ("_dual_coef_", "_intercept_", "_probA", "_probB", "_gamma", "coef0"):
        value = getattr(model, name)
        value = value.data if scipy.sparse.issparse(value) else value
        _finite(np.asarray(value, dtype=float), name.strip("_").replace("_", " ") + " values")


def _check_support_vectors(model: BaseSVC, *, n_vectors: int, n_features: int) -> None:
    """A precomputed kernel keeps no vectors: libsvm reads row entries at the support indices."""
    vectors = model.support_vectors_
    if model._sparse:
        _require(
            scipy.sparse.issparse(vectors) and vectors.format == "csr",
            "its sparse support vectors are not CSR",
        )
        _check_csr(vectors, n_features=n_features)
    else:
        _require(
            isinstance(vectors, np.ndarray) and vectors.ndim == 2,
            "its support vectors are not a matrix",
        )
    expected = (0, 0) if model.kernel == "precomputed" else (n_vectors, n_features)
    _require(
        vectors.shape == expected,
        "its support vectors do not match its support counts and features",
    )


def _check_csr(matrix: Any, *, n_features: int) -> None:
    indptr, indices = np.asarray(matrix.indptr), np.asarray(matrix.indices)
    _require(
        matrix.shape[1] == n_features, "its support vectors do not match its number of features"
    )
    _require(
        len(indptr) == matrix.shape[0] + 1
        and indptr[0] == 0
        and indptr[-1] == len(indices) == len(matrix.data),
        "its sparse support vectors are inconsistent",
    )
    _require(
        (np.diff(indptr) >= 0).all() and ((indices >= 0) & (indices < n_features)).all(),
        "its sparse support vectors are inconsistent",
    )


_CHECKS = (
    (BaseDecisionTree, _check_decision_tree),
    (BaseForest, _check_tree_ensemble),
    (BaseGradientBoosting, _check_tree_ensemble),
    (BaseGradientBoosting, _check_gradient_boosting),
    (BaseHistGradientBoosting, _check_hist_gradient_boosting),
    (NeighborsBase, _check_neighbors),
    (BaseSVC, _check_libsvm),
)
