"""Metrics of a membership inference attack.

All functions are pure: they take membership labels (1 member, 0 non-member)
and attack scores (higher means "more likely a member") and return numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata

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
    tpr_unresolved: dict[str, dict]
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


def roc_counts(membership: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positives at each ROC vertex, one vertex per distinct score.

    Vertex ``k`` counts every record scoring at least the ``k``-th highest
    distinct score, so records that tie are always counted together: a tie is
    never split in some arbitrary order.

    Returns
    -------
    fp, tp : int arrays of shape (n_distinct_scores + 1,)
        Starting at (0, 0) and ending at (n_non_members, n_members).
    """
    membership, scores = _checked(membership, scores)
    order = np.argsort(-scores, kind="stable")
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores[order])), len(scores) - 1]
    tp = np.cumsum(membership[order])[last_of_tie]
    fp = last_of_tie + 1 - tp
    return np.r_[0, fp], np.r_[0, tp]


def tpr_at_fpr(membership: np.ndarray, scores: np.ndarray, levels=FPR_LEVELS):
    """Best true-positive rate at each false-positive rate level.

    A level the scores cannot resolve is None, never 0; :func:`tpr_unresolved`
    says why.
    """
    return _tpr_table(membership, scores, levels)[0]


def tpr_unresolved(membership: np.ndarray, scores: np.ndarray, levels=FPR_LEVELS):
    """Why each level :func:`tpr_at_fpr` reports as None is unresolvable.

    Two reasons. ``"too_few_non_members"``: the level is finer than
    1 / n_non_members, so one false positive already exceeds it. ``"tie"``:
    the first tie group that would exceed the level holds members and
    non-members with the same score; taking part of it, its members could be
    ranked before or after its non-members, so the TPR lies anywhere in
    ``tpr_range`` = [TPR without the group, TPR with all of it]. A tie whose
    range is within the TPR's own resolution (its binomial standard error,
    and at least one member) resolves to the TPR without the group.

    Returns
    -------
    dict
        Level key -> ``{"reason": ...}``, plus ``tpr_range``, ``tied_members``
        and ``tied_non_members`` for a tie. Resolved levels are absent.
    """
    return _tpr_table(membership, scores, levels)[1]


def _tpr_table(membership, scores, levels):
    fp, tp = roc_counts(membership, scores)
    values, unresolved = {}, {}
    for level in levels:
        key = _level_key(level)
        values[key], why = _tpr_at_level(fp, tp, level)
        if why is not None:
            unresolved[key] = why
    return values, unresolved


def _tpr_at_level(fp: np.ndarray, tp: np.ndarray, level: float):
    """(TPR or None, None or the reason) at one FPR level, from the ROC counts."""
    budget = np.floor(level * fp[-1] + 1e-9)  # false positives the level allows
    if budget < 1:
        return None, {"reason": "too_few_non_members"}
    below = int(np.searchsorted(fp, budget, side="right")) - 1
    low = float(tp[below] / tp[-1])
    if below + 1 == len(tp):
        return low, None
    high = float(tp[below + 1] / tp[-1])
    if high - low <= _tpr_resolution((low + high) / 2, int(tp[-1])):
        return low, None
    tie = {
        "reason": "tie",
        "tpr_range": [low, high],
        "tied_members": int(tp[below + 1] - tp[below]),
        "tied_non_members": int(fp[below + 1] - fp[below]),
    }
    return None, tie


def _tpr_resolution(tpr: float, n_members: int) -> float:
    """How finely a TPR is known: its binomial standard error, and never below one member."""
    return max(np.sqrt(tpr * (1 - tpr) / n_members), 1 / n_members)


def _level_key(level: float) -> str:
    return format(level, "g")


def tpr_unresolved_text(why: dict) -> str:
    """One short phrase for a reader: why a TPR is n/a."""
    if why.get("reason") != "tie":
        return "too few non-members to resolve this rate"
    low, high = why.get("tpr_range", (0.0, 1.0))
    return (
        f"tie: {why.get('tied_members')} members and {why.get('tied_non_members')} "
        f"non-members score the same; TPR {low:.1%}–{high:.1%}"
    )


def membership_advantage(membership: np.ndarray, scores: np.ndarray) -> float:
    """Yeom et al.'s membership advantage: max over thresholds of TPR - FPR."""
    fp, tp = roc_counts(membership, scores)
    return float(np.max(tp / tp[-1] - fp / fp[-1]))


def roc_points(membership: np.ndarray, scores: np.ndarray, n_points: int = ROC_POINTS):
    """The ROC curve thinned to about ``n_points`` points, log-spaced in FPR.

    Before thinning it has one vertex per distinct score (see :func:`roc_counts`).
    """
    fp, tp = roc_counts(membership, scores)
    fpr, tpr = fp / fp[-1], tp / tp[-1]
    if len(fpr) <= n_points:
        return fpr.tolist(), tpr.tolist()
    grid = np.unique(np.r_[0.0, np.geomspace(max(fpr[fpr > 0].min(), 1e-6), 1.0, n_points)])
    kept = np.unique(np.searchsorted(fpr, grid, side="right") - 1)
    return fpr[kept].tolist(), tpr[kept].tolist()


def attack_metrics(membership: np.ndarray, scores: np.ndarray) -> AttackMetrics:
    """Every metric a report shows for one attack."""
    membership, scores = _checked(membership, scores)
    auc, ci = auc_with_ci(membership, scores)
    fpr, tpr_curve = roc_points(membership, scores)
    tpr, unresolved = _tpr_table(membership, scores, FPR_LEVELS)
    return AttackMetrics(
        auc=auc,
        auc_ci=ci,
        tpr_at_fpr=tpr,
        tpr_unresolved=unresolved,
        advantage=membership_advantage(membership, scores),
        roc_fpr=fpr,
        roc_tpr=tpr_curve,
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
