"""The verdict: low, medium or high risk, every reason tied to its evidence.

Each piece of evidence is judged on its own against the policy, and the
verdict is the highest risk found. Nothing depends on the order attacks ran
in, and no attack's numbers are quoted as another's evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from attacks.policy import Policy
from attacks.reading import RISKS, attack_name


@dataclass(frozen=True)
class Reason:
    """One finding behind a verdict."""

    risk: str
    source: str
    text: str
    evidence: dict[str, Any] = field(default_factory=dict)
    title: str = ""


@dataclass(frozen=True)
class Verdict:
    """The overall risk and its reasons, high first."""

    risk: str
    reasons: tuple[Reason, ...]
    summary: str


def risk_max(risks) -> str:
    """The highest of some risk levels ("low" when there are none)."""
    return max(risks, key=RISKS.index, default="low")


def verdict_decide(
    *, attacks: list[dict], rules: list[dict], record: dict | None, policy: Policy
) -> Verdict:
    """Judge attack results (report dicts), rule findings and a queried record."""
    reasons = [r for a in attacks for r in attack_reasons(a, policy)]
    reasons += [
        Reason(
            f["risk"],
            f"rule:{f['rule']}",
            f["reason"],
            f.get("evidence", {}),
            f.get("title", f["rule"]),
        )
        for f in rules
        if f["risk"] != "low"
    ]
    if record is not None:
        reasons += record_reasons(record, policy)
    reasons.sort(key=lambda r: (-RISKS.index(r.risk), r.source, r.text))
    risk = risk_max(r.risk for r in reasons)
    return Verdict(
        risk=risk, reasons=tuple(reasons) or (_all_clear(attacks),), summary=_summary(risk, reasons)
    )


def attack_reasons(attack: dict, policy: Policy) -> list[Reason]:
    """What one attack's own metrics say, judged against the policy."""
    source = f"attack:{attack['name']}"
    if attack.get("error"):
        return [
            Reason(
                "medium",
                source,
                f"{attack['title']} could not run: {attack['error']} "
                "The audit is incomplete without it.",
                {"error": attack["error"]},
                attack["title"],
            )
        ]
    return [
        r
        for r in (_auc_reason(attack, source, policy), _tpr_reason(attack, source, policy))
        if r is not None
    ]


def _auc_reason(attack, source, policy) -> Reason | None:
    auc, (low, high) = attack["auc"], attack["auc_ci"]
    risk = _level(auc, policy["attacks", "auc_medium"], policy["attacks", "auc_high"])
    significant = low > 0.5 or not policy["attacks", "require_significant_auc"]
    if risk == "low" or not significant:
        return None
    text = (
        f"{attack['title']} tells members from non-members with AUC {auc:.3f} "
        f"(95% CI {low:.3f} to {high:.3f}; 0.5 is guessing)."
    )
    return Reason(risk, source, text, {"auc": auc, "auc_ci": [low, high]}, attack["title"])


def _tpr_reason(attack, source, policy) -> Reason | None:
    worst = None
    n_non_members = 1 / attack["min_resolvable_fpr"]
    for key, tpr in _tpr_lower_bounds(attack).items():
        if float(key) * n_non_members < policy["attacks", "min_false_positives"]:
            continue
        ratio = tpr / float(key)
        risk = _level(
            ratio, policy["attacks", "tpr_ratio_medium"], policy["attacks", "tpr_ratio_high"]
        )
        if risk != "low" and (worst is None or RISKS.index(risk) > RISKS.index(worst[0])):
            worst = (risk, key, tpr, ratio)
    if worst is None:
        return None
    risk, key, tpr, ratio = worst
    fpr = float(key)
    at_least = "at least " if key in attack.get("tpr_unresolved", {}) else ""
    text = (
        f"{attack['title']} identifies {at_least}{tpr:.1%} of members while wrongly accusing "
        f"only {fpr:.1%} of non-members ({ratio:.1f} times chance)."
    )
    evidence = {"fpr": fpr, "tpr": tpr, "times_chance": ratio}
    return Reason(risk, source, text, evidence, f"{attack['title']} at low FPR")


def _tpr_lower_bounds(attack) -> dict[str, float]:
    """Each level's TPR; where a tie leaves it unresolved, the TPR just above the tie.

    A threshold above the tie reaches that rate within the level, so it is a
    rate the attack shows, not a guess inside the tie.
    """
    unresolved = attack.get("tpr_unresolved", {})
    bounds = {}
    for key, tpr in attack["tpr_at_fpr"].items():
        tie = unresolved.get(key, {})
        if tpr is None and tie.get("reason") == "tie":
            tpr = tie["tpr_range"][0]
        if tpr is not None:
            bounds[key] = tpr
    return bounds


def record_reasons(record: dict, policy: Policy) -> list[Reason]:
    """Whether the queried record is exposed, by the strongest attack."""
    p, name = record["membership_probability"], record["attack"]
    fpr = next((a["false_positive_rate"] for a in record["attacks"] if a["name"] == name), None)
    risk = _level(p, policy["record", "probability_medium"], policy["record", "probability_high"])
    if risk == "low" or fpr is None or fpr > policy["record", "max_false_positive_rate"]:
        return []
    text = (
        f"The queried record is judged a member with probability {p:.0%} by "
        f"{attack_name(name)}, "
        f"which scores only {fpr:.1%} of non-members as high."
    )
    return [
        Reason(
            risk,
            "record",
            text,
            {"membership_probability": p, "attack": name, "false_positive_rate": fpr},
            "The queried record",
        )
    ]


def _level(value: float, medium: float, high: float) -> str:
    return "high" if value >= high else "medium" if value >= medium else "low"


def _all_clear(attacks) -> Reason:
    ran = [a for a in attacks if not a.get("error")]
    best = max((a["auc"] for a in ran), default=None)
    text = "No attack or rule reached the policy's thresholds" + (
        f"; the strongest attack's AUC was {best:.3f}." if best is not None else "."
    )
    return Reason("low", "audit", text, {"best_auc": best}, "No finding")


def _summary(risk: str, reasons: list[Reason]) -> str:
    if not reasons:
        return "Low risk: no attack or rule found evidence that the model gives away its members."
    top = [r for r in reasons if r.risk == risk]
    if all(r.evidence.get("error") for r in top):  # e.g. a network declared without a recipe
        names = dict.fromkeys(attack_name(r.source.partition(":")[2]) for r in top)
        return f"{risk.capitalize()} risk: the audit is incomplete; not run: {'; '.join(names)}."
    titles = list(dict.fromkeys(r.title or r.source for r in top))
    return f"{risk.capitalize()} risk, from: {'; '.join(titles)}."
