from attacks.policy import load_policy
from attacks.verdict import verdict_decide

POLICY = load_policy()


def _attack(name, auc, ci, tpr=None, error=None):
    return {
        "name": name,
        "title": name.upper(),
        "auc": auc,
        "auc_ci": ci,
        "error": error,
        "tpr_at_fpr": tpr or {"0.001": None, "0.01": None, "0.1": None},
        "min_resolvable_fpr": 1 / 20_000,
    }


def test_no_evidence_is_low_risk_with_a_reason():
    verdict = verdict_decide(
        attacks=[_attack("lira", 0.52, [0.49, 0.55])], rules=[], record=None, policy=POLICY
    )
    assert verdict.risk == "low"
    assert verdict.reasons[0].source == "audit"
    assert "0.520" in verdict.reasons[0].text


def test_high_auc_is_high_risk_citing_its_own_numbers():
    verdict = verdict_decide(
        attacks=[_attack("lira", 0.91, [0.88, 0.94]), _attack("rmia", 0.55, [0.5, 0.6])],
        rules=[],
        record=None,
        policy=POLICY,
    )
    assert verdict.risk == "high"
    (reason,) = verdict.reasons
    assert reason.source == "attack:lira" and reason.evidence["auc"] == 0.91
    assert "0.910" in reason.text and "rmia" not in reason.text.lower()


def test_an_auc_whose_interval_includes_chance_is_not_evidence():
    verdict = verdict_decide(
        attacks=[_attack("lira", 0.62, [0.45, 0.79])], rules=[], record=None, policy=POLICY
    )
    assert verdict.risk == "low"


def test_low_fpr_tpr_alone_raises_the_risk():
    tpr = {"0.001": 0.02, "0.01": 0.05, "0.1": 0.2}
    verdict = verdict_decide(
        attacks=[_attack("lira", 0.55, [0.53, 0.57], tpr)], rules=[], record=None, policy=POLICY
    )
    assert verdict.risk == "high"
    assert verdict.reasons[0].evidence["fpr"] == 0.001


def test_tpr_with_too_few_false_positives_behind_it_is_not_evidence():
    attack = _attack("rmia", 0.51, [0.49, 0.53], {"0.001": 0.006, "0.01": 0.0195, "0.1": 0.107})
    attack["min_resolvable_fpr"] = 1 / 2000  # FPR 0.1% is 2 false positives: noise
    verdict = verdict_decide(attacks=[attack], rules=[], record=None, policy=POLICY)
    assert verdict.risk == "low"


def test_unresolvable_tpr_is_never_evidence():
    tpr = {"0.001": None, "0.01": None, "0.1": 0.1}
    verdict = verdict_decide(
        attacks=[_attack("lira", 0.5, [0.45, 0.55], tpr)], rules=[], record=None, policy=POLICY
    )
    assert verdict.risk == "low"


def test_a_tpr_a_tie_leaves_unresolved_counts_at_the_rate_above_the_tie():
    attack = _attack("worst_case", 0.55, [0.53, 0.57], {"0.001": None, "0.01": None, "0.1": 0.2})
    tie = {"reason": "tie", "tpr_range": [0.3, 0.5], "tied_members": 40, "tied_non_members": 8}
    attack["tpr_unresolved"] = {"0.01": tie}
    verdict = verdict_decide(attacks=[attack], rules=[], record=None, policy=POLICY)
    assert verdict.risk == "high"
    reason = next(r for r in verdict.reasons if r.evidence.get("fpr") == 0.01)
    assert reason.evidence["tpr"] == 0.3 and "at least 30.0%" in reason.text


def test_structural_findings_count_even_when_attacks_are_quiet():
    rule = {"rule": "embeds_training_rows", "risk": "high", "title": "t", "reason": "rows inside"}
    verdict = verdict_decide(
        attacks=[_attack("lira", 0.5, [0.45, 0.55])], rules=[rule], record=None, policy=POLICY
    )
    assert verdict.risk == "high"
    assert verdict.reasons[0].source == "rule:embeds_training_rows"


def test_a_failed_attack_is_reported_not_ignored():
    verdict = verdict_decide(
        attacks=[_attack("lira", None, None, error="Too few records.")],
        rules=[],
        record=None,
        policy=POLICY,
    )
    assert verdict.risk == "medium"
    assert "Too few records." in verdict.reasons[0].text


def test_verdict_does_not_depend_on_attack_order():
    attacks = [
        _attack("lira", 0.7, [0.65, 0.75], {"0.001": None, "0.01": 0.05, "0.1": 0.3}),
        _attack("rmia", 0.85, [0.8, 0.9]),
        _attack("worst_case", 0.61, [0.56, 0.66]),
    ]
    a = verdict_decide(attacks=attacks, rules=[], record=None, policy=POLICY)
    b = verdict_decide(attacks=attacks[::-1], rules=[], record=None, policy=POLICY)
    assert a == b


def test_an_exposed_record_is_a_reason():
    record = {
        "membership_probability": 0.9,
        "attack": "lira",
        "attacks": [{"name": "lira", "membership_probability": 0.9, "false_positive_rate": 0.01}],
    }
    verdict = verdict_decide(attacks=[], rules=[], record=record, policy=POLICY)
    assert verdict.risk == "high" and verdict.reasons[0].source == "record"
    record["attacks"][0]["false_positive_rate"] = 0.4  # flagged, but so are many non-members
    assert verdict_decide(attacks=[], rules=[], record=record, policy=POLICY).risk == "low"


def test_summary_names_every_finding_at_the_verdict_level():
    rule = {"rule": "embeds_training_rows", "risk": "high", "title": "Rows inside", "reason": "r"}
    verdict = verdict_decide(
        attacks=[_attack("lira", 0.91, [0.88, 0.94]), _attack("rmia", 0.65, [0.6, 0.7])],
        rules=[rule],
        record=None,
        policy=POLICY,
    )
    assert verdict.summary == "High risk, from: LIRA; Rows inside."
    assert [r.title for r in verdict.reasons] == ["LIRA", "Rows inside", "RMIA"]
