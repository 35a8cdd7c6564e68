"""How many shadow (reference) models an audit trains: in rounds, until the answer holds.

Shadows are trained in rounds of doubling size (``min``, ``2 min``, ``4 min``, ...
up to ``max``). After each round the attacks that use them are scored on the pool
so far, and the strongest one (highest AUC) is compared with the same attack one
round earlier. The pool has converged when its AUC and its TPR at every
resolvable false-positive rate moved by at most ``tolerance`` standard errors
between the two rounds, the AUC also by no more than an absolute cap: more models would
not change what the report says. Shadow ``k`` is the same model whichever round
trains it (:func:`attacks.shadows.shadow_mask`), so the same seed stops at the
same round with the same pool.

The loop is split in pure steps so that it can run in one process
(:func:`pool_grow`) or as rounds of Celery tasks (the service).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import roc_curve

from attacks.reading import attack_name
from attacks.shadows import NO_TRAINING_RECIPE, ShadowPool

#: z of a two-sided 95% interval: a DeLong interval is AUC +- Z95 standard errors.
Z95 = 1.959964


@dataclass(frozen=True)
class RoundRule:
    """When to stop adding shadows; the risk policy's ``[audit]`` section sets it.

    Attributes
    ----------
    min_models, max_models : int
        The first round trains ``min_models``; none goes beyond ``max_models``.
        Equal, they ask for a fixed count and nothing is measured between rounds.
    tolerance : float
        Largest change between rounds, in standard errors of the figure.
    max_auc_change : float
        ...and the AUC in absolute terms too: on a small audit its standard
        error is wide, and an AUC that still moves by 0.01 per doubling has not
        settled. (A TPR on a small audit jitters by several records between
        rounds, so it is held to its standard error only.)
    min_false_positives : int
        A TPR counts only at FPR levels that allow this many non-member false
        positives (the verdict's own rule).
    """

    min_models: int = 4
    max_models: int = 64
    tolerance: float = 2.5
    max_auc_change: float = 0.01
    min_false_positives: int = 10

    @classmethod
    def fixed(cls, n_models: int) -> RoundRule:
        return cls(min_models=n_models, max_models=n_models)


@dataclass(frozen=True)
class RoundResult:
    """The strongest pool attack after one round."""

    n_models: int
    attack: str
    auc: float
    auc_se: float
    tpr_at_fpr: dict[str, float | None]
    tpr_se: dict[str, float | None]

    @classmethod
    def of(cls, n_models: int, name: str, attack) -> RoundResult:
        """Measure one fitted attack: its AUC and TPRs, with their standard errors."""
        metrics = attack.metrics_
        fpr, tpr, _ = roc_curve(attack.membership_, attack.scores_)
        errors = {
            key: None if value is None else _tpr_se(fpr, tpr, float(key), value, metrics)
            for key, value in metrics.tpr_at_fpr.items()
        }
        auc_se = (metrics.auc_ci[1] - metrics.auc_ci[0]) / (2 * Z95)
        return cls(n_models, name, metrics.auc, auc_se, dict(metrics.tpr_at_fpr), errors)


@dataclass(frozen=True)
class Round:
    """One round: the pool's size after it, and each pool attack scored on it."""

    n_models: int
    results: list[RoundResult]


def _why_none(error: Exception) -> str:
    """Why no pool was trained: a model without a recipe is not a failure, and says so."""
    if str(error) == NO_TRAINING_RECIPE:
        return NO_TRAINING_RECIPE
    return "Training the shadow models failed."


@dataclass
class PoolRounds:
    """A grown pool, its rounds and why they stopped; or the error that stopped them."""

    pool: ShadowPool | None
    history: list[Round]
    reason: str
    error: Exception | None = None

    @property
    def n_models(self) -> int:
        return 0 if self.pool is None else self.pool.n_shadow_models

    def get(self) -> ShadowPool:
        """The pool, or the training error raised again (each attack that needs it reports it)."""
        if self.error is not None:
            raise self.error
        return self.pool

    def summary(self, rule: RoundRule) -> dict:
        """The report's ``shadow_rounds``: what was trained, round by round, and why it stopped."""
        return {
            "n_models": self.n_models,
            "stopped": self.reason if self.error is None else _why_none(self.error),
            "rule": asdict(rule),
            "rounds": [
                {
                    "n_models": done.n_models,
                    "strongest": strongest(done.results).attack if done.results else None,
                    "attacks": [asdict(r) for r in done.results],
                }
                for done in self.history
            ],
        }


def round_counts(rule: RoundRule) -> list[int]:
    """Pool sizes after each round: ``min``, doubling, capped at ``max``."""
    counts, n = [], rule.min_models
    while n < rule.max_models:
        counts.append(n)
        n *= 2
    return counts + [rule.max_models]


def _at_max(rule: RoundRule) -> str:
    return f"Reached the policy's maximum of {rule.max_models} shadow models."


def strongest(results: list[RoundResult]) -> RoundResult:
    """The attack with the highest AUC (by name on a tie, so the choice is repeatable)."""
    return max(results, key=lambda r: (r.auc, r.attack))


def rounds_decide(history: list[Round], rule: RoundRule, *, n_non_members: int):
    """Whether to stop after the last round of ``history``, and the sentence saying why.

    ``history`` holds every pool attack's result after each round. The strongest
    attack of the last round is compared with the same attack one round earlier.

    Returns
    -------
    stop : bool
    reason : str
    """
    n_models = history[-1].n_models
    if rule.min_models == rule.max_models:
        return True, f"A fixed count of {rule.max_models} shadow models was asked for."
    if n_models >= rule.max_models:
        return True, _at_max(rule)
    if len(history) < 2 or not history[-1].results:
        return False, ""
    last = strongest(history[-1].results)
    previous = next((r for r in history[-2].results if r.attack == last.attack), None)
    if previous is None:
        return False, ""
    changes = _changes(previous, last, rule, n_non_members)
    if all(ok for _, ok in changes):
        moved = "; ".join(text for text, _ in changes)
        return True, (
            f"Converged: from {previous.n_models} to {last.n_models} models, "
            f"{pool_attack_title(last.attack)} moved {moved}, within the policy's tolerance."
        )
    return False, ""


def pool_grow(
    *,
    train: Callable[[int, int], ShadowPool],
    measure: Callable[[ShadowPool], list[RoundResult]],
    rule: RoundRule,
    n_non_members: int,
    progress: Callable[[int, int], None] | None = None,
):
    """Train rounds of shadows in this process until :func:`rounds_decide` stops.

    Parameters
    ----------
    train : callable(start, n) -> ShadowPool
        Trains shadows ``start .. start + n - 1``.
    measure : callable(ShadowPool) -> list of RoundResult
        Every pool attack scored on a pool.
    progress : callable(n_done, n_max), optional
        Called after each round.

    Returns
    -------
    PoolRounds
    """
    pool, history = None, []
    counts = round_counts(rule)
    for count in counts:
        start = 0 if pool is None else pool.n_shadow_models
        more = train(start, count - start)
        pool = more if pool is None else pool.joined(more)
        if progress is not None:
            progress(count, rule.max_models)
        history.append(Round(n_models=count, results=measure(pool)))
        stop, reason = rounds_decide(history, rule, n_non_members=n_non_members)
        if stop or count == counts[-1]:
            return PoolRounds(pool=pool, history=history, reason=reason or _at_max(rule))
    raise AssertionError("round_counts is never empty")  # pragma: no cover


def _changes(previous: RoundResult, last: RoundResult, rule: RoundRule, n_non_members: int):
    """(text, within tolerance) for the AUC and each resolvable TPR."""
    out = [
        _change(
            "AUC",
            previous.auc,
            last.auc,
            previous.auc_se,
            last.auc_se,
            rule.tolerance,
            rule.max_auc_change,
            "{:.4f}",
        )
    ]
    for key, value in last.tpr_at_fpr.items():
        before = previous.tpr_at_fpr.get(key)
        if value is None or before is None or float(key) * n_non_members < rule.min_false_positives:
            continue
        label = f"TPR at {float(key):.1%} FPR".replace(".0%", "%")
        out.append(
            _change(
                label,
                before,
                value,
                previous.tpr_se[key],
                last.tpr_se[key],
                rule.tolerance,
                None,
                "{:.3f}",
            )
        )
    return out


#: Float slack when comparing a change with its bound (0.31 - 0.29 is not 0.02).
_SLACK = 1e-9


def _change(label, before, after, se_before, se_after, tolerance, cap, fmt):
    """(text, ok): ``ok`` when the change is within ``tolerance`` SEs and any ``cap``."""
    delta = abs(after - before)
    se = max(se_before or 0.0, se_after or 0.0)
    ok = delta <= tolerance * se + _SLACK and (cap is None or delta <= cap + _SLACK)
    in_se = f" ({delta / se:.1f} standard errors)" if se > 0 else ""
    return f"{label} by {fmt.format(delta)}{in_se}", ok


def _tpr_se(fpr, tpr, level: float, value: float, metrics) -> float:
    """Standard error of a TPR at a fixed FPR: the members' binomial error plus the
    error of the threshold that ``level * n_non_members`` false positives place,
    carried into TPR by the ROC's slope there."""
    above = float(tpr[fpr <= 2 * level + 1e-12].max())
    slope = max(above - value, 0.0) / level
    n_pos, n_neg = metrics.n_members, metrics.n_non_members
    var = value * (1 - value) / n_pos + slope**2 * level * (1 - level) / n_neg
    return float(np.sqrt(max(var, 1.0 / n_pos**2)))


def pool_attack_title(name: str) -> str:
    """How a report names a pool attack in running text: its name for people."""
    return attack_name(name)
