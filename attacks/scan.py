"""What a model's shape says about privacy, before and beside any attack.

Two tools live here:

* :func:`check_rules` reads the fitted model's structure (stored rows, leaf
  sizes, kernel width, parameter count) and reports each rule that applies as
  a :class:`RuleFinding`. It trains nothing and takes milliseconds.
* :class:`HyperparameterScan` refits the model at a few settings of its risky
  hyperparameters, attacks the refits that keep held-out accuracy with RMIA
  by successive halving, and recommends a setting only when it is clearly
  safer than the audited one.

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
from attacks.metrics import attack_metrics
from attacks.reading import RISKS
from attacks.rmia import RMIAAttack
from attacks.rounds import Round, RoundResult, RoundRule, round_counts, rounds_decide
from attacks.shadows import ShadowPool, fit_quietly, reseeded_clone, shadow_pool_fit
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
            findings.append(max(found, key=lambda f: RISKS.index(f.risk)))
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
            f"{_gamma_setting(est, gamma, scaled)} (limit {high:g} on standardised "
            "features). A large gamma makes each support vector's kernel a narrow "
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


def _gamma_setting(est, gamma: float, scaled: float) -> str:
    """The setting as the researcher wrote it, then what it amounts to on these features."""
    setting = f"The {est.kernel} kernel's setting gamma={_plain(est.gamma)!r}"
    if isinstance(est.gamma, str):
        setting += f" (here {gamma:.3g})"
    if math.isclose(scaled, gamma, rel_tol=0.05):
        return setting
    return (
        f"{setting} is, on these unscaled features, as narrow as gamma {scaled:.3g} "
        "on standardised ones"
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
class SweepReference:
    """The audit's strongest attack on the audited model: the figure a change must beat.

    Attributes
    ----------
    attack : str
        Its title as the report gives it, e.g. ``"RMIA (16 reference models)"``.
    auc, auc_ci : float, tuple of float
        Its AUC on the audited model and the 95% interval.
    tpr_at_1pct_fpr : float or None
        Its TPR at 1% FPR; None when too few non-members to resolve it.
    n_reference_models : int
        Reference (shadow) models the audit trained; 0 for attacks that need none.
    """

    attack: str
    auc: float
    auc_ci: tuple[float, float]
    tpr_at_1pct_fpr: float | None
    n_reference_models: int


@dataclass(frozen=True)
class SweepPoint:
    """Attack and accuracy results for one hyperparameter setting.

    Attributes
    ----------
    param : str or None
        Parameter changed (nested name in a Pipeline). The audited model has
        None in ``original_`` and the first swept parameter in ``points_``.
    value : JSON-able
        Its value at this point.
    is_original : bool
        True when this is the audited model itself, unchanged.
    auc, auc_ci : float, tuple of float
        Attack AUC and its 95% interval.
    tpr_at_1pct_fpr : float or None
        TPR at 1% FPR; None when too few non-members to resolve it.
    test_accuracy, train_accuracy : float
    attack : str
        What measured ``auc``: the sweep's RMIA, or the audit's own strongest
        attack for the audited model when the audit gave it.
    n_reference_models : int
        Reference models behind ``auc``: the most this setting was given.
    note : str
        Why the sweep stopped measuring it, or that it was confirmed.
    """

    param: str | None
    value: Any
    is_original: bool
    auc: float
    auc_ci: tuple[float, float]
    tpr_at_1pct_fpr: float | None
    test_accuracy: float
    train_accuracy: float
    attack: str
    n_reference_models: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The point as a plain, JSON-able dict."""
        row = asdict(self)
        row["auc_ci"] = list(self.auc_ci)
        return row


@dataclass(frozen=True)
class Recommendation:
    """The sweep's advice: a setting clearly safer than the audited one, or none.

    ``param`` and ``value`` are None when no swept setting is clearly safer;
    ``auc``, ``auc_ci`` and ``n_reference_models`` are then the current
    setting's. ``auc_reduction`` is the current AUC minus this AUC;
    ``accuracy_change`` is this held-out accuracy minus the original's.
    """

    param: str | None
    value: Any
    auc: float
    auc_ci: tuple[float, float]
    n_reference_models: int
    test_accuracy: float
    auc_reduction: float
    accuracy_change: float
    text: str

    def to_dict(self) -> dict[str, Any]:
        """The recommendation as a plain, JSON-able dict."""
        return asdict(self)


@dataclass
class _Setting:
    """One setting in the sweep: its refitted target, reference pool and latest point."""

    param: str | None
    value: Any
    target: Target
    test_accuracy: float
    train_accuracy: float
    pool: ShadowPool | None = None
    point: SweepPoint | None = None

    @property
    def label(self) -> str:
        if self.param is None:
            return "the current setting"
        return f"{self.param.split('__')[-1]}={self.value!r}"


class HyperparameterScan(BaseEstimator):
    """Refit the model across risky hyperparameters and attack the refits that keep accuracy.

    The sweep is successive halving with RMIA (online). Every setting, the
    audited one included, is attacked on the same reference splits and seeds,
    so differences between settings come from the hyperparameter:

    1. Every changed setting is refitted on the training records. One whose
       held-out accuracy is below the original's minus ``accuracy_tolerance``
       goes to ``skipped_`` and is never attacked.
    2. The audited setting and the remaining ones are attacked with
       ``n_reference_models`` reference models each. A setting is dropped as
       clearly riskier when the low end of its AUC's 95% interval lies above
       the high end of the lowest-risk setting's interval (lowest AUC, then
       lowest TPR at 1% FPR). The rest get twice as many reference models, and
       so on, until one is left or the next count would pass
       ``max_reference_models``.
    3. The confirmation count N is the reference's count when one is given
       (the audit's strongest attack), else ``max_reference_models``; rounded
       up to a multiple of ``n_reference_models``. The current setting's
       figure A is the reference's AUC when one is given, else the sweep's own
       RMIA with N reference models. The lowest-risk survivor,
       if it is a change whose interval already lies wholly below A, is
       attacked again with up to N reference models, in the rounds of the
       audit's ``rule`` (stopping early where that rule says its figure has
       settled), and recommended only if its interval still lies wholly below
       A. Otherwise no change is recommended.

    Parameters
    ----------
    grid : dict of str to list, optional
        Parameter name to values. Names may be nested (``"svc__gamma"``) or,
        for a Pipeline, the final step's own names (``"gamma"``). None uses
        :data:`DEFAULT_GRIDS` for the model's class; an unknown class gives an
        empty sweep. The model's own value is always added.
    n_reference_models : int, default=2
        Reference models per setting in the first rung; each rung doubles it.
    max_reference_models : int, default=4
        The most reference models a rung gives a setting; without a reference,
        also the count a recommendation is confirmed with.
    accuracy_tolerance : float, default=0.01
        A setting qualifies when its held-out accuracy is at least the
        original's minus this (0.01 is one percentage point).
    random_state : int, RandomState instance or None, default=None
        Seeds the refits and the reference models.
    n_jobs : int or None, default=None
        Processes that train reference models; None uses every core.

    Attributes
    ----------
    points_ : list of SweepPoint
        One per attacked setting, at the most reference models it was given.
        The audited model appears once, under the first swept parameter.
    original_ : SweepPoint or None
        The unchanged model (``param`` None); None when the sweep is empty.
    original_params_ : dict
        The model's own value of each swept parameter.
    recommendation_ : Recommendation or None
        None when the sweep is empty.
    skipped_ : list of dict
        Settings not attacked: failed accuracy (with ``test_accuracy``), or
        could not be fitted or attacked; each with the reason.
    rung_counts_ : list of int
        Reference models per setting in each rung of the halving.
    n_confirmation_models_ : int
        N above: the fewest reference models a recommendation rests on.
    n_reference_fits_ : int
        Reference models trained over the whole sweep (refits not counted).
    note_ : str
        The rule the sweep followed, or why it is empty.
    """

    def __init__(
        self,
        grid=None,
        *,
        n_reference_models=2,
        max_reference_models=4,
        accuracy_tolerance=0.01,
        random_state=None,
        n_jobs=None,
    ):
        self.grid = grid
        self.n_reference_models = n_reference_models
        self.max_reference_models = max_reference_models
        self.accuracy_tolerance = accuracy_tolerance
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(
        self,
        target: Target,
        reference: SweepReference | None = None,
        progress=None,
        pool: ShadowPool | None = None,
        pool_seed: int | None = None,
        rule: RoundRule | None = None,
    ):
        """Sweep every parameter of the grid and recommend a setting, or none.

        Parameters
        ----------
        target : Target
        reference : SweepReference, optional
            The audit's strongest attack on ``target``'s model. Without it the
            sweep measures the audited setting itself.
        pool, pool_seed : ShadowPool and int, optional
            The audit's own shadows of ``target``'s model and the seed they were
            trained with. Every setting's reference models are then drawn with
            that seed, so the audited setting's are the audit's and cost nothing.
        rule : RoundRule, optional
            The audit's rule for when more models stop changing the answer
            (:mod:`attacks.rounds`). A candidate is then confirmed in the rule's
            rounds and stops where the rule says its figure has settled, at N at
            the most; without it, it is always confirmed with N.
        progress : callable(stage, fraction), optional
            Called before each refit and attack with a stage such as
            ``"sweep: gamma=0.1 (3 of 7, 2 reference models)"`` and the
            fraction of the sweep done, in [0, 1).

        Returns
        -------
        self
        """
        self._check_params()
        grid = self._resolve_grid(target)
        self._reset(target, grid, reference)
        if not grid:
            return self
        rng = check_random_state(self.random_state)
        model_seed, own_seed = (int(s) for s in rng.randint(2**31 - 1, size=2))
        pool_seed = own_seed if pool is None else int(pool_seed)
        steps = _Steps(progress, n_stages=len(self.rung_counts_) + 2)
        original = _setting(target, None, None)
        original.pool = pool
        settings = self._refits(target, grid, model_seed, original, steps)
        survivors = self._halve([original, *settings], pool_seed, steps)
        self.recommendation_ = self._decide(original, survivors, reference, rule, pool_seed, steps)
        self.original_ = original.point
        self.points_ = _points(grid, original, settings, self.original_params_)
        return self

    def _check_params(self) -> None:
        if self.accuracy_tolerance < 0:
            raise ValueError("accuracy_tolerance must be non-negative")
        if int(self.n_reference_models) < 1:
            raise ValueError("n_reference_models must be at least 1")
        if self.max_reference_models < self.n_reference_models:
            raise ValueError("max_reference_models must be at least n_reference_models")

    def _reset(self, target: Target, grid: dict, reference: SweepReference | None) -> None:
        params = target.model.get_params(deep=True)
        self.original_params_ = {name: _plain(params[name]) for name in grid}
        self.points_, self.skipped_ = [], []
        self.original_, self.recommendation_ = None, None
        self.n_reference_fits_ = 0
        self.rung_counts_ = self._rung_counts()
        self.n_confirmation_models_ = self._confirmation_count(reference)
        self.note_ = self._rule_note(reference) if grid else _empty_note(target.model)

    def _rung_counts(self) -> list[int]:
        counts, n = [], int(self.n_reference_models)
        while n <= self.max_reference_models:
            counts.append(n)
            n *= 2
        return counts

    def _confirmation_count(self, reference: SweepReference | None) -> int:
        n = self.max_reference_models if reference is None else reference.n_reference_models
        step = int(self.n_reference_models)
        return max(-(-int(n) // step) * step, step)

    def _rule_note(self, reference: SweepReference | None) -> str:
        n = self.n_confirmation_models_
        current = f"the audit's {reference.attack}" if reference else f"RMIA with {n} models"
        return (
            f"Settings more than {self.accuracy_tolerance * 100:g} percentage point(s) below "
            "the original's held-out accuracy were refitted but not attacked. The others were "
            f"attacked with RMIA (online) on shared reference splits, {self.n_reference_models} "
            "reference models each at first; a setting whose AUC interval lay wholly above the "
            "lowest-risk setting's was dropped and the rest got twice as many, up to "
            f"{self.rung_counts_[-1]}. A change is recommended only if, with {n} reference "
            "models (or fewer, where the audit's own rule for shadow rounds says its figure "
            "has settled), its 95% AUC interval lies wholly below the current setting's AUC "
            f"({current})."
        )

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

    def _refits(self, target, grid, model_seed: int, original: _Setting, steps) -> list[_Setting]:
        """Every changed setting, refitted; those below the accuracy floor are skipped."""
        floor = original.test_accuracy - self.accuracy_tolerance - _ACCURACY_SLACK
        changes = [
            (name, value)
            for name, values in grid.items()
            for value in values
            if not _same_value(value, self.original_params_[name])
        ]
        settings = []
        for i, (name, value) in enumerate(changes):
            steps.report(0, i, len(changes), f"refitting {name.split('__')[-1]}={value!r}")
            setting = self._refit(target, name, value, model_seed)
            if setting is not None and setting.test_accuracy < floor:
                self._skip(setting, self._accuracy_reason(setting, original))
            elif setting is not None:
                settings.append(setting)
        return settings

    def _refit(self, target: Target, name: str, value, model_seed: int) -> _Setting | None:
        try:
            model = reseeded_clone(target.model, model_seed).set_params(**{name: value})
            fit_quietly(model, target.X_train, target.y_train)
            return _setting(replace(target, model=model), name, value)
        except (AttackError, ValueError) as exc:
            self.skipped_.append({"param": name, "value": _plain(value), "reason": str(exc)})
            return None

    def _accuracy_reason(self, setting: _Setting, original: _Setting) -> str:
        return (
            f"Held-out accuracy {setting.test_accuracy:.1%} is more than "
            f"{self.accuracy_tolerance * 100:g} percentage point(s) below the original's "
            f"{original.test_accuracy:.1%}, so it was not attacked."
        )

    def _skip(self, setting: _Setting, reason: str) -> None:
        self.skipped_.append(
            {
                "param": setting.param,
                "value": _plain(setting.value),
                "reason": reason,
                "test_accuracy": setting.test_accuracy,
            }
        )

    def _halve(self, settings: list[_Setting], pool_seed: int, steps) -> list[_Setting]:
        """Successive halving: attack the survivors, drop the clearly riskier, double."""
        alive = settings
        for rung, n_models in enumerate(self.rung_counts_, start=1):
            if len(alive) < 2:
                break
            attacked = []
            for i, setting in enumerate(alive):
                steps.report(rung, i, len(alive), setting.label, n_models)
                if self._attack_or_skip(setting, n_models, pool_seed):
                    attacked.append(setting)
            alive = _without_clearly_riskier(attacked, n_models)
        return alive

    def _attack_or_skip(self, setting: _Setting, n_models: int, pool_seed: int) -> bool:
        """Attack a changed setting; one that cannot be attacked is skipped, not fatal."""
        if setting.param is None:
            self._attack(setting, n_models, pool_seed)
            return True
        try:
            self._attack(setting, n_models, pool_seed)
        except (AttackError, ValueError) as exc:
            self._skip(setting, str(exc))
            return False
        return True

    def _attack(self, setting: _Setting, n_models: int, pool_seed: int) -> RMIAAttack:
        """Grow the setting's reference pool to ``n_models`` and score it with RMIA.

        Reference model k's split and seed depend only on ``pool_seed`` and k
        (:func:`attacks.shadows.shadow_mask`), so every setting with the same
        count has the same splits and seeds, however its pool grew.
        """
        start = 0 if setting.pool is None else setting.pool.n_shadow_models
        if start < n_models:
            part = shadow_pool_fit(
                setting.target,
                n_shadow_models=n_models - start,
                start=start,
                random_state=pool_seed,
                n_jobs=self.n_jobs,
            )
            setting.pool = part if setting.pool is None else setting.pool.joined(part)
            self.n_reference_fits_ += n_models - start
        attack = RMIAAttack(online=True).fit(setting.target, pool=setting.pool.first(n_models))
        setting.point = _point(setting, attack, n_models)
        return attack

    def _decide(
        self, original, survivors, reference, rule, pool_seed: int, steps
    ) -> Recommendation:
        """The rule of step 3 in the class docstring."""
        n = self.n_confirmation_models_
        best = survivors[0] if len(survivors) == 1 else min(survivors, key=_risk)
        current = self._score_current(original, reference, pool_seed, steps)
        tolerance = self.accuracy_tolerance
        if best is original:
            return _keep_current(current, tolerance)
        settled = ""
        if best.point.auc_ci[1] < current.auc and best.point.n_reference_models < n:
            steps.confirming(f"confirming {best.label}", n)
            settled = self._confirm(best, n, rule, pool_seed)
        if best.point.auc_ci[1] < current.auc and (best.point.n_reference_models >= n or settled):
            k = best.point.n_reference_models
            note = f"Recommended, confirmed with {k} models" + (f". {settled}" if settled else ".")
            best.point = replace(best.point, note=note)
            return _change_to(best.point, current, best.label)
        return _nothing_clearly_safer(best.point, current, best.label, tolerance)

    def _confirm(self, setting: _Setting, n: int, rule: RoundRule | None, pool_seed: int) -> str:
        """Grow the candidate's references towards ``n`` in the audit's rounds.

        Returns the rule's sentence when the figure settled before ``n``, else "".
        """
        if rule is None or rule.min_models == rule.max_models:  # a fixed count: all of it
            self._attack(setting, n, pool_seed)
            return ""
        start = setting.point.n_reference_models
        rule = replace(rule, min_models=start, max_models=n)
        history = []
        for count in round_counts(rule):
            attack = self._attack(setting, count, pool_seed)
            history.append(Round(count, [RoundResult.of(count, "rmia", attack)]))
            stop, reason = rounds_decide(history, rule, n_non_members=setting.target.n_non_members)
            if stop:
                return reason if count < n else ""
        return ""

    def _score_current(self, original, reference, pool_seed: int, steps) -> SweepPoint:
        """A: the audit's own figure if given, else RMIA with the confirmation count."""
        n = self.n_confirmation_models_
        if reference is not None:
            original.point = _reference_point(original, reference, original.point)
        elif original.point is None or original.point.n_reference_models < n:
            steps.confirming("scoring the current setting", n)
            self._attack(original, n, pool_seed)
        return original.point


class _Steps:
    """Progress of the sweep: stage k of ``n_stages`` (refits, rungs, confirmation)."""

    def __init__(self, progress, *, n_stages: int):
        self.progress = progress
        self.n_stages = n_stages

    def report(self, stage: int, i: int, n: int, what: str, n_models: int | None = None):
        if self.progress is None:
            return
        count = f"{i + 1} of {n}" + ("" if n_models is None else f", {n_models} reference models")
        self.progress(f"sweep: {what} ({count})", (stage + i / n) / self.n_stages)

    def confirming(self, what: str, n_models: int) -> None:
        if self.progress is not None:
            done = 1 - 1 / self.n_stages
            self.progress(f"sweep: {what} with {n_models} reference models", done)


def _setting(target: Target, name: str | None, value) -> _Setting:
    model = target.model
    return _Setting(
        param=name,
        value=value,
        target=target,
        test_accuracy=float(accuracy_score(target.y_test, model.predict(target.X_test))),
        train_accuracy=float(accuracy_score(target.y_train, model.predict(target.X_train))),
    )


def _point(setting: _Setting, attack: RMIAAttack, n_models: int) -> SweepPoint:
    """The setting's point; the attack's mirror when it ranks members clearly last.

    An AUC whose interval lies wholly below 0.5 separates members as well as its
    mirror does: an overfitted SVC's Platt scaling, fitted on cross-validated
    margins, can give its own training records the lower confidence (100 noisy
    rows at gamma 10: RMIA AUC 0.01, LiRA 0.99). The sweep ranks settings by
    risk, so it scores the mirror rather than call such a setting safe.
    """
    metrics, title = attack.metrics_, f"RMIA ({n_models} reference models)"
    if metrics.auc_ci[1] < 0.5:
        metrics = attack_metrics(attack.membership_, -attack.scores_)
        title = f"RMIA ({n_models} reference models, mirrored)"
    return SweepPoint(
        param=setting.param,
        value=_plain(setting.value),
        is_original=setting.param is None,
        auc=metrics.auc,
        auc_ci=tuple(metrics.auc_ci),
        tpr_at_1pct_fpr=metrics.tpr_at_fpr.get("0.01"),
        test_accuracy=setting.test_accuracy,
        train_accuracy=setting.train_accuracy,
        attack=title,
        n_reference_models=n_models,
    )


def _reference_point(original: _Setting, reference: SweepReference, measured) -> SweepPoint:
    note = "Scored by the audit's strongest attack."
    if measured is not None:
        note += f" The sweep's own {measured.attack} gave AUC {measured.auc:.3f}."
    return SweepPoint(
        param=None,
        value=None,
        is_original=True,
        auc=float(reference.auc),
        auc_ci=tuple(reference.auc_ci),
        tpr_at_1pct_fpr=reference.tpr_at_1pct_fpr,
        test_accuracy=original.test_accuracy,
        train_accuracy=original.train_accuracy,
        attack=reference.attack,
        n_reference_models=int(reference.n_reference_models),
        note=note,
    )


def _risk(setting: _Setting) -> tuple:
    """Lowest AUC, then lowest TPR at 1% FPR, then no change."""
    point = setting.point
    tpr = math.inf if point.tpr_at_1pct_fpr is None else point.tpr_at_1pct_fpr
    return point.auc, tpr, not point.is_original


def _without_clearly_riskier(settings: list[_Setting], n_models: int) -> list[_Setting]:
    """Drop each setting whose AUC interval lies wholly above the lowest-risk one's."""
    if not settings:
        return settings
    best = min(settings, key=_risk)
    kept = []
    for setting in settings:
        if setting.point.auc_ci[0] > best.point.auc_ci[1]:
            note = f"Dropped at {n_models} reference models: clearly riskier than {best.label}."
            setting.point = replace(setting.point, note=note)
        else:
            kept.append(setting)
    return kept


def _points(grid: dict, original: _Setting, settings: list[_Setting], own: dict) -> list:
    """Attacked settings in grid order, the original once, under the first parameter."""
    first = next(iter(grid))
    rest = [s.point for s in settings if s.point is not None]
    mine = replace(original.point, param=first, value=own[first])
    before = [p for p in rest if p.param == first and _sort_key(p.value) < _sort_key(mine.value)]
    return rest[: len(before)] + [mine] + rest[len(before) :]


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


#: The sweep's note for an ONNX model (a network, or scikit-learn through skl2onnx): its
#: settings are fixed in the file, or its declared recipe's, not estimator parameters.
NO_ONNX_SWEEP = (
    "The hyperparameter sweep does not apply to an ONNX model, so it suggests no change "
    "of setting; for a network, a declared recipe with more weight decay, fewer epochs or "
    "augmentation is what to try."
)


def _empty_note(model) -> str:
    """Why no sweep ran, as the report's "what would lower the risk" reads it."""
    core, _ = _core_template(model)
    if hasattr(core, "shadow_template"):  # safe_model.onnx_model.OnnxClassifier
        return NO_ONNX_SWEEP
    return f"No default sweep for {type(core).__name__}; pass grid= to sweep it."


def _param_name(model, prefix: str, name: str) -> str:
    params = model.get_params(deep=True)
    for candidate in (name, prefix + name):
        if candidate in params:
            return candidate
    raise AttackError(f"Cannot sweep {name!r}: {type(model).__name__} has no such parameter.")


def _clip_neighbours(grid: dict[str, list], target: Target) -> dict[str, list]:
    """Keep default ``n_neighbors`` below the smallest likely reference training set.

    Reference models train on random halves of members plus non-members; a third
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


def _keep_current(current: SweepPoint, tolerance: float) -> Recommendation:
    text = (
        f"The current setting is already the safest within {tolerance * 100:g} percentage "
        f"point(s) of held-out accuracy: no swept setting scored a lower attack AUC than its "
        f"{current.auc:.2f} (from {current.attack})."
    )
    return _no_change(current, text)


def _nothing_clearly_safer(best: SweepPoint, current: SweepPoint, label: str, tolerance):
    low, high = best.auc_ci
    text = (
        f"No swept setting is clearly safer within {tolerance * 100:g} percentage point(s) of "
        f"held-out accuracy: the lowest-risk one, {label}, scored attack AUC {best.auc:.2f} "
        f"(95% CI {low:.2f}-{high:.2f}, from {best.attack}), not wholly below the current "
        f"setting's {current.auc:.2f} (from {current.attack})."
    )
    return _no_change(current, text)


def _no_change(current: SweepPoint, text: str) -> Recommendation:
    return Recommendation(
        param=None,
        value=None,
        auc=current.auc,
        auc_ci=current.auc_ci,
        n_reference_models=current.n_reference_models,
        test_accuracy=current.test_accuracy,
        auc_reduction=0.0,
        accuracy_change=0.0,
        text=text,
    )


def _change_to(best: SweepPoint, current: SweepPoint, label: str) -> Recommendation:
    low, high = best.auc_ci
    text = (
        f"Setting {label} lowers attack AUC from {current.auc:.2f} to {best.auc:.2f} "
        f"(95% CI {low:.2f}-{high:.2f}) while held-out accuracy moves from "
        f"{current.test_accuracy:.1%} to {best.test_accuracy:.1%}. The current AUC is "
        f"from {current.attack}, the new one from {best.attack}."
    )
    return Recommendation(
        param=best.param,
        value=best.value,
        auc=best.auc,
        auc_ci=best.auc_ci,
        n_reference_models=best.n_reference_models,
        test_accuracy=best.test_accuracy,
        auc_reduction=current.auc - best.auc,
        accuracy_change=best.test_accuracy - current.test_accuracy,
        text=text,
    )


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value; anything else unchanged."""
    if isinstance(value, np.generic):
        return value.item()
    return value
