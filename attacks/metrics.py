"""Metrics of a membership inference attack.

All functions are pure: they take membership labels (1 member, 0 non-member)
and attack scores (higher means "more likely a member") and return numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_curve

#: The false-positive rates every report quotes TPR at. Keys in the JSON report
#: are these values as strings ("0.001", "0.01", "0.1").
FPR_LEVELS = (0.001, 0.01, 0.1)

#: ROC curves are stored with at most this many points (log-spaced in FPR) so a
#: report stays small on a 100,000-record audit.
ROC_POINTS = 200


@dataclass(frozen=True)
class AttackMetrics:
    """Summary of one attack's scores against the true membership."""

    auc: float
    auc_ci: tuple[float, float]
    tpr_at_fpr: dict[str, float | None]
    advantage: float
    roc_fpr: list[float]
    roc_tpr: list[float]
    n_members: int
    n_non_members: int

    @property
    def min_resolvable_fpr(self) -> float:
        return 1.0 / self.n_non_members


def auc_with_ci(membership: np.ndarray, scores: np.ndarray, level: float = 0.95):
    """AUC and its confidence interval by DeLong's method.

    Parameters
    ----------
    membership : array of shape (n,)
        1 for members, 0 for non-members.
    scores : array of shape (n,)
        Attack scores, higher meaning more likely a member.
    level : float, default=0.95
        Coverage of the interval.

    Returns
    -------
    auc : float
    ci : tuple of float
        (low, high), clipped to [0, 1].
    """
    membership, scores = _checked(membership, scores)
    pos, neg = scores[membership == 1], scores[membership == 0]
    m, n = len(pos), len(neg)
    ranks_all = rankdata(np.r_[pos, neg])
    auc = (ranks_all[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (ranks_all[:m] - rankdata(pos)) / n  # structural components
    v01 = 1.0 - (ranks_all[m:] - rankdata(neg)) / m
    var = np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n if m > 1 and n > 1 else 0.0
    half = norm.ppf(0.5 + level / 2) * np.sqrt(max(var, 0.0))
    return float(auc), (float(max(0.0, auc - half)), float(min(1.0, auc + half)))


def tpr_at_fpr(membership: np.ndarray, scores: np.ndarray, levels=FPR_LEVELS):
    """Best true-positive rate at each false-positive rate level.

    A level finer than 1 / n_non_members cannot be resolved: one false positive
    already exceeds it. Those levels are reported as None, never as 0.
    """
    membership, scores = _checked(membership, scores)
    n_neg = int((membership == 0).sum())
    fpr, tpr, _ = roc_curve(membership, scores, drop_intermediate=False)
    return {_level_key(lv): _tpr_below(fpr, tpr, lv, n_neg) for lv in levels}


def _tpr_below(fpr: np.ndarray, tpr: np.ndarray, level: float, n_neg: int) -> float | None:
    if level * n_neg < 1:
        return None
    return float(tpr[fpr <= level + 1e-12].max())


def _level_key(level: float) -> str:
    return format(level, "g")


def membership_advantage(membership: np.ndarray, scores: np.ndarray) -> float:
    """Yeom et al.'s membership advantage: max over thresholds of TPR - FPR."""
    membership, scores = _checked(membership, scores)
    fpr, tpr, _ = roc_curve(membership, scores)
    return float(np.max(tpr - fpr))


def roc_points(membership: np.ndarray, scores: np.ndarray, n_points: int = ROC_POINTS):
    """A ROC curve thinned to about ``n_points`` points, log-spaced in FPR."""
    fpr, tpr, _ = roc_curve(membership, scores)
    if len(fpr) <= n_points:
        return fpr.tolist(), tpr.tolist()
    grid = np.unique(np.r_[0.0, np.geomspace(max(fpr[fpr > 0].min(), 1e-6), 1.0, n_points)])
    kept = np.searchsorted(fpr, grid, side="right") - 1
    return fpr[kept].tolist(), tpr[kept].tolist()


def attack_metrics(membership: np.ndarray, scores: np.ndarray) -> AttackMetrics:
    """Every metric a report shows for one attack."""
    membership, scores = _checked(membership, scores)
    auc, ci = auc_with_ci(membership, scores)
    fpr, tpr = roc_points(membership, scores)
    return AttackMetrics(
        auc=auc,
        auc_ci=ci,
        tpr_at_fpr=tpr_at_fpr(membership, scores),
        advantage=membership_advantage(membership, scores),
        roc_fpr=fpr,
        roc_tpr=tpr,
        n_members=int((membership == 1).sum()),
        n_non_members=int((membership == 0).sum()),
    )


def _checked(membership, scores):
    membership = np.asarray(membership).astype(int).ravel()
    scores = np.asarray(scores, dtype=float).ravel()
    if membership.shape != scores.shape:
        raise ValueError("membership and scores must have the same length")
    if not np.isfinite(scores).all():
        raise ValueError("attack scores must be finite")
    if set(np.unique(membership)) != {0, 1}:
        raise ValueError("an attack needs both members and non-members")
    return membership, scores
