"""The worst-case attack: an upper bound on what the model's outputs reveal."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.utils import check_random_state

from attacks.base import MembershipAttack
from attacks.metrics import auc_with_ci
from attacks.target import EPS, Target, true_class_proba

#: Sorted class probabilities beyond this many add nothing but width.
MAX_PROBA_FEATURES = 10

#: Trees of the attack model: 30 reach the AUC of 100 (0.674 vs 0.673 on the
#: 10,000-row benchmark forest) in a third of the time.
ATTACK_TREES = 30


class WorstCaseAttack(MembershipAttack):
    """Attack model trained on the target's own outputs for members and non-members.

    No real attacker has the true membership labels, so this bounds what any
    attack on the outputs could learn. Features are the sorted class
    probabilities, the true-class probability, the loss and whether the
    prediction is correct, so a hard-label model that is perfect on its
    training set is still caught. Every record is scored out-of-fold.

    Parameters
    ----------
    n_splits : int, default=5
        Cross-validation folds of the attack model.
    n_baselines : int, default=3
        Repeats with shuffled membership labels. Their AUCs show what "no
        signal" looks like on this many records.
    random_state : int, RandomState instance or None, default=None
        Seeds the folds, the attack model and the shuffles.
    n_jobs : int or None, default=None
        Threads of the attack model.

    Attributes
    ----------
    baseline_aucs_ : ndarray of shape (n_baselines,)
        AUC of the same attack on shuffled labels.
    p_value_ : float
        One-sided probability of an AUC this high with no membership signal,
        from the normal approximation of the baseline AUCs.
    """

    name = "worst_case"

    def __init__(self, n_splits=5, *, n_baselines=3, random_state=None, n_jobs=None):
        self.n_splits = n_splits
        self.n_baselines = n_baselines
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, target: Target, pool=None, X_extra=None, y_extra=None):
        """Build output features, score every record out-of-fold, and run baselines."""
        rng = check_random_state(self.random_state)
        X, y, membership = target.pool()
        features = output_features(target.model, X, y)
        scores = self._out_of_fold(features, membership, rng.randint(2**31 - 1))
        self.baseline_aucs_ = self._baseline_aucs(features, membership, rng)
        extra = self._score_extra(target, features, membership, X_extra, y_extra, rng)
        self._finish(membership, scores, scores, extra)
        self.p_value_ = _p_value(self.metrics_.auc, self.baseline_aucs_)
        return self

    def _baseline_aucs(self, features, membership, rng) -> np.ndarray:
        """AUCs of the same attack on shuffled membership: what no signal looks like."""
        aucs = []
        for _ in range(self.n_baselines):
            shuffled = rng.permutation(membership)
            scores = self._out_of_fold(features, shuffled, rng.randint(2**31 - 1))
            aucs.append(auc_with_ci(shuffled, scores)[0])
        return np.array(aucs)

    def _model(self, seed):
        return RandomForestClassifier(
            n_estimators=ATTACK_TREES, min_samples_leaf=5, random_state=seed, n_jobs=self.n_jobs
        )

    def _out_of_fold(self, features, labels, seed):
        folds = StratifiedKFold(self.n_splits, shuffle=True, random_state=seed)
        return cross_val_predict(
            self._model(seed), features, labels, cv=folds, method="predict_proba"
        )[:, 1]

    def _score_extra(self, target, features, membership, X_extra, y_extra, rng):
        if X_extra is None or len(X_extra) == 0:
            return np.empty(0)
        model = self._model(rng.randint(2**31 - 1)).fit(features, membership)
        return model.predict_proba(output_features(target.model, X_extra, y_extra))[:, 1]


def output_features(model, X, y) -> np.ndarray:
    """What an attacker can see of each record: sorted probabilities, loss, correctness."""
    p_true = true_class_proba(model, X, y)
    correct = (np.asarray(model.predict(X)) == np.asarray(y)).astype(float)
    if hasattr(model, "predict_proba"):
        proba = -np.sort(-np.asarray(model.predict_proba(X), float), axis=1)
        proba = proba[:, :MAX_PROBA_FEATURES]
    else:
        proba = correct[:, None]
    loss = -np.log(np.maximum(p_true, EPS))
    return np.column_stack([proba, p_true, loss, correct])


def _p_value(auc: float, baseline_aucs: np.ndarray) -> float | None:
    if len(baseline_aucs) < 2:
        return None
    sd = max(float(baseline_aucs.std(ddof=1)), 1e-6)
    return float(norm.sf((auc - baseline_aucs.mean()) / sd))
