from tests.attacks.report_fixture import sample_report
from tre_audit.submissions.selectors import report_view


def _report(tpr, unresolved=None):
    attack = {"name": "worst_case", "title": "W", "auc": 0.9, "auc_ci": [0.8, 0.95]}
    attack["tpr_at_fpr"] = tpr
    if unresolved is not None:
        attack["tpr_unresolved"] = unresolved
    return {"attacks": [attack], "data": {"n_non_members": 500}}


def test_attack_rows_say_why_a_tpr_is_missing_in_numbered_notes():
    tie = {"reason": "tie", "tpr_range": [0.0, 0.255], "tied_members": 51, "tied_non_members": 7}
    report = _report(
        {"0.001": None, "0.01": None, "0.1": 0.4},
        {"0.001": {"reason": "too_few_non_members"}, "0.01": tie},
    )
    view = report_view(report)
    few, tied, value = view["attacks"][0]["tpr"]
    assert (few["text"], few["note"], tied["note"]) == ("n/a", 1, 2)
    assert "with 500 of them, 0.1% is less than one false alarm" in view["tpr_notes"][0]
    assert "51 members and 7 non-members" in tied["why"] and "0% and 26%" in tied["why"]
    assert value == {"text": "40%", "why": "", "note": None}


def test_a_report_from_before_ties_were_flagged_reads_as_too_few_non_members():
    view = report_view(_report({"0.001": None, "0.01": 0.1, "0.1": 0.4}))
    assert view["attacks"][0]["tpr"][0]["why"].startswith("too few non-members")
    assert [c["text"] for c in view["attacks"][0]["tpr"][1:]] == ["10%", "40%"]


def test_the_sweep_lists_the_submitted_setting_once_with_accuracy_to_a_tenth():
    points = report_view(sample_report())["sweep"]["points"]
    settings = [p["setting"] for p in points]
    assert settings.count("max_depth=None") == 0  # the submitted forest, grown in full
    assert [p["setting"] for p in points if p["is_original"]] == ["min_samples_leaf=1"]
    assert points[0]["accuracy"] == "81.2%"
