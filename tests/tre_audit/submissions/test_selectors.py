from tre_audit.submissions.selectors import report_view


def _report(tpr, unresolved=None):
    attack = {"name": "worst_case", "title": "W", "auc": 0.9, "auc_ci": [0.8, 0.95]}
    attack["tpr_at_fpr"] = tpr
    if unresolved is not None:
        attack["tpr_unresolved"] = unresolved
    return {"attacks": [attack]}


def test_attack_rows_say_why_a_tpr_is_missing():
    tie = {"reason": "tie", "tpr_range": [0.0, 0.255], "tied_members": 51, "tied_non_members": 7}
    report = _report(
        {"0.001": None, "0.01": None, "0.1": 0.4},
        {"0.001": {"reason": "too_few_non_members"}, "0.01": tie},
    )
    few, tied, value = report_view(report)["attacks"][0]["tpr"]
    assert few == {"value": None, "why": "too few non-members to resolve this rate"}
    assert tied["value"] is None and "51 members and 7 non-members" in tied["why"]
    assert "0.0%–25.5%" in tied["why"]
    assert value == {"value": 0.4, "why": None}


def test_a_report_from_before_ties_were_flagged_reads_as_too_few_non_members():
    cells = report_view(_report({"0.001": None, "0.01": 0.1, "0.1": 0.4}))["attacks"][0]["tpr"]
    assert cells[0]["why"] == "too few non-members to resolve this rate"
