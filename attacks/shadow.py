"""The shadow-model attack of the TRE teaching example (Shokri et al. 2017, one shadow)."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.utils import check_random_state

from attacks.base import MembershipAttack
from attacks.description import sample_cohort
from attacks.exceptions import AttackError
from attacks.shadows import fit_quietly, reseeded_clone
from attacks.target import Target


class ShadowModelAttack(MembershipAttack):
    """One shadow model of the target's configuration and a logistic attack model.

    The shadow is trained on half of a shadow cohort; a logistic regression
    learns to tell its members from the other half by the shadow's highest
    class probability, and is then applied to the target's outputs.

    Parameters
    ----------
    data_description : dict or None, default=None
        Draw the shadow cohort from this per-column description (see
        :mod:`attacks.description`). If None, the held-out records are the
        shadow cohort.
    random_state : int, RandomState instance or None, default=None
        Seeds the cohort, the split and the shadow model.

    Attributes
    ----------
    shadow_member_confidence_ : float
        Mean highest probability the shadow gives its own members.
    shadow_non_member_confidence_ : float
        The same for the cohort's other half.
    """

    name = "shadow"

    def __init__(self, *, data_description=None, random_state=None):
        self.data_description = data_description
        self.random_state = random_state

    def fit(self, target: Target, pool=None, X_extra=None, y_extra=None):
        """Train the shadow and the attack model, then score the target's records."""
        rng = check_random_state(self.random_state)
        X_cohort, y_cohort = self._cohort(target, rng)
        inside = _stratified_half(y_cohort, rng)
        if inside.sum() < 2 or (~inside).sum() < 2:
            raise AttackError("The shadow cohort is too small to split into members and others.")
        shadow = reseeded_clone(target.model, int(rng.randint(2**31 - 1)))
        fit_quietly(shadow, X_cohort[inside], y_cohort[inside])
        conf = _max_confidence(shadow, X_cohort)
        self.shadow_member_confidence_ = float(conf[inside].mean())
        self.shadow_non_member_confidence_ = float(conf[~inside].mean())
        self.attack_model_ = LogisticRegression().fit(conf[:, None], inside.astype(int))
        X, _, membership = target.pool()
        scores = self._membership_proba(target.model, X)
        extra = np.empty(0) if X_extra is None else self._membership_proba(target.model, X_extra)
        return self._finish(membership, scores, scores, extra)

    def _cohort(self, target, rng):
        if self.data_description is None:
            return target.X_test.reset_index(drop=True), np.asarray(target.y_test)
        X, y = sample_cohort(self.data_description, classes=target.model.classes_, random_state=rng)
        return X[target.feature_names], y

    def _membership_proba(self, model, X):
        return self.attack_model_.predict_proba(_max_confidence(model, X)[:, None])[:, 1]


def _max_confidence(model, X) -> np.ndarray:
    if not hasattr(model, "predict_proba"):
        return np.ones(len(X))
    return np.asarray(model.predict_proba(X), float).max(axis=1)


def _stratified_half(y: np.ndarray, rng) -> np.ndarray:
    inside = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        inside[idx[: len(idx) // 2]] = True
    return inside
