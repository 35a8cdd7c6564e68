"""The one reader of report.json: names for people, percent, n/a in words, the summary."""

import copy

import pytest

from attacks import reading, verdict
from attacks.reading import ReportIdentity
from tests.attacks.report_fixture import network_report, sample_report


def _attack(name, auc, tpr_1pct):
    return {
        "name": name,
        "title": name,
        "error": None,
        "auc": auc,
        "auc_ci": [auc - 0.02, auc + 0.02],
        "tpr_at_fpr": {"0.001": None, "0.01": tpr_1pct, "0.1": 0.3},
        "tpr_unresolved": {"0.001": {"reason": "too_few_non_members"}},
    }


def _reason(source, risk, text="t"):
    return {"source": source, "risk": risk, "text": text}


def _report(attacks, reasons, **more):
    return {
        "verdict": {"risk": verdict.risk_max(r["risk"] for r in reasons), "reasons": reasons},
        "attacks": attacks,
        "data": {"n_non_members": 285},
        **more,
    }


FOREST = _report(
    [
        _attack("lira", 0.688, 0.123),
        _attack("lira_offline", 0.671, 0.12),
        _attack("rmia", 0.699, 0.134),
        _attack("worst_case", 0.553, 0.0),
    ],
    [
        _reason("attack:lira", "medium"),
        _reason("attack:lira_offline", "medium", "AUC"),
        _reason("attack:lira_offline", "medium", "TPR at 10%"),
        _reason("attack:rmia", "medium"),
    ],
)


@pytest.mark.parametrize(
    "name, shown",
    [
        ("lira", "LiRA (online)"),
        ("lira_offline", "LiRA (offline)"),
        ("rmia", "RMIA"),
        ("worst_case", "Supervised output attack"),
        ("shadow", "Shadow-model attack"),
        ("new_attack", "New attack"),
        (None, "Unnamed attack"),
    ],
)
def test_every_attack_has_a_name_for_people(name, shown):
    assert reading.attack_name(name) == shown


def test_finding_titles_name_every_source_without_an_internal_identifier():
    titles = reading.finding_titles(sample_report())
    assert titles["attack:lira_offline"] == "LiRA (offline)"
    assert titles["rule:min_leaf_records"] == "Leaves can hold one record"
    assert titles["record"] == "The queried record"
    assert all(":" not in t and "_" not in t for t in titles.values())
    assert reading.finding_titles(None) == {}


@pytest.mark.parametrize(
    "value, text",
    [(0.64, "64%"), (0.058, "5.8%"), (0.002, "0.20%"), (0.0, "0%"), (1.0, "100%"), (None, "–")],
)
def test_rates_are_percentages(value, text):
    assert reading.percent(value) == text


def test_accuracy_keeps_a_tenth_of_a_point_and_levels_read_as_odds():
    assert reading.percent(0.9438, 1) == "94.4%"
    assert [reading.fpr_label(k) for k in reading.FPR_LEVELS] == ["0.1%", "1%", "10%"]
    assert reading.false_alarms("0.01") == "1 in 100 false alarms"
    assert reading.false_alarms("0.001") == "1 in 1,000 false alarms"


def test_one_risk_order_everywhere():
    assert verdict.RISKS is reading.RISKS == ("low", "medium", "high")
    assert sorted(["low", "high", "x", "medium"], key=reading.risk_rank) == [
        "high",
        "medium",
        "low",
        "x",
    ]


def test_an_unmeasurable_rate_says_why_in_words():
    few, one, ten = reading.attack_rows(FOREST)[0].tpr
    assert (few.text, one.text, ten.text) == ("n/a", "12%", "30%")
    assert few.why == (
        "too few non-members: with 285 of them, 0.1% is less than one false alarm, "
        "so this rate cannot be measured"
    )
    tie = {"reason": "tie", "tpr_range": [0.0, 0.62], "tied_members": 177, "tied_non_members": 141}
    assert "177 members and 141 non-members get the same score" in reading.unresolved_text(
        tie, "0.01"
    )
    assert "between 0% and 62%" in reading.unresolved_text(tie, "0.01")


def test_attacks_of_one_kind_that_agree_are_one_sentence_auc_and_tpr_merged():
    evidence = reading.summary(FOREST).evidence
    assert [e.risk for e in evidence] == ["medium", "low"]
    assert evidence[0].text == (
        "Three attacks using shadow models (LiRA (online), LiRA (offline), RMIA) identify up "
        "to 13% of members at 1 in 100 false alarms, with AUC up to 0.70 (0.5 is guessing)."
    )
    assert evidence[1].text.startswith("Supervised output attack identifies 0% of members")


def test_attacks_that_disagree_stay_apart_and_a_failure_is_its_own_sentence():
    report = sample_report()
    texts = [e.text for e in reading.summary(report).evidence]
    assert texts[0].startswith("LiRA (online) identifies 37% of members at 1 in 100")
    assert any(t.startswith("RMIA identifies") for t in texts)
    assert any(t.startswith("LiRA (offline) could not run: Shadow models") for t in texts)


def test_the_summary_gives_the_change_with_its_accuracy_cost():
    plain = reading.summary(sample_report())
    assert plain.change == (
        "Setting min_samples_leaf=10 lowers the strongest attack's AUC from 0.84 to 0.60 "
        "at 0.7 points of held-out accuracy."
    )
    assert plain.verdict.startswith("High risk: the model gives away which people")
    assert "For a person in the training data" in plain.meaning
    assert "treat these people as identifiable" in plain.exposed


def test_without_a_safer_setting_or_a_sweep_the_summary_says_so():
    report = sample_report()
    report["sweep"]["recommendation"].update(param=None, value=None)
    assert reading.change_sentence(report).startswith("No setting the sweep tried is clearly")
    report["sweep"] = None
    assert reading.change_sentence(report) == (
        "No hyperparameter sweep was run, so no change of setting is suggested."
    )


def test_the_submitted_setting_is_listed_once():
    report = sample_report()
    points = reading.sweep_points(report["sweep"], report["model"]["params"])
    settings = [(p["param"], p["value"]) for p in points]
    assert ("max_depth", None) not in settings  # the same forest as the submitted point
    assert len(points) == len(report["sweep"]["points"]) - 1


def test_the_identity_of_a_request_and_of_a_cli_audit():
    cli = ReportIdentity(audited_at="14 Mar 2025, 10:22 UTC")
    assert cli.header_lines() == (
        "CLI audit, not a TRE request",
        "Audited 14 Mar 2025, 10:22 UTC · run from the command line: no request, researcher "
        "or purpose",
    )
    request = ReportIdentity(request=7, title="Forest", version=2, researcher="Ada")
    assert request.header() == "Request #7 · version 2 · Forest · Ada"
    assert ("Project", "none") in request.pairs()


@pytest.mark.parametrize("junk", [None, "junk", 7, [None], {"x": 1}])
def test_a_malformed_report_reads_as_missing_never_raises(junk):
    report = {key: junk for key in sample_report()}
    plain = reading.summary(report)
    assert plain.verdict == "The report states no verdict."
    assert reading.attack_rows(report) == []
    broken = copy.deepcopy(sample_report())
    broken["attacks"][1].update(auc="x", tpr_at_fpr=None, auc_ci=None)
    texts = [e.text for e in reading.summary(broken).evidence]
    assert (
        "LiRA (online) could not run: it gave no result. The audit is incomplete without it."
        in texts
    )


@pytest.mark.parametrize("name", [["lira"], {"x": 1}, 7])
def test_an_attack_name_of_the_wrong_type_is_named_not_raised(name):
    rows = reading.attack_rows({"attacks": [{"name": name, "auc": 0.6}]})
    assert rows[0].kind == "other" and reading.attack_name(name) == "Unnamed attack"


# A declared network -------------------------------------------------------------------

NO_RECIPE_ERROR = (
    "No training recipe was declared with this model, so no shadow model of it can be trained."
)


def _without_shadows() -> dict:
    """The attacks a network without a recipe reports: the pool ones failed, one ran."""
    failed = [
        {"name": name, "title": name, "error": NO_RECIPE_ERROR}
        for name in ("shadow", "lira", "lira_offline", "rmia")
    ]
    reasons = [
        _reason(f"attack:{a['name']}", "medium") | {"evidence": {"error": NO_RECIPE_ERROR}}
        for a in failed
    ]
    return _report([*failed, _attack("worst_case", 0.57, 0.014)], reasons)


def test_attacks_stopped_by_one_missing_recipe_are_one_sentence_and_the_audit_incomplete():
    plain = reading.summary(_without_shadows())
    assert [e.text for e in plain.evidence if e.risk == "medium"] == [
        "Four attacks (Shadow-model attack, LiRA (online), LiRA (offline), RMIA) could not "
        f"run: {NO_RECIPE_ERROR} The audit is incomplete without them."
    ]
    assert plain.verdict == (
        f"{reading.INCOMPLETE_VERDICT} Not run: Shadow-model attack; LiRA (online); "
        "LiRA (offline); RMIA."
    )
    assert "gives some evidence" not in plain.verdict + plain.meaning
    assert plain.change == reading.INCOMPLETE_CHANGE
    found = copy.deepcopy(_without_shadows())  # a finding beside the failures: not incomplete
    found["verdict"]["reasons"].append(_reason("attack:worst_case", "medium"))
    assert not reading.is_incomplete(found)
    assert reading.summary(found).verdict.startswith(reading.VERDICTS["medium"])


def test_a_declared_network_reads_its_layers_shapes_and_recipe():
    from tests.attacks.report_fixture import network_report

    network = reading.declared_network(network_report("breast_cancer_mlp"))
    assert dict(network.network) == {
        "Input": "30 features per record",
        "Output": "Scores before a softmax (logits)",
        "Layers": "3",
        "Trainable parameters": "530",
    }
    assert [(r.name, r.kind, r.output) for r in network.layers] == [
        ("Fully connected", "Linear", "16"),
        ("Activation", "ReLU", "16"),
        ("Fully connected", "Linear", "2"),
    ]
    assert network.layers[0].settings == "in_features=30, out_features=16, bias=true"
    recipe = dict(network.recipe)
    assert recipe["Optimiser"] == "Adam (betas=[0.9, 0.999])" and recipe["Epochs"] == "100"
    assert recipe["Weight decay"] == recipe["Augmentation"] == "none"
    assert network.no_recipe == "" and reading.RECIPE_NOTE in network.note
    bare = reading.declared_network(network_report("breast_cancer_mlp", recipe=False))
    assert bare.recipe == () and bare.no_recipe == reading.NO_RECIPE
    assert reading.declared_network(sample_report()) is None  # a scikit-learn model


@pytest.mark.parametrize(
    "junk",
    [
        {"architecture": "x", "recipe": 3},
        {"input_shape": [True], "architecture": [{"type": "Linear", "in_features": [1]}, 5]},
        {"architecture": ["ReLU"], "recipe": {"optimizer": 7, "augmentation": [3, "x"]}},
        {"output": {"x": 1}, "preprocessing": "z", "recipe": {"lr_schedule": [1], "seed": 1e400}},
    ],
)
def test_a_malformed_declaration_reads_as_missing_never_raises(junk):
    network = reading.declared_network({"model": {"declaration": junk}})
    assert "Trainable parameters" not in dict(network.network)  # it does not read as a network
    assert all(row.output == reading.MISSING for row in network.layers)
    for _label, value in (*network.network, *network.recipe):
        assert isinstance(value, str) and "Traceback" not in value


def test_a_layers_settings_read_in_the_schemas_order_whatever_the_stored_order():
    """PostgreSQL's jsonb gives a stored report's keys back in an order of its own."""
    report = network_report("digits_cnn_regularised")
    shuffled = copy.deepcopy(report)
    for layer in shuffled["model"]["declaration"]["architecture"]:
        items = list(layer.items())
        layer.clear()
        layer.update(reversed(items))
    rows = [r.settings for r in reading.declared_network(report).layers]
    assert [r.settings for r in reading.declared_network(shuffled).layers] == rows
    assert "in_channels=1, out_channels=8, kernel_size=3" in rows[0]
