"""The supervised output attack (report name ``worst_case``).

An attack model is trained on the target's outputs with the true membership
labels, which no real attacker has. That makes it a strong check of what the
outputs alone reveal, but not an upper bound: it sees no reference models, so
it cannot tell a record that is easy for every model from one this model
memorised, and RMIA or LiRA usually beat it (benchmarks/worst_case_bench.py).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm, rankdata
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.utils import check_random_state

from attacks.base import MembershipAttack
from attacks.metrics import auc_with_ci
from attacks.target import EPS, Target, logit, true_class_proba

#: Class probabilities (in class order, and sorted) beyond this many add nothing but width.
MAX_PROBA_FEATURES = 10

#: Trees of the attack model: 30 reach the AUC of 100 (0.674 vs 0.673 on the
#: 10,000-row benchmark forest) in a third of the time.
ATTACK_TREES = 30

#: Attack-model probabilities equal to this many decimals are one tie: a forest's
#: average of the same leaves in another order differs in the last digit.
PROBA_DECIMALS = 12

#: Column of the true-class probability in :func:`output_features`, counted
#: from the end; it breaks the attack model's ties.
P_TRUE_COLUMN = -5


class WorstCaseAttack(MembershipAttack):
    """Attack model trained on the target's outputs with the true membership.

    No real attacker has the true membership labels, so this shows what the
    outputs alone give away to a supervised attacker. It is not an upper
    bound on every attack: it sees no reference models, and LiRA and RMIA,
    which do, are usually stronger. Features are the class probabilities (in
    class order and sorted), the true-class probability, its logit, the loss,
    the margin between the top two classes and whether the prediction is
    correct, so a hard-label model that is perfect on its training set is
    still caught. Every record is scored out-of-fold. The forest's
    probabilities take few distinct values, so records it ties are ordered by
    their true-class probability; records the target itself answers the same
    stay tied, and the metrics report what that tie leaves unresolved.

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
        Processes scoring the folds. Each fold's forest runs on one thread,
        so the scores are the same whatever ``n_jobs`` is.

    Attributes
    ----------
    scores_ : ndarray of shape (n_records,)
        Rank of the attack model's out-of-fold probability, plus a fraction
        below 1 ordering the records it ties by their true-class probability.
    probabilities_ : ndarray of shape (n_records,)
        The attack model's out-of-fold membership probability.
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
        scores, proba = self._out_of_fold(features, membership, rng.randint(2**31 - 1))
        self.baseline_aucs_ = self._baseline_aucs(features, membership, rng)
        extra = self._score_extra(target, features, membership, X_extra, y_extra, rng)
        self._finish(membership, scores, proba, extra)
        self.p_value_ = _p_value(self.metrics_.auc, self.baseline_aucs_)
        return self

    def _baseline_aucs(self, features, membership, rng) -> np.ndarray:
        """AUCs of the same attack on shuffled membership: what no signal looks like."""
        aucs = []
        for _ in range(self.n_baselines):
            shuffled = rng.permutation(membership)
            scores, _ = self._out_of_fold(features, shuffled, rng.randint(2**31 - 1))
            aucs.append(auc_with_ci(shuffled, scores)[0])
        return np.array(aucs)

    def _model(self, seed):
        return RandomForestClassifier(
            n_estimators=ATTACK_TREES, min_samples_leaf=5, random_state=seed, n_jobs=1
        )

    def _out_of_fold(self, features, labels, seed):
        """Every record's tie-broken score and probability, from folds it was not in."""
        folds = StratifiedKFold(self.n_splits, shuffle=True, random_state=seed)
        proba = cross_val_predict(
            self._model(seed),
            features,
            labels,
            cv=folds,
            method="predict_proba",
            n_jobs=self.n_jobs,
        )[:, 1]
        return _ties_broken(proba, features[:, P_TRUE_COLUMN]), proba

    def _score_extra(self, target, features, membership, X_extra, y_extra, rng):
        if X_extra is None or len(X_extra) == 0:
            return np.empty(0)
        model = self._model(rng.randint(2**31 - 1)).fit(features, membership)
        return model.predict_proba(output_features(target.model, X_extra, y_extra))[:, 1]


def output_features(model, X, y) -> np.ndarray:
    """What an attacker can see of each record: probabilities, loss, margin, correctness.

    Columns: the class probabilities in class order and sorted (each at most
    ``MAX_PROBA_FEATURES``; a hard-label model gives its correctness instead),
    then the true-class probability, its logit, the loss, the margin between
    the two highest probabilities and the correctness.
    """
    p_true = true_class_proba(model, X, y)
    correct = (np.asarray(model.predict(X)) == np.asarray(y)).astype(float)
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(X), float)
    else:
        proba = correct[:, None]
    ranked = -np.sort(-proba, axis=1)
    margin = ranked[:, 0] - ranked[:, 1] if proba.shape[1] > 1 else ranked[:, 0]
    return np.column_stack(
        [
            proba[:, :MAX_PROBA_FEATURES],
            ranked[:, :MAX_PROBA_FEATURES],
            p_true,
            logit(p_true),
            -np.log(np.maximum(p_true, EPS)),
            margin,
            correct,
        ]
    )


def _ties_broken(proba: np.ndarray, p_true: np.ndarray) -> np.ndarray:
    """Scores ranking records by the attack model's probability, then by ``p_true``.

    The integer part is the dense rank of the probability (rounded to
    ``PROBA_DECIMALS``, so a forest's averaging noise is no distinction); the
    fraction, below 1, orders the records it ties by their true-class
    probability. Records tied on both stay tied.
    """
    ranks = rankdata(np.round(proba, PROBA_DECIMALS), method="dense")
    return ranks + rankdata(p_true) / (len(p_true) + 1)


def _p_value(auc: float, baseline_aucs: np.ndarray) -> float | None:
    if len(baseline_aucs) < 2:
        return None
    sd = max(float(baseline_aucs.std(ddof=1)), 1e-6)
    return float(norm.sf((auc - baseline_aucs.mean()) / sd))
