"""One typed reader of ``report.json``: the names, units and sentences people see.

Every place a person reads a report (the request page, the compare view, the
dashboard, review evidence and the PDF) reads it through this module, so an
attack has one name, a rate one unit (percent) and a finding one sentence
wherever it appears. Internal identifiers (``attack:lira``, ``rule:...``,
``lira_offline``) stay in the JSON and in HTML ids; no sentence built here
contains one.

Like the PDF renderer, the reader trusts nothing in the report: any key may be
missing, null or of the wrong type, and it then reads as missing, never raises.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from attacks.metrics import FPR_LEVELS as _FPR_RATES

#: Risk levels, lowest first: the one risk order of the reports.
RISKS = ("low", "medium", "high")

#: The false-positive rates every report quotes a TPR at, as the JSON keys them.
FPR_LEVELS = tuple(format(level, "g") for level in _FPR_RATES)

#: What is shown for a missing value.
MISSING = "–"

#: Attack name in the report -> (name for people, the kind of evidence it gives).
ATTACK_NAMES = {
    "shadow": ("Shadow-model attack", "shadow"),
    "lira": ("LiRA (online)", "reference"),
    "lira_offline": ("LiRA (offline)", "reference"),
    "rmia": ("RMIA", "reference"),
    "worst_case": ("Supervised output attack", "output"),
}

#: A rule finding without a title (a malformed or very old report).
RULE_UNTITLED = "A rule on the model's settings"

#: Kind of evidence -> how a sentence names several attacks of that kind.
KINDS = {
    "reference": "using shadow models",
    "shadow": "using one shadow model",
    "output": "trained on the model's outputs",
}

#: Terms a checker may not know, explained in a sentence or two (hover on the
#: web page, the last section of the PDF).
GLOSSARY = {
    "membership inference": "Guessing, from a model, whether a given person's record was "
    "in the data the model was trained on. Being in that data can itself be private "
    "(for example, having a disease a study is about).",
    "member": "A record the model was trained on. Non-members are records it never saw "
    "(the held-out set).",
    "AUC": "Area under the ROC curve: how well an attack ranks members above non-members "
    "overall. 0.5 is guessing, 1.0 is perfect.",
    "TPR at FPR": "The share of members an attack identifies (true-positive rate) while "
    "wrongly accusing only a small, fixed share of non-members (false-positive rate, "
    "false alarms). A high TPR at a low FPR means some people are exposed with confidence, "
    "even when the AUC looks modest.",
    "false alarm": "A non-member that an attack wrongly flags as a member.",
    "ROC curve": "Every trade-off between identified members (TPR) and false alarms (FPR) "
    "an attack can make; drawn on log axes so the low false-alarm end is visible.",
    "1/N line": "With N non-members the smallest false-alarm rate that can be measured is "
    "1/N (one false alarm); rates left of it cannot be told apart.",
    "shadow model": "A copy of the model's recipe trained by the auditor on data whose "
    "members are known, to learn how the model behaves on records it has or has not seen. "
    "Also called a reference model.",
    "LiRA": "Likelihood-ratio attack (Carlini et al., 2022): compares the model's confidence "
    "on a record with that of shadow models trained with and without it (online) or only "
    "without it (offline).",
    "RMIA": "Robust membership inference attack (Zarifzadeh et al., 2024): compares the "
    "model's confidence on a record with the average of a few reference models.",
    "shadow-model attack": "The classic attack (Shokri et al., 2017): a classifier trained "
    "on a shadow model's outputs for its known members and non-members.",
    "supervised output attack": "A classifier trained directly on the audited model's outputs "
    "for known members and non-members. It shows what the outputs alone give away; it is "
    "not an upper bound, and stronger attacks may find more.",
    "advantage": "The largest gap between identified members and false alarms (TPR minus "
    "FPR) over every threshold; 0 is no better than guessing.",
    "hyperparameter sweep": "The model retrained with one setting changed at a time, each "
    "attacked again, to find a setting that lowers the risk at a small cost in accuracy.",
}


# ======================================================================================
# Safe access
# ======================================================================================


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _dicts(value) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _num(value) -> float | None:
    """A finite number, or None for anything else (bools included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _str(value, default: str = "") -> str:
    return value if isinstance(value, str) and value else default


# ======================================================================================
# Numbers in one unit system
# ======================================================================================


def percent(value, decimals: int | None = None) -> str:
    """A rate as a percentage: ``"64%"``, ``"5.8%"``, ``"0.20%"``; missing as "–".

    ``decimals`` fixes the places, for rates compared to a tenth of a point (accuracy).
    """
    number = _num(value)
    if number is None:
        return MISSING
    p = 100 * number
    if decimals is not None:
        return f"{p:.{decimals}f}%"
    if p == 0 or abs(p) >= 10:
        return f"{p:.0f}%"
    return f"{p:.1f}%" if abs(p) >= 1 else f"{p:.2f}%"


def fpr_label(level: str) -> str:
    """A FPR key as people read it: ``"0.01"`` -> ``"1%"``."""
    return f"{100 * float(level):g}%" if _is_level(level) else MISSING


def false_alarms(level: str) -> str:
    """A FPR key as odds: ``"0.01"`` -> ``"1 in 100 false alarms"``."""
    rate = float(level) if _is_level(level) else 0
    return f"1 in {round(1 / rate):,} false alarms" if rate > 0 else "any false-alarm rate"


def _is_level(level) -> bool:
    try:
        return isinstance(level, str) and 0 < float(level) <= 1
    except ValueError:
        return False


def auc_text(value) -> str:
    number = _num(value)
    return MISSING if number is None else f"{number:.2f}"


def points(value) -> str:
    """A change in accuracy (a fraction) as percentage points: ``-0.003`` -> ``"0.3"``."""
    number = _num(value)
    return MISSING if number is None else f"{abs(100 * number):.1f}"


# ======================================================================================
# Names for people
# ======================================================================================


def attack_name(name) -> str:
    """The name people see for an attack called ``name`` in the report."""
    if isinstance(name, str) and name in ATTACK_NAMES:
        return ATTACK_NAMES[name][0]
    words = _str(name, "unnamed attack").replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def attack_title(attack: dict) -> str:
    """An attack's full title with its model count (``"RMIA (8 reference models)"``)."""
    title = _str(_dict(attack).get("title"))
    return title or attack_name(_dict(attack).get("name"))


def attack_kind(name) -> str:
    return ATTACK_NAMES[name][1] if isinstance(name, str) and name in ATTACK_NAMES else "other"


def setting_text(param, value) -> str:
    """A model setting as the researcher writes it: ``forest__max_depth``, 8 -> ``max_depth=8``."""
    return f"{_str(param, 'setting').split('__')[-1]}={value!r}"


def finding_titles(report: dict | None) -> dict[str, str]:
    """Each finding source of a report (``attack:rmia``, ``rule:...``) with its name for people.

    Review evidence, the review forms and the dashboard name findings by these.
    """
    report = _dict(report)
    titles = {}
    for reason in _dicts(_dict(report.get("verdict")).get("reasons")):
        source = reason.get("source")
        if isinstance(source, str) and source:
            titles[source] = source_title(report, source)
    for rule in _dicts(report.get("rules")):
        titles[f"rule:{rule.get('rule')}"] = _str(rule.get("title"), RULE_UNTITLED)
    for attack in _dicts(report.get("attacks")):
        titles[f"attack:{attack.get('name')}"] = attack_name(attack.get("name"))
    if report.get("sweep"):
        titles["sweep"] = "Hyperparameter sweep"
    return dict(sorted(titles.items()))


def source_title(report: dict, source: str) -> str:
    """The name for people of one finding source."""
    kind, _, name = source.partition(":")
    if kind == "attack":
        return attack_name(name)
    if kind == "rule":
        rule = next((r for r in _dicts(report.get("rules")) if r.get("rule") == name), {})
        return _str(rule.get("title"), RULE_UNTITLED)
    return {
        "record": "The queried record",
        "audit": "No finding",
        "sweep": "Hyperparameter sweep",
    }.get(source, "Finding")


# ======================================================================================
# Typed rows: attacks and their TPR cells
# ======================================================================================


@dataclass(frozen=True)
class TprCell:
    """One TPR at one FPR level: the percentage, or "n/a" and why in words."""

    level: str
    value: float | None
    text: str
    why: str = ""


@dataclass(frozen=True)
class AttackRow:
    """One attack of the report, as people read it."""

    source: str
    name: str
    title: str
    kind: str
    error: str
    auc: float | None
    auc_low: float | None
    auc_high: float | None
    tpr: tuple[TprCell, ...]
    advantage: float | None

    @property
    def ran(self) -> bool:
        return not self.error and self.auc is not None


def attack_rows(report: dict | None) -> list[AttackRow]:
    """Every attack of the report, in the report's order."""
    n = _num(_dict(_dict(report).get("data")).get("n_non_members"))
    return [_attack_row(a, n) for a in _dicts(_dict(report).get("attacks"))]


def _attack_row(attack: dict, n_non_members: float | None) -> AttackRow:
    ci = attack.get("auc_ci") if isinstance(attack.get("auc_ci"), list) else []
    ci = (ci + [None, None])[:2]
    name = attack.get("name")
    return AttackRow(
        source=f"attack:{name}",
        name=attack_name(name),
        title=attack_title(attack),
        kind=attack_kind(name),
        error=_str(attack.get("error")),
        auc=_num(attack.get("auc")),
        auc_low=_num(ci[0]),
        auc_high=_num(ci[1]),
        tpr=tuple(tpr_cell(attack, level, n_non_members) for level in FPR_LEVELS),
        advantage=_num(attack.get("advantage")),
    )


def tpr_cell(attack: dict, level: str, n_non_members: float | None = None) -> TprCell:
    """The TPR at ``level`` in percent; when it is missing, why, in words."""
    value = _num(_dict(attack.get("tpr_at_fpr")).get(level))
    if value is not None:
        return TprCell(level, value, percent(value))
    if attack.get("error"):
        return TprCell(level, None, MISSING, "the attack did not run")
    why = _dict(_dict(attack.get("tpr_unresolved")).get(level))
    return TprCell(level, None, "n/a", unresolved_text(why, level, n_non_members))


def unresolved_text(why: dict, level: str, n_non_members: float | None = None) -> str:
    """Why a TPR is n/a, in words: a tie at that rate, or too few non-members to measure it."""
    if why.get("reason") == "tie":
        low, high = ((_dicts([why]) or [{}])[0].get("tpr_range") or [None, None])[:2]
        return (
            f"a tie: {why.get('tied_members')} members and {why.get('tied_non_members')} "
            f"non-members get the same score at this rate, so the rate lies between "
            f"{percent(low)} and {percent(high)} depending on how the tie is broken"
        )
    if n_non_members:
        return (
            f"too few non-members: with {n_non_members:,.0f} of them, {fpr_label(level)} is "
            f"less than one false alarm, so this rate cannot be measured"
        )
    return "too few non-members to measure a rate this small"


def strongest_attack(report: dict | None) -> AttackRow | None:
    """The attack with the highest AUC among those that ran (ties by name)."""
    ran = [a for a in attack_rows(report) if a.ran]
    return max(ran, key=lambda a: (a.auc, a.source), default=None)


def risk_of(report: dict, source: str) -> str:
    """The highest risk the verdict gives a finding source ("low" when it gives none)."""
    reasons = _dicts(_dict(report.get("verdict")).get("reasons"))
    return risk_max(r.get("risk") for r in reasons if r.get("source") == source)


def risk_max(risks) -> str:
    """The highest of some risk levels ("low" when there are none; unknown words ignored)."""
    return max((r for r in risks if r in RISKS), key=RISKS.index, default="low")


def risk_rank(risk) -> int:
    """Sort key putting high first, then medium, low and anything unknown."""
    return -RISKS.index(risk) if risk in RISKS else 1


# ======================================================================================
# The plain-language summary: the same sentences on the web page and in the PDF
# ======================================================================================


@dataclass(frozen=True)
class Evidence:
    """One sentence of the summary for one kind of evidence, with its risk."""

    risk: str
    text: str


@dataclass(frozen=True)
class Summary:
    """What a checker reads first: verdict, evidence, meaning, the change to ask for."""

    risk: str | None
    verdict: str
    evidence: tuple[Evidence, ...] = field(default_factory=tuple)
    meaning: str = ""
    change: str = ""
    exposed: str = ""


VERDICTS = {
    "high": "High risk: the model gives away which people were in its training data. "
    "Do not release it as it stands.",
    "medium": "Medium risk: the model gives some evidence of which people were in its "
    "training data. Release it only with the change below, or with a reason to accept it.",
    "low": "Low risk: no attack or check found that the model gives away who was in its "
    "training data beyond what the policy accepts.",
}
MEANINGS = {
    "high": "For a person in the training data, this means that someone holding the model "
    "and that person's record could tell, with few false alarms, that they were in it, and "
    "so learn whatever being in this data set says about them.",
    "medium": "For a person in the training data, this means the model gives some evidence "
    "that they were in it, though an attacker acting on it would also accuse many people "
    "who were not.",
    "low": "For a person in the training data, the attacks could not tell whether they were "
    "in it much better than guessing.",
}
EXPOSED_GUIDANCE = (
    "These are the training rows the strongest attack is surest about; a membership "
    "probability near 100% means it would name that row as a member with confidence. "
    "If the verdict is medium or high, treat these people as identifiable: ask the "
    "researcher for the suggested change (or for a reason it is not needed) before approving, "
    "and ask them to check these rows, by row number, for duplicates or unusual values."
)
#: The verdict and its meaning when every finding behind it is an attack that could not run
#: (a network declared without a recipe): nothing was found, but nothing was shown either.
INCOMPLETE_VERDICT = (
    "Medium risk: the audit is incomplete, because attacks it needs could not run, so it "
    "cannot show that the model keeps its training data private. Release it only once they "
    "have run, or with a reason to accept it."
)
INCOMPLETE_MEANING = (
    "For a person in the training data, this audit cannot yet say how exposed they are: "
    "the attacks that would tell could not run."
)
INCOMPLETE_CHANGE = (
    "No change of setting can be suggested until the attacks that could not run have run."
)
_COUNTS = ("No", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine")


def summary(report: dict | None) -> Summary:
    """The plain-language layer of a report, built from the report alone.

    Parameters
    ----------
    report : dict or None
        A ``report.json`` dict (docs/report-schema.md); malformed parts read as missing.

    Returns
    -------
    Summary
        The verdict in words, one sentence per kind of evidence (high risk first),
        what it means for a person in the data, the change to ask for and, when the
        report lists exposed rows, what a checker should do about them.
    """
    report = _dict(report)
    risk = _dict(report.get("verdict")).get("risk")
    risk = risk if risk in RISKS else None
    return Summary(
        risk=risk,
        verdict=verdict_sentence(report),
        evidence=tuple(evidence_sentences(report)),
        meaning=INCOMPLETE_MEANING if is_incomplete(report) else MEANINGS.get(risk, ""),
        change=change_sentence(report),
        exposed=EXPOSED_GUIDANCE if _dicts(report.get("most_exposed")) else "",
    )


def verdict_sentence(report: dict) -> str:
    """The verdict in words, naming the findings that set it."""
    verdict = _dict(report.get("verdict"))
    risk = verdict.get("risk")
    if risk not in RISKS:
        return "The report states no verdict."
    top = _top_reasons(report)
    names = list(dict.fromkeys(source_title(report, _str(r.get("source"))) for r in top))
    names = [n for n in names if n != "No finding"]
    if is_incomplete(report):
        return INCOMPLETE_VERDICT + f" Not run: {'; '.join(names)}."
    return VERDICTS[risk] + (f" It rests on: {'; '.join(names)}." if names else "")


def _top_reasons(report: dict) -> list[dict]:
    """The verdict's reasons at its own risk: the findings that set it."""
    verdict = _dict(report.get("verdict"))
    return [r for r in _dicts(verdict.get("reasons")) if r.get("risk") == verdict.get("risk")]


def is_incomplete(report: dict | None) -> bool:
    """Whether every finding that sets the verdict is an attack that could not run."""
    top = _top_reasons(_dict(report))
    return bool(top) and all(_dict(r.get("evidence")).get("error") for r in top)


def evidence_sentences(report: dict) -> list[Evidence]:
    """One sentence per kind of evidence, highest risk first."""
    found = [*_attack_evidence(report), *_rule_evidence(report), *_record_evidence(report)]
    return sorted(found, key=lambda e: risk_rank(e.risk))


def _attack_evidence(report: dict) -> list[Evidence]:
    """Attacks of one kind that reach the same risk, in one sentence; each failure alone."""
    groups: dict[tuple[str, str], list[AttackRow]] = {}
    failed: dict[str, list[AttackRow]] = {}
    for row in attack_rows(report):
        if not row.ran:
            failed.setdefault(_sentence(row.error or "it gave no result"), []).append(row)
            continue
        groups.setdefault((row.kind, risk_of(report, row.source)), []).append(row)
    sentences = [
        Evidence(risk, _group_sentence(kind, rows)) for (kind, risk), rows in groups.items()
    ]
    return sentences + [Evidence("medium", _failed_sentence(r, why)) for why, r in failed.items()]


def _failed_sentence(rows: list[AttackRow], why: str) -> str:
    """Attacks that failed for one reason, in one sentence (a missing recipe stops four)."""
    if len(rows) == 1:
        return f"{rows[0].name} could not run: {why} The audit is incomplete without it."
    count = _COUNTS[len(rows)] if len(rows) < len(_COUNTS) else str(len(rows))
    names = ", ".join(r.name for r in rows)
    return f"{count} attacks ({names}) could not run: {why} The audit is incomplete without them."


def _group_sentence(kind: str, rows: list[AttackRow]) -> str:
    """``Three attacks using shadow models (LiRA, RMIA) identify up to 13% of members ...``."""
    how, names, one = KINDS.get(kind, ""), ", ".join(r.name for r in rows), len(rows) == 1
    if one:
        who = names
    else:
        count = _COUNTS[len(rows)] if len(rows) < len(_COUNTS) else str(len(rows))
        who = f"{count} attacks {how} ({names})"
    auc = f"AUC {'' if one else 'up to '}{auc_text(max(r.auc for r in rows))} (0.5 is guessing)"
    level, tpr = _quoted_tpr(rows)
    if level is None:
        return f"{who} tell{'s' if one else ''} members from non-members with {auc}."
    found = f"identif{'ies' if one else 'y up to'} {percent(tpr)} of members"
    return f"{who} {found} at {false_alarms(level)}, with {auc}."


def _quoted_tpr(rows: list[AttackRow]) -> tuple[str | None, float | None]:
    """The lowest FPR level among 1% and 10% at which the attacks have a TPR, and the best."""
    for level in FPR_LEVELS[1:]:
        values = [c.value for r in rows for c in r.tpr if c.level == level and c.value is not None]
        if values:
            return level, max(values)
    return None, None


def _rule_evidence(report: dict) -> list[Evidence]:
    rules = [r for r in _dicts(report.get("rules")) if r.get("risk") in ("medium", "high")]
    if not rules:
        return []
    risk = risk_max(r.get("risk") for r in rules)
    if len(rules) == 1:
        rule = rules[0]
        first = _first_sentence(_str(rule.get("reason")))
        title = _str(rule.get("title"), RULE_UNTITLED)
        return [
            Evidence(
                risk, f"A check of the model's settings: {title}." + (f" {first}" if first else "")
            )
        ]
    titles = "; ".join(_str(r.get("title"), RULE_UNTITLED) for r in rules)
    count = _COUNTS[min(len(rules), 9)]
    return [
        Evidence(
            risk,
            f"{count} checks of the model's settings found problems: {titles}.",
        )
    ]


def _record_evidence(report: dict) -> list[Evidence]:
    record = _dict(report.get("record"))
    p = _num(record.get("membership_probability"))
    if p is None:
        return []
    who = attack_name(record.get("attack"))
    text = f"The queried record is judged a member with probability {percent(p)} by {who}."
    return [Evidence(risk_of(report, "record"), text)]


def sweep_points(sweep: dict | None, model_params: dict | None = None) -> list[dict]:
    """The sweep's points with the submitted setting listed once.

    A point that sets a parameter to the model's own value (``max_depth=None`` for
    a forest grown in full) is the submitted model again: it is dropped when the
    submitted point is listed, as the same setting listed twice reads as two.
    """
    points = _dicts(_dict(sweep).get("points"))
    if not any(p.get("is_original") is True for p in points):
        return points
    own = _dict(model_params)
    return [p for p in points if p.get("is_original") is True or not _is_own(p, own)]


def _is_own(point: dict, own: dict) -> bool:
    name = _str(point.get("param")).split("__")[-1]
    return name in own and own[name] == point.get("value")


def change_sentence(report: dict) -> str:
    """The sweep's suggestion with its accuracy cost, or why there is none."""
    sweep = _dict(report.get("sweep"))
    if not _dicts(sweep.get("points")):
        note = _str(sweep.get("note"))
        if not note and is_incomplete(report):
            return INCOMPLETE_CHANGE
        return note or "No hyperparameter sweep was run, so no change of setting is suggested."
    rec = _dict(sweep.get("recommendation"))
    new, cut = _num(rec.get("auc")), _num(rec.get("auc_reduction"))
    if rec.get("param") is None or new is None:
        tolerance = points(_num(sweep.get("accuracy_tolerance")) or 0.01)
        return (
            f"No setting the sweep tried is clearly safer within {tolerance} points of "
            "held-out accuracy, so it suggests no change of setting."
        )
    before = "" if cut is None else f" from {auc_text(new + cut)}"
    return (
        f"Setting {setting_text(rec.get('param'), rec.get('value'))} lowers the strongest "
        f"attack's AUC{before} to {auc_text(new)} {_cost(rec.get('accuracy_change'))}."
    )


def _cost(change) -> str:
    number = _num(change)
    if number is None:
        return "at an unstated cost in accuracy"
    if number >= -0.0005:
        return "with no loss of held-out accuracy"
    return f"at {points(number)} points of held-out accuracy"


def _first_sentence(text: str) -> str:
    head, dot, _ = text.partition(". ")
    return head + "." if dot else text


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith(".") else text + "."


# ======================================================================================
# A declared neural network: its layers and training recipe
# ======================================================================================

#: A layer type of the declaration (torch's name) -> what it is, for people.
LAYER_NAMES = {
    "Linear": "Fully connected",
    "Conv2d": "Convolution",
    "BatchNorm1d": "Batch normalisation",
    "BatchNorm2d": "Batch normalisation",
    "ReLU": "Activation",
    "GELU": "Activation",
    "Tanh": "Activation",
    "MaxPool2d": "Max pooling",
    "AvgPool2d": "Average pooling",
    "Dropout": "Dropout (training only)",
    "Flatten": "Flatten",
}
#: What the ONNX file's output holds, in words.
OUTPUT_WORDS = {
    "logits": "Scores before a softmax (logits)",
    "probabilities": "Class probabilities",
}
OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
AUGMENTATION_NAMES = {
    "hflip": "horizontal flip",
    "random_crop": "random crop",
    "gaussian_noise": "Gaussian noise",
}
#: What the declared network is, above its tables on the web page and in the PDF.
NETWORK_NOTE = (
    "As the researcher declared it with the ONNX file; its layers were checked against the "
    "file's weights."
)
#: ... and what its recipe is for, when one was declared.
RECIPE_NOTE = (
    "The audit builds this network itself and trains its shadow models with the recipe "
    "below: no code of the researcher's runs."
)
#: Why the strongest attacks did not run on a network declared without a recipe.
NO_RECIPE = (
    "No training recipe was declared, so no shadow model of this network could be "
    "trained: the attacks that need them (LiRA, RMIA, the shadow-model attack) did not run."
)


@dataclass(frozen=True)
class LayerRow:
    """One declared layer: its place, what it is, its settings as declared, its output."""

    number: int
    name: str
    kind: str
    settings: str
    output: str


@dataclass(frozen=True)
class DeclaredNetwork:
    """The network a researcher declared with an ONNX model, as people read it.

    ``network`` and ``recipe`` are label / value pairs; ``recipe`` is empty when no
    recipe was declared, and ``no_recipe`` then says what that means for the audit.
    """

    network: tuple[tuple[str, str], ...]
    layers: tuple[LayerRow, ...]
    recipe: tuple[tuple[str, str], ...]
    no_recipe: str = ""
    note: str = NETWORK_NOTE


def declared_network(report: dict | None) -> DeclaredNetwork | None:
    """The report's declared network (``model.declaration``), or None for a model
    declared without one (every scikit-learn model)."""
    declared = _dict(_dict(_dict(report).get("model")).get("declaration"))
    if not declared:
        return None
    layers = [_typed(layer) for layer in _list(declared.get("architecture"))]
    from attacks.nn.schema import layer_shapes  # no torch: the schema's own shape chain

    parsed = _parsed(declared)
    shapes = None if parsed is None else layer_shapes(parsed)
    recipe = _dict(declared.get("recipe"))
    return DeclaredNetwork(
        network=tuple(_network_pairs(declared, parsed)),
        layers=tuple(
            LayerRow(
                number=i + 1,
                name=LAYER_NAMES.get(_str(layer.get("type")), "Layer"),
                kind=_str(layer.get("type"), MISSING),
                settings=_settings(layer) or "none",
                output=_dims(shapes[i]) if shapes else MISSING,
            )
            for i, layer in enumerate(layers)
        ),
        recipe=tuple(_recipe_pairs(recipe)) if recipe else (),
        no_recipe="" if recipe else NO_RECIPE,
        note=f"{NETWORK_NOTE} {RECIPE_NOTE}" if recipe else NETWORK_NOTE,
    )


def _typed(layer) -> dict:
    """A layer or step as an object: ``"ReLU"`` is ``{"type": "ReLU"}``."""
    return {"type": layer} if isinstance(layer, str) else _dict(layer)


def _parsed(declared: dict):
    """The declaration read by its own schema (for shapes and counts), or None if it
    does not read; the report writes an absent recipe as null, which the JSON omits."""
    from attacks.exceptions import AuditError
    from attacks.nn.schema import parse_declaration

    given = {key: value for key, value in declared.items() if value is not None}
    try:
        return parse_declaration(given, n_classes=None)
    except (AuditError, TypeError, ValueError, KeyError, AttributeError):
        return None


def _network_pairs(declared: dict, parsed) -> list[tuple[str, str]]:
    shape = declared.get("input_shape")
    shape = tuple(shape) if isinstance(shape, list) else ()
    pairs = [
        ("Input", _input_words(shape)),
        ("Output", OUTPUT_WORDS.get(_str(declared.get("output")), MISSING)),
        ("Layers", str(len(_list(declared.get("architecture"))))),
    ]
    if parsed is not None:
        pairs.append(("Trainable parameters", f"{parsed.n_parameters:,}"))
    preprocessing = _dict(declared.get("preprocessing"))
    if preprocessing:
        pairs.append(("Input preprocessing", _settings(preprocessing)))
    return pairs


def _input_words(shape: tuple) -> str:
    if not shape or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
        return MISSING
    if len(shape) == 1:
        return f"{shape[0]:,} features per record"
    channels = "1 channel" if shape[0] == 1 else f"{shape[0]} channels"
    return f"Images of {channels}, {_dims(shape[1:])} pixels"


def _dims(shape) -> str:
    return "x".join(str(n) for n in shape) if isinstance(shape, tuple | list) else MISSING


def _settings(fields: dict) -> str:
    """A layer's or step's fields as the researcher writes them: ``in_features=30, bias=true``,
    in the schema's order (a report read back from PostgreSQL has its keys re-sorted)."""
    from attacks.nn.schema import field_order  # no torch

    order = field_order(fields.get("type"))
    rank = {name: i for i, name in enumerate(order)}
    keys = sorted(
        (k for k in fields if k != "type"), key=lambda k: (rank.get(k, len(rank)), str(k))
    )
    return ", ".join(f"{_clip(str(key), 40)}={_json(fields[key])}" for key in keys)


def _json(value) -> str:
    if value is None:
        return MISSING
    try:
        return _clip(json.dumps(value, allow_nan=False), 60)
    except (TypeError, ValueError):
        return MISSING


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _recipe_pairs(recipe: dict) -> list[tuple[str, str]]:
    optimizer = _dict(recipe.get("optimizer"))
    kind = _str(optimizer.get("type"))
    extra = {k: v for k, v in optimizer.items() if k not in ("type", "lr")}
    decay = _num(recipe.get("weight_decay"))
    return [
        (
            "Optimiser",
            OPTIMIZER_NAMES.get(kind, MISSING) + (f" ({_settings(extra)})" if extra else ""),
        ),
        ("Learning rate", _json(optimizer.get("lr"))),
        ("Epochs", _json(recipe.get("epochs"))),
        ("Batch size", _json(recipe.get("batch_size"))),
        (
            "Weight decay",
            "none"
            if decay == 0
            else f"{_json(recipe.get('weight_decay'))}"
            + (" (decoupled)" if kind == "adamw" and decay else ""),
        ),
        ("Learning-rate schedule", _schedule_words(recipe.get("lr_schedule"))),
        ("Augmentation", _augmentation_words(recipe.get("augmentation"))),
        ("Seed", _json(recipe.get("seed"))),
    ]


def _schedule_words(schedule) -> str:
    schedule = _typed(schedule)
    kind = _str(schedule.get("type"), "none")
    if kind == "none":
        return "none (constant)"
    if kind == "cosine":
        return "cosine, down to 0 over all epochs"
    if kind == "step":
        gamma, every = _json(schedule.get("gamma")), _json(schedule.get("step_size"))
        return f"step: times {gamma} every {every} epochs"
    return MISSING


def _augmentation_words(steps) -> str:
    steps = [_typed(step) for step in _list(steps)]
    words = []
    for step in steps:
        name = AUGMENTATION_NAMES.get(_str(step.get("type")), MISSING)
        settings = _settings(step)
        words.append(f"{name} ({settings})" if settings else name)
    return "; ".join(words) or "none"


def _list(value) -> list:
    return value if isinstance(value, list) else []


# ======================================================================================
# Which request a report belongs to
# ======================================================================================


CLI_AUDIT = "CLI audit, not a TRE request"


@dataclass(frozen=True)
class ReportIdentity:
    """The request a report belongs to, printed on the PDF's first page and every header.

    Parameters
    ----------
    request : int or None, default=None
        The request's number; None is an audit run from the command line.
    title, researcher, project, purpose : str, default=""
        As the request states them.
    version : int or None, default=None
        The version of the request the audit judged.
    audited_at : str, default=""
        When the audit finished, as printed; "" takes the report's own time.
    """

    request: int | None = None
    title: str = ""
    version: int | None = None
    researcher: str = ""
    project: str = ""
    purpose: str = ""
    audited_at: str = ""

    @property
    def is_request(self) -> bool:
        return self.request is not None

    def header(self) -> str:
        """One line naming the request (the PDF's title, the header's first line)."""
        if not self.is_request:
            return CLI_AUDIT
        parts = [f"Request #{self.request}", f"version {self.version or MISSING}"]
        return " · ".join(parts + [p for p in (self.title, self.researcher) if p])

    def header_lines(self) -> tuple[str, str]:
        """The running header: the request, then who, where, when and why (cut last)."""
        when = f"Audited {self.audited_at or MISSING}"
        if not self.is_request:
            return (
                CLI_AUDIT,
                f"{when} · run from the command line: no request, researcher or purpose",
            )
        first = " · ".join(
            p
            for p in (f"Request #{self.request}", f"version {self.version or MISSING}", self.title)
            if p
        )
        second = (
            f"Researcher: {self.researcher or MISSING} · Project: {self.project or 'none'} · "
            f"{when} · Purpose: {self.purpose or MISSING}"
        )
        return first, " ".join(second.split())

    def subtitle(self) -> str:
        if not self.is_request:
            return CLI_AUDIT
        return (
            f"Request #{self.request}: {self.title or MISSING} (version {self.version or MISSING})"
        )

    def pairs(self) -> list[tuple[str, str]]:
        """Label / value rows for the first page."""
        if not self.is_request:
            return [("Request", CLI_AUDIT), ("Audited", self.audited_at or MISSING)]
        return [
            ("Request", f"#{self.request}: {self.title or MISSING}"),
            ("Version", str(self.version or MISSING)),
            ("Researcher", self.researcher or MISSING),
            ("Project", self.project or "none"),
            ("Purpose", self.purpose or MISSING),
            ("Audited", self.audited_at or MISSING),
        ]
