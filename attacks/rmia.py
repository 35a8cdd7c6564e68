"""Robust membership inference attack (RMIA), Zarifzadeh et al., "Low-Cost
High-Power Membership Inference Attacks", ICML 2024."""

from __future__ import annotations

import numpy as np

from attacks.base import MembershipAttack
from attacks.exceptions import AttackError
from attacks.shadows import ShadowPool, shadow_pool_fit
from attacks.target import EPS, Target, true_class_proba


class RMIAAttack(MembershipAttack):
    """Pairwise likelihood-ratio attack that stays strong with few reference models.

    A record x scores ``Pr(x|target) / Pr(x)``, where ``Pr(x)`` averages the
    reference models. The paper's score, the fraction of population records z
    whose own ratio x's beats by a factor gamma, is a monotone function of this
    ratio for a fixed population: it ranks records the same, except that it
    ties many of them (with the audit's non-members as z and gamma 2, 526 of
    569 breast-cancer records shared one score), so the ratio is what is scored.

    Parameters
    ----------
    n_reference_models : int, default=4
        Reference models trained on paired random halves of the pool. Ignored
        when a ``pool`` is passed to ``fit``.
    online : bool, default=True
        If True, ``Pr(x)`` averages every reference model (those that trained on
        x and those that did not). If False, only models that never saw x are
        used, corrected by ``offline_a`` as in the paper.
    offline_a : float, default=0.3
        Offline correction: ``Pr(x) = ((1 + a) * Pr_OUT(x) + (1 - a)) / 2``.
    random_state : int, RandomState instance or None, default=None
        Seeds the reference splits and models.
    n_jobs : int or None, default=None
        Processes that train reference models; None uses every core.

    Attributes
    ----------
    scores_ : ndarray of shape (n_records,)
        log of ``Pr(x|target) / Pr(x)``.
    """

    name = "rmia"

    def __init__(
        self,
        n_reference_models=4,
        *,
        online=True,
        offline_a=0.3,
        random_state=None,
        n_jobs=None,
    ):
        self.n_reference_models = n_reference_models
        self.online = online
        self.offline_a = offline_a
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, target: Target, pool: ShadowPool | None = None, X_extra=None, y_extra=None):
        """Train reference models (unless ``pool`` is given) and score every record."""
        if pool is None:
            pool = shadow_pool_fit(
                target,
                n_shadow_models=self.n_reference_models,
                random_state=self.random_state,
                n_jobs=self.n_jobs,
                X_extra=X_extra,
                y_extra=y_extra,
            )
        X, y, membership = target.pool()
        log_ratio = self._log_ratio(
            true_class_proba(target.model, X, y), pool.confidences, pool.in_mask
        )
        extra = np.empty(0)
        if X_extra is not None and pool.extra_confidences.shape[1]:
            # no reference model saw these rows: Pr(x) by the offline correction
            observed = true_class_proba(target.model, X_extra, y_extra)
            marginal = self._offline_marginal(pool.extra_confidences.mean(axis=0))
            extra = np.log(np.maximum(observed, EPS)) - np.log(np.maximum(marginal, EPS))
        self.n_reference_models_ = pool.n_shadow_models
        return self._finish(membership, log_ratio, extra_scores=extra)

    def _log_ratio(self, observed, confidences, in_mask):
        marginal = self._marginal(confidences, in_mask)
        return np.log(np.maximum(observed, EPS)) - np.log(np.maximum(marginal, EPS))

    def _marginal(self, confidences, in_mask):
        """Pr(x), averaged over the reference models."""
        if self.online:
            return confidences.mean(axis=0)
        out = ~in_mask
        if (out.sum(axis=0) == 0).any():
            raise AttackError("Offline RMIA needs at least 2 reference models.")
        pr_out = np.where(out, confidences, 0.0).sum(axis=0) / out.sum(axis=0)
        return self._offline_marginal(pr_out)

    def _offline_marginal(self, pr_out):
        return ((1 + self.offline_a) * pr_out + (1 - self.offline_a)) / 2
