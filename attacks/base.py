"""What every membership attack shares: fitted scores, probabilities and metrics."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from attacks.metrics import AttackMetrics, attack_metrics


class MembershipAttack(BaseEstimator):
    """Base class of the attacks. Subclasses implement ``fit`` and call ``_finish``.

    Attributes
    ----------
    membership_ : ndarray of shape (n_records,)
        1 for the target's members, 0 for non-members, in pool order
        (members first).
    scores_ : ndarray of shape (n_records,)
        Attack score per record; higher means more exposed. Used for ranking.
    probabilities_ : ndarray of shape (n_records,)
        Membership probability per record, in [0, 1]. Attacks whose scores are
        not probabilities (LiRA, RMIA) calibrate them: a one-dimensional
        logistic fit of membership on score over the audit's own members and
        non-members, i.e. how often a record scoring this high is a member.
    extra_probabilities_ : ndarray of shape (n_extra,)
        Membership probability of extra rows given to ``fit`` (a queried record).
    metrics_ : AttackMetrics
        AUC with its interval, TPR at fixed FPRs, advantage and ROC.
    """

    #: Name used in reports.
    name = "attack"

    def _finish(
        self, membership, scores, probabilities=None, extra_probabilities=(), extra_scores=()
    ):
        """Store results; with ``probabilities`` None, calibrate them from the scores."""
        self.membership_ = np.asarray(membership, dtype=int)
        self.scores_ = np.asarray(scores, dtype=float)
        self.metrics_: AttackMetrics = attack_metrics(self.membership_, self.scores_)
        if probabilities is None:
            calibrated = _calibrate(self.scores_, self.membership_)
            probabilities = calibrated(self.scores_)
            extra_probabilities = calibrated(np.asarray(extra_scores, dtype=float))
        self.probabilities_ = np.clip(np.asarray(probabilities, dtype=float), 0.0, 1.0)
        self.extra_probabilities_ = np.clip(np.asarray(extra_probabilities, dtype=float), 0, 1)
        return self

    def most_exposed(self, k: int = 10) -> np.ndarray:
        """Indices (into the training set) of the ``k`` members scored most exposed."""
        check_is_fitted(self, "scores_")
        member_scores = self.scores_[self.membership_ == 1]
        order = np.argsort(-member_scores, kind="stable")
        return order[:k]


def _calibrate(scores: np.ndarray, membership: np.ndarray):
    """Score -> P(member | score), a monotone logistic fit on the audit pool."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=100.0))
    model.fit(scores[:, None], membership)

    def probability(values: np.ndarray) -> np.ndarray:
        return model.predict_proba(values[:, None])[:, 1] if len(values) else np.empty(0)

    return probability
