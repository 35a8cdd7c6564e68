"""What a model's shape says about privacy, before and beside any attack.

Two tools live here:

* :func:`check_rules` reads the fitted model's structure (stored rows, leaf
  sizes, kernel width, parameter count) and reports each rule that applies as
  a :class:`RuleFinding`. It trains nothing and takes milliseconds.
* :class:`HyperparameterScan` refits the model at a few settings of its risky
  hyperparameters, attacks each refit with LiRA, and recommends the setting
  with the lowest attack AUC that keeps held-out accuracy.

Both look through Pipelines (and ``CalibratedClassifierCV``) to the estimator
that holds the learned state; preprocessing steps in front do not matter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    BaggingClassifier,
    BaggingRegressor,
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    IsolationForest,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.gaussian_process import GaussianProcessClassifier, GaussianProcessRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.neighbors import (
    KNeighborsClassifier,
    KNeighborsRegressor,
    NearestNeighbors,
    RadiusNeighborsClassifier,
    RadiusNeighborsRegressor,
)
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC, SVR, NuSVC, NuSVR, OneClassSVM
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from attacks.exceptions import AttackError, PolicyError
from attacks.lira import LiRAAttack
from attacks.shadows import fit_quietly, reseeded_clone
from attacks.target import Target

# --------------------------------------------------------------------------
# Thresholds of the structural rules. A policy overrides them by name.
# --------------------------------------------------------------------------

#: Fewest training records a tree leaf should hold. A leaf predicts the label
#: mix of its records, so a leaf of one or two records publishes them; the
#: SACRO / AI-SDC safe-model rules ask for min_samples_leaf >= 5.
MIN_LEAF_RECORDS = 5

#: Above this share of small leaves the trees mostly memorise records (high
#: risk); a few small leaves are medium.
SMALL_LEAF_FRACTION_HIGH = 0.10

#: Kernel gamma, scaled to unit-variance features (gamma x mean feature
#: variance, which equals gamma on standardised data), above which each
#: support vector's kernel is a spike around one training row: two typical
#: rows of d unit-variance features lie about 2d apart in squared distance,
#: so at gamma 1 their kernel is below exp(-2d). The "scale" default is 1/d.
SVC_GAMMA_HIGH = 1.0

#: Scaled gamma above this fraction of SVC_GAMMA_HIGH is already medium risk.
SVC_GAMMA_MEDIUM_RATIO = 0.5

#: More fitted parameters per training record than this is medium risk: the
#: "ten records per parameter" rule of thumb of clinical prediction models.
MAX_PARAMS_PER_RECORD = 0.1

#: Fewer residual degrees of freedom (records minus parameters) than this is
#: high risk: the model can fit (nearly) every record exactly. AI-SDC's rule.
MIN_RESIDUAL_DOF = 10

DEFAULT_THRESHOLDS: dict[str, float] = {
    "min_leaf_records": MIN_LEAF_RECORDS,
    "small_leaf_fraction_high": SMALL_LEAF_FRACTION_HIGH,
    "svc_gamma_high": SVC_GAMMA_HIGH,
    "svc_gamma_medium_ratio": SVC_GAMMA_MEDIUM_RATIO,
    "max_params_per_record": MAX_PARAMS_PER_RECORD,
    "min_residual_dof": MIN_RESIDUAL_DOF,
}

RISK_ORDER = {"low": 0, "medium": 1, "high": 2}

_SVMS = (SVC, NuSVC, SVR, NuSVR, OneClassSVM)
_NEIGHBOURS = (
    KNeighborsClassifier,
    KNeighborsRegressor,
    RadiusNeighborsClassifier,
    RadiusNeighborsRegressor,
    NearestNeighbors,
)
_GAUSSIAN_PROCESSES = (GaussianProcessClassifier, GaussianProcessRegressor)
_SINGLE_TREES = (DecisionTreeClassifier, DecisionTreeRegressor)
_HIST_BOOSTING = (HistGradientBoostingClassifier, HistGradientBoostingRegressor)
#: Ensembles that average their trees: their capacity is that of one tree, not
#: of all trees added up (boosting, which adds trees, counts every leaf).
_AVERAGING_ENSEMBLES = (
    RandomForestClassifier,
    RandomForestRegressor,
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    BaggingClassifier,
    BaggingRegressor,
    IsolationForest,
)
_SPIKY_KERNELS = ("rbf", "poly", "sigmoid")


@dataclass(frozen=True)
class RuleFinding:
    """One structural rule that applies to the audited model.

    Attributes
    ----------
    rule : str
        Stable identifier, e.g. ``"embeds_training_rows"``.
    risk : {"low", "medium", "high"}
    title : str
        Short heading for a report.
    reason : str
        What is wrong and why it leaks, for an output checker.
    evidence : dict
        Plain numbers and strings the finding rests on.
    """

    rule: str
    risk: str
    title: str
    reason: str
    evidence: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The finding as a plain, JSON-able dict."""
        return asdict(self)


def resolve_thresholds(overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """The default thresholds with ``overrides`` applied by name.

    Raises
    ------
    PolicyError
        If a name is unknown or a value is not a finite, non-negative number.
    """
    limits = dict(DEFAULT_THRESHOLDS)
    for name, value in (overrides or {}).items():
        if name not in limits:
            known = ", ".join(sorted(limits))
            raise PolicyError(f"Unknown structural-rule threshold {name!r}; known: {known}.")
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise PolicyError(f"Threshold {name!r} must be a non-negative number.")
        if not math.isfinite(value):
            raise PolicyError(f"Threshold {name!r} must be finite.")
        limits[name] = float(value)
    return limits


def check_rules(target: Target, thresholds: Mapping[str, float] | None = None) -> list[RuleFinding]:
    """Structural privacy rules that apply to the target's fitted model.

    Parameters
    ----------
    target : Target
        The fitted model (or Pipeline) and its training records.
    thresholds : mapping of str to float, optional
        Overrides of :data:`DEFAULT_THRESHOLDS` by name.

    Returns
    -------
    list of RuleFinding
        One finding per rule that applies, in rule order; empty when none do.
        When a wrapper holds several fitted copies (a calibrated ensemble),
        each rule reports its riskiest copy.
    """
    limits = resolve_thresholds(thresholds)
    cores = _fitted_cores(target.model, target.X_train)
    n_records = max(target.n_members, 1)
    findings = []
    for rule in _RULES:
        found = [f for est, X in cores if (f := rule(est, X, n_records, limits)) is not None]
        if found:
            findings.append(max(found, key=lambda f: RISK_ORDER[f.risk]))
    return findings


def _fitted_cores(model, X) -> list[tuple[Any, Any]]:
    """The fitted estimators holding the learned state, each with the input it saw."""
    if isinstance(model, Pipeline):
        head = model[:-1]
        return _fitted_cores(model[-1], head.transform(X) if head.steps else X)
    if isinstance(model, CalibratedClassifierCV):
        inner = [c.estimator for c in model.calibrated_classifiers_]
        return [core for est in inner for core in _fitted_cores(est, X)]
    return [(model, X)]


# ----------------------------------------------------------------- rule 1


def _rule_embedded_rows(est, X, n_records: int, limits) -> RuleFinding | None:
    found = _embedded_rows(est)
    if found is None:
        return None
    n_rows, what = found
    return RuleFinding(
        rule="embeds_training_rows",
        risk="high",
        title="Model stores training records verbatim",
        reason=(
            f"{type(est).__name__} keeps {n_rows} training records ({what}) inside the "
            "fitted model, after any preprocessing the released pipeline can undo, so "
            "releasing the model releases those rows. TRE output-checking guidance treats "
            "verbatim training records in a model as very high risk, whatever an attack shows."
        ),
        evidence={
            "estimator": type(est).__name__,
            "n_rows_embedded": n_rows,
            "fraction": round(n_rows / n_records, 4),
        },
    )


def _embedded_rows(est) -> tuple[int, str] | None:
    """How many training rows the fitted estimator stores, and as what."""
    if isinstance(est, _SVMS):
        return int(len(est.support_)), "its support vectors"
    if isinstance(est, _NEIGHBOURS):
        return int(est.n_samples_fit_), "every fitted row, searched at prediction time"
    if isinstance(est, _GAUSSIAN_PROCESSES):
        n_rows = _gaussian_process_rows(est)
        return None if n_rows is None else (n_rows, "the Gaussian process training inputs")
    return None


def _gaussian_process_rows(est) -> int | None:
    """Rows in ``X_train_``; a multi-class GPC keeps them in its one-vs-rest parts."""
    if hasattr(est, "X_train_"):
        return int(len(est.X_train_))
    base = getattr(est, "base_estimator_", None)
    if hasattr(base, "X_train_"):
        return int(len(base.X_train_))
    parts = getattr(base, "estimators_", [])
    return max((int(len(p.X_train_)) for p in parts if hasattr(p, "X_train_")), default=None)


# ----------------------------------------------------------------- rule 2


def _rule_small_leaves(est, X, n_records: int, limits) -> RuleFinding | None:
    counts = _leaf_record_counts(est)
    if counts is None:
        return None
    k = limits["min_leaf_records"]
    all_leaves = np.concatenate(counts)
    n_small = int((all_leaves < k).sum())
    if n_small == 0:
        return None
    share = n_small / len(all_leaves)
    risk = "high" if share > limits["small_leaf_fraction_high"] else "medium"
    return RuleFinding(
        rule="small_leaves",
        risk=risk,
        title="Tree leaves hold very few training records",
        reason=(
            f"{n_small} of {len(all_leaves)} leaves ({share:.0%}) were fitted on fewer than "
            f"{k:g} training records. A leaf's prediction is the label mix of its records, so "
            "a leaf of one or two records reveals them and their presence in the data."
        ),
        evidence=_leaf_evidence(est, counts, n_small, share, k),
    )


def _leaf_evidence(est, counts, n_small: int, share: float, k: float) -> dict[str, Any]:
    all_leaves = np.concatenate(counts)
    return {
        "estimator": type(est).__name__,
        "n_trees": len(counts),
        "n_leaves": int(len(all_leaves)),
        "n_small_leaves": n_small,
        "small_leaf_fraction": round(share, 4),
        "smallest_leaf_records": int(all_leaves.min()),
        "min_leaf_records": k,
        "min_samples_leaf_param": _plain(getattr(est, "min_samples_leaf", None)),
    }


def _leaf_record_counts(est) -> list[np.ndarray] | None:
    """Distinct training records that fitted each leaf, one array per tree.

    scikit-learn's ``tree_.n_node_samples`` counts distinct records with non-zero
    weight, so for a bootstrapped forest it is the in-bag records (repeated
    draws are in ``weighted_n_node_samples``). ``apply(X_train)`` would also
    count out-of-bag records that never shaped the leaf, and under-report.
    """
    if isinstance(est, _HIST_BOOSTING):
        return _hist_leaf_counts(est)
    trees = _fitted_trees(est)
    if trees is None:
        return None
    return [t.n_node_samples[t.children_left == -1] for t in trees]


def _fitted_trees(est) -> list | None:
    """The low-level ``Tree`` objects of a tree or an ensemble of trees."""
    if isinstance(est, _SINGLE_TREES):
        return [est.tree_]
    members = getattr(est, "estimators_", None)
    if members is None:
        return None
    members = members.ravel().tolist() if isinstance(members, np.ndarray) else list(members)
    if not members or not all(isinstance(m, _SINGLE_TREES) for m in members):
        return None
    return [m.tree_ for m in members]


def _hist_leaf_counts(est) -> list[np.ndarray] | None:
    # HistGradientBoosting has no public view of its leaves; ``_predictors``
    # holds one TreePredictor per iteration and class, with a per-node count.
    predictors = getattr(est, "_predictors", None)
    if predictors is None:
        return None
    return [p.nodes["count"][p.nodes["is_leaf"].astype(bool)] for it in predictors for p in it]


# ----------------------------------------------------------------- rule 3


def _rule_svm_gamma(est, X, n_records: int, limits) -> RuleFinding | None:
    if not isinstance(est, _SVMS) or est.kernel not in _SPIKY_KERNELS:
        return None
    gamma = float(getattr(est, "_gamma", est.gamma))
    variance = _feature_variance(X)
    scaled = gamma * variance if variance > 0 else gamma
    high = limits["svc_gamma_high"]
    if scaled <= high * limits["svc_gamma_medium_ratio"]:
        return None
    return RuleFinding(
        rule="large_kernel_gamma",
        risk="high" if scaled > high else "medium",
        title="Kernel width is narrow enough to memorise records",
        reason=(
            f"The {est.kernel} kernel's gamma is {scaled:.3g} on unit-variance features "
            f"(limit {high:g}). A large gamma makes each support vector's kernel a narrow "
            "spike around one training row, so the model memorises individual records."
        ),
        evidence={
            "estimator": type(est).__name__,
            "kernel": est.kernel,
            "gamma_param": _plain(est.gamma),
            "gamma": gamma,
            "feature_variance": round(variance, 6),
            "scaled_gamma": round(scaled, 6),
            "svc_gamma_high": high,
        },
    )


def _feature_variance(X) -> float:
    """Variance of all entries of ``X``, as scikit-learn's ``gamma="scale"`` uses."""
    if sparse.issparse(X):
        return float(X.multiply(X).mean() - X.mean() ** 2)
    return float(np.asarray(X, dtype=float).var())


# ----------------------------------------------------------------- rule 4


def _rule_degrees_of_freedom(est, X, n_records: int, limits) -> RuleFinding | None:
    counted = _n_parameters(est)
    if counted is None:
        return None
    n_params, how = counted
    ratio = n_params / n_records
    residual = n_records - n_params
    if residual < limits["min_residual_dof"]:
        risk = "high"
    elif ratio > limits["max_params_per_record"]:
        risk = "medium"
    else:
        return None
    return RuleFinding(
        rule="degrees_of_freedom",
        risk=risk,
        title="Many fitted parameters for the number of training records",
        reason=(
            f"The model has about {n_params} fitted parameters ({how}) for {n_records} "
            f"training records, {ratio:.2g} per record. With that much freedom a model can "
            "fit individual records rather than patterns, and its outputs then reveal them."
        ),
        evidence={
            "estimator": type(est).__name__,
            "n_parameters": n_params,
            "n_records": n_records,
            "ratio": round(ratio, 4),
            "residual_dof": residual,
            "counted_as": how,
        },
    )


def _n_parameters(est) -> tuple[int, str] | None:
    """Fitted parameter count of ``est`` and how it was counted, or None if unknown."""
    if isinstance(est, _HIST_BOOSTING + _SINGLE_TREES) or _fitted_trees(est) is not None:
        return _tree_parameters(est)
    n_features = int(getattr(est, "n_features_in_", 0))
    if isinstance(est, _SVMS):
        return len(est.support_) * (n_features + 1), "support vectors x (features + 1)"
    if isinstance(est, _NEIGHBOURS):
        return int(est.n_samples_fit_) * n_features, "stored rows x features"
    if isinstance(est, _GAUSSIAN_PROCESSES):
        rows = _gaussian_process_rows(est)
        return None if rows is None else (rows * (n_features + 1), "stored rows x (features + 1)")
    if hasattr(est, "coefs_"):
        return sum(int(w.size) for w in [*est.coefs_, *est.intercepts_]), "weights and biases"
    if hasattr(est, "coef_"):
        size = np.size(est.coef_) + np.size(getattr(est, "intercept_", ()))
        return int(size), "coefficients and intercepts"
    return None


def _tree_parameters(est) -> tuple[int, str] | None:
    """Free leaf values: one per leaf and output (classes - 1 for a classifier)."""
    if isinstance(est, _HIST_BOOSTING):
        counts = _hist_leaf_counts(est)
        return None if counts is None else (sum(len(c) for c in counts), "leaves of all trees")
    trees = _fitted_trees(est)
    per_tree = [t.n_leaves * _values_per_leaf(t) for t in trees]
    if isinstance(est, _AVERAGING_ENSEMBLES):
        return int(round(np.mean(per_tree))), "leaf values of an average tree"
    return int(sum(per_tree)), "leaf values of all trees"


def _values_per_leaf(tree) -> int:
    n_outputs, n_values = tree.value.shape[1:]
    return int(n_outputs * max(n_values - 1, 1))


_RULES = (_rule_embedded_rows, _rule_small_leaves, _rule_svm_gamma, _rule_degrees_of_freedom)


# --------------------------------------------------------------------------
# Empirical sweep
# --------------------------------------------------------------------------

_FOREST_GRID = {"min_samples_leaf": [1, 5, 20, 50], "max_depth": [4, 8, None]}

#: Risky hyperparameters per model class and the values swept by default.
#: Each parameter is swept alone, the others held at the model's own values.
DEFAULT_GRIDS: dict[type, dict[str, list]] = {
    SVC: {"gamma": [0.01, 0.1, 1, 3, 10], "C": [0.1, 1, 10]},
    DecisionTreeClassifier: {"max_depth": [2, 4, 8, None], "min_samples_leaf": [1, 5, 20]},
    RandomForestClassifier: _FOREST_GRID,
    ExtraTreesClassifier: _FOREST_GRID,
    KNeighborsClassifier: {"n_neighbors": [1, 5, 15, 50]},
    LogisticRegression: {"C": [0.01, 0.1, 1, 10, 100]},
    GradientBoostingClassifier: {"max_depth": [2, 3, 5], "min_samples_leaf": [1, 10, 50]},
}

#: Float slack when comparing accuracies, so 0.70 - 0.01 admits 0.69.
_ACCURACY_SLACK = 1e-9


@dataclass(frozen=True)
class SweepPoint:
    """Attack and accuracy results for one hyperparameter setting.

    Attributes
    ----------
    param : str or None
        Parameter changed (nested name in a Pipeline); None for the model as given.
    value : JSON-able
        Its value at this point.
    is_original : bool
        True when this is the audited model itself, unchanged.
    auc, auc_ci : float, tuple of float
        LiRA's attack AUC and its 95% interval.
    tpr_at_1pct_fpr : float or None
        LiRA's TPR at 1% FPR; None when too few non-members to resolve it.
    test_accuracy, train_accuracy : float
    """

    param: str | None
    value: Any
    is_original: bool
    auc: float
    auc_ci: tuple[float, float]
    tpr_at_1pct_fpr: float | None
    test_accuracy: float
    train_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        """The point as a plain, JSON-able dict."""
        row = asdict(self)
        row["auc_ci"] = list(self.auc_ci)
        return row


@dataclass(frozen=True)
class Recommendation:
    """The sweep's advice: the lowest-AUC setting within the accuracy tolerance.

    ``param`` and ``value`` are None when the current setting is already best.
    ``auc_reduction`` is original AUC minus this AUC; ``accuracy_change`` is this
    held-out accuracy minus the original's.
    """

    param: str | None
    value: Any
    auc: float
    test_accuracy: float
    auc_reduction: float
    accuracy_change: float
    text: str

    def to_dict(self) -> dict[str, Any]:
        """The recommendation as a plain, JSON-able dict."""
        return asdict(self)


class HyperparameterScan(BaseEstimator):
    """Refit the model across risky hyperparameters and attack each refit.

    Parameters
    ----------
    grid : dict of str to list, optional
        Parameter name to values. Names may be nested (``"svc__gamma"``) or,
        for a Pipeline, the final step's own names (``"gamma"``). None uses
        :data:`DEFAULT_GRIDS` for the model's class; an unknown class gives an
        empty sweep. The model's own value is always added.
    n_shadow_models : int, default=8
        LiRA shadow models per point.
    accuracy_tolerance : float, default=0.01
        A setting qualifies when its held-out accuracy is at least the
        original's minus this (0.01 is one percentage point).
    random_state : int, RandomState instance or None, default=None
        Seeds LiRA and the refits. Every point uses the same shadow splits, so
        differences between points come from the hyperparameter, not the split.
    n_jobs : int or None, default=None
        Processes that train LiRA's shadows; None uses every core.

    Attributes
    ----------
    points_ : list of SweepPoint
        One per parameter and value; the model's own value is marked
        ``is_original`` and shares the original's results.
    original_ : SweepPoint or None
        The unchanged model (``param`` None); None when the sweep is empty.
    original_params_ : dict
        The model's own value of each swept parameter.
    recommendation_ : Recommendation or None
        None when the sweep is empty.
    skipped_ : list of dict
        Points that could not be fitted or attacked, with the reason.
    note_ : str
        Why the sweep is empty, or "".
    """

    def __init__(
        self,
        grid=None,
        *,
        n_shadow_models=8,
        accuracy_tolerance=0.01,
        random_state=None,
        n_jobs=None,
    ):
        self.grid = grid
        self.n_shadow_models = n_shadow_models
        self.accuracy_tolerance = accuracy_tolerance
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, target: Target):
        """Sweep every parameter of the grid and recommend a setting.

        Parameters
        ----------
        target : Target

        Returns
        -------
        self
        """
        if self.accuracy_tolerance < 0:
            raise ValueError("accuracy_tolerance must be non-negative")
        grid = self._resolve_grid(target)
        params = target.model.get_params(deep=True)
        self.original_params_ = {name: _plain(params[name]) for name in grid}
        self.points_, self.skipped_ = [], []
        self.original_, self.recommendation_ = None, None
        self.note_ = "" if grid else _empty_note(target.model)
        if not grid:
            return self
        rng = check_random_state(self.random_state)
        lira_seed, model_seed = (int(s) for s in rng.randint(2**31 - 1, size=2))
        self.original_ = self._measure(target, None, None, lira_seed)
        for name, values in grid.items():
            for value in values:
                self._add_point(target, name, value, lira_seed, model_seed)
        self.recommendation_ = _recommend(self.original_, self.points_, self.accuracy_tolerance)
        return self

    def _resolve_grid(self, target: Target) -> dict[str, list]:
        core, prefix = _core_template(target.model)
        if self.grid is None:
            defaults = _default_grid(core)
            grid = {prefix + name: list(values) for name, values in defaults.items()}
            grid = _clip_neighbours(grid, target)
        else:
            grid = {_param_name(target.model, prefix, k): list(v) for k, v in self.grid.items()}
        params = target.model.get_params(deep=True)
        return {name: _with_original(values, params[name]) for name, values in grid.items()}

    def _add_point(self, target: Target, name: str, value, lira_seed: int, model_seed: int):
        original = self.original_params_[name]
        if _same_value(value, original):
            self.points_.append(replace(self.original_, param=name, value=original))
            return
        try:
            model = reseeded_clone(target.model, model_seed).set_params(**{name: value})
            fit_quietly(model, target.X_train, target.y_train)
            point = self._measure(replace(target, model=model), name, value, lira_seed)
        except (AttackError, ValueError) as exc:
            self.skipped_.append({"param": name, "value": _plain(value), "reason": str(exc)})
            return
        self.points_.append(point)

    def _measure(self, target: Target, name, value, lira_seed: int) -> SweepPoint:
        attack = LiRAAttack(
            self.n_shadow_models, online=True, random_state=lira_seed, n_jobs=self.n_jobs
        ).fit(target)
        model = target.model
        return SweepPoint(
            param=name,
            value=_plain(value),
            is_original=name is None,
            auc=attack.metrics_.auc,
            auc_ci=tuple(attack.metrics_.auc_ci),
            tpr_at_1pct_fpr=attack.metrics_.tpr_at_fpr.get("0.01"),
            test_accuracy=float(accuracy_score(target.y_test, model.predict(target.X_test))),
            train_accuracy=float(accuracy_score(target.y_train, model.predict(target.X_train))),
        )


def sweep_rows(scan: HyperparameterScan) -> list[dict[str, Any]]:
    """The fitted scan's points as plain dicts, for a JSON report."""
    check_is_fitted(scan, "points_")
    return [point.to_dict() for point in scan.points_]


def _core_template(model) -> tuple[Any, str]:
    """The estimator the hyperparameters belong to, and its nested-name prefix."""
    if isinstance(model, Pipeline):
        name, step = model.steps[-1]
        core, prefix = _core_template(step)
        return core, f"{name}__{prefix}"
    if isinstance(model, CalibratedClassifierCV) and model.estimator is not None:
        core, prefix = _core_template(model.estimator)
        return core, f"estimator__{prefix}"
    return model, ""


def _default_grid(core) -> dict[str, list]:
    for cls in type(core).__mro__:
        if cls in DEFAULT_GRIDS:
            return DEFAULT_GRIDS[cls]
    return {}


def _empty_note(model) -> str:
    core, _ = _core_template(model)
    return f"No default sweep for {type(core).__name__}; pass grid= to sweep it."


def _param_name(model, prefix: str, name: str) -> str:
    params = model.get_params(deep=True)
    for candidate in (name, prefix + name):
        if candidate in params:
            return candidate
    raise AttackError(f"Cannot sweep {name!r}: {type(model).__name__} has no such parameter.")


def _clip_neighbours(grid: dict[str, list], target: Target) -> dict[str, list]:
    """Keep default ``n_neighbors`` below the smallest likely shadow training set.

    LiRA's shadows train on random halves of members plus non-members; a third
    of that pool is several standard deviations below half for any usable size.
    """
    limit = max(1, min(target.n_members, (target.n_members + target.n_non_members) // 3))
    for name in grid:
        if name.split("__")[-1] == "n_neighbors":
            grid[name] = list(dict.fromkeys(min(int(v), limit) for v in grid[name]))
    return grid


def _with_original(values: list, original) -> list:
    """``values`` with the model's own value added, de-duplicated and ordered."""
    values = [_plain(v) for v in values]
    if not any(_same_value(v, original) for v in values):
        values.append(_plain(original))
    unique = []
    for v in values:
        if not any(_same_value(v, u) for u in unique):
            unique.append(v)
    return sorted(unique, key=_sort_key)


def _sort_key(value) -> tuple[int, float, str]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return 0, float(value), ""
    return 1, 0.0, str(value)


def _same_value(a, b) -> bool:
    numbers = int | float
    if isinstance(a, numbers) and isinstance(b, numbers):
        return not isinstance(a, bool) and not isinstance(b, bool) and float(a) == float(b)
    return type(a) is type(b) and a == b


def _recommend(original: SweepPoint, points: list[SweepPoint], tolerance: float):
    floor = original.test_accuracy - tolerance - _ACCURACY_SLACK
    eligible = [p for p in points if p.test_accuracy >= floor] + [original]
    best = min(eligible, key=lambda p: _preference(p, original))
    if best.is_original:
        return _keep_current(original, tolerance)
    return _change_to(best, original)


def _preference(point: SweepPoint, original: SweepPoint) -> tuple:
    """Lowest AUC, then lowest TPR at 1% FPR, then no change, then least accuracy change."""
    tpr = math.inf if point.tpr_at_1pct_fpr is None else point.tpr_at_1pct_fpr
    change = abs(point.test_accuracy - original.test_accuracy)
    return point.auc, tpr, not point.is_original, change


def _keep_current(original: SweepPoint, tolerance: float) -> Recommendation:
    text = (
        f"The current setting is already the safest within {tolerance * 100:g} percentage "
        f"point(s) of held-out accuracy: no swept value lowers attack AUC below "
        f"{original.auc:.2f}."
    )
    return Recommendation(None, None, original.auc, original.test_accuracy, 0.0, 0.0, text)


def _change_to(best: SweepPoint, original: SweepPoint) -> Recommendation:
    short = best.param.split("__")[-1]
    text = (
        f"Setting {short}={best.value!r} lowers attack AUC from {original.auc:.2f} to "
        f"{best.auc:.2f} while held-out accuracy moves from {original.test_accuracy:.3f} "
        f"to {best.test_accuracy:.3f}."
    )
    if best.auc >= original.auc_ci[0]:
        text += " The drop lies within the original AUC's 95% interval, so it may be noise."
    return Recommendation(
        param=best.param,
        value=best.value,
        auc=best.auc,
        test_accuracy=best.test_accuracy,
        auc_reduction=original.auc - best.auc,
        accuracy_change=best.test_accuracy - original.test_accuracy,
        text=text,
    )


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value; anything else unchanged."""
    if isinstance(value, np.generic):
        return value.item()
    return value
