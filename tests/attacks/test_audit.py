"""End-to-end audits: the cases the issue names, and the report contract."""

import dataclasses
import json
import pickle
import random

import numpy as np
import pandas as pd
import pytest

from attacks.audit import (
    DEFAULT_ATTACKS,
    MAX_SEED,
    AuditConfig,
    Record,
    Upload,
    _sweep_reference,
    audit_run,
    target_from_uploads,
)
from attacks.datasets import FAMOUS_PATIENT
from attacks.exceptions import AuditError, IntakeError
from attacks.policy import load_policy
from attacks.report import report_dumps
from tests import hostile_files

POLICY = load_policy()
FAST = AuditConfig(n_shadow_models=8, n_jobs=2, sweep=False, label="y")


def _best_auc(report):
    return max(a["auc"] for a in report["attacks"] if not a["error"])


def test_overfit_nearest_neighbour_is_found_leaky(overfit_knn):
    report = audit_run(overfit_knn, config=FAST, policy=POLICY)
    assert _best_auc(report) > 0.8
    assert report["verdict"]["risk"] == "high"


def test_regularised_logistic_regression_on_large_data_is_found_safe(safe_logreg):
    report = audit_run(safe_logreg, config=FAST, policy=POLICY)
    assert _best_auc(report) < 0.56
    assert report["verdict"]["risk"] == "low"
    assert report["rules"] == []


@pytest.fixture(scope="module")
def famous_reports(famous_leaky, famous_mitigated):
    config = AuditConfig(n_shadow_models=16, n_jobs=2, label="response", sweep=False)
    record = Record(X=pd.DataFrame([FAMOUS_PATIENT]))
    return {
        gamma: audit_run(target, config=config, policy=POLICY, record=record)
        for gamma, target in ((3, famous_leaky), (0.1, famous_mitigated))
    }


def _record_value(report, attack):
    return next(a for a in report["record"]["attacks"] if a["name"] == attack)


def test_famous_patient_is_judged_a_member_at_gamma_3(famous_reports):
    report = famous_reports[3]
    assert report["record"]["membership_probability"] >= 0.7
    assert _record_value(report, "shadow")["membership_probability"] >= 0.7
    assert report["record"]["pool_row"] == {"set": "train", "index": 199}
    assert report["verdict"]["risk"] == "high"


def test_gamma_0_1_looks_safe_to_the_example_but_not_to_stronger_attacks(famous_reports):
    report = famous_reports[0.1]
    assert 0.35 <= _record_value(report, "shadow")["membership_probability"] <= 0.65
    fprs = [_record_value(report, name)["false_positive_rate"] for name in ("lira", "rmia")]
    assert min(fprs) <= 0.1  # an attack with shadow models still singles the patient out
    assert report["record"]["attack"] != "shadow"
    lira_auc = next(a["auc"] for a in report["attacks"] if a["name"] == "lira")
    assert lira_auc > 0.6
    sources = {r["source"] for r in report["verdict"]["reasons"]}
    assert "rule:embeds_training_rows" in sources  # an SVC stores training rows verbatim


def test_report_keeps_its_contract(famous_reports):
    report = json.loads(report_dumps(famous_reports[3]))
    assert report["schema_version"] == "2.0"
    assert report["verdict"]["risk"] in {"low", "medium", "high"}
    assert all({"risk", "source", "text"} <= set(r) for r in report["verdict"]["reasons"])
    for attack in report["attacks"]:
        assert {"name", "auc", "auc_ci", "tpr_at_fpr"} <= set(attack)
        assert set(attack["tpr_at_fpr"]) == {"0.001", "0.01", "0.1"}
        assert attack["tpr_at_fpr"]["0.001"] is None  # 200 non-members cannot resolve 0.1%
        low, high = attack["auc_ci"]
        assert low <= attack["auc"] <= high
    assert all({"rule", "risk"} <= set(f) for f in report["rules"])
    assert report["policy"]["sha256"] == POLICY.sha256
    assert report["reproducibility"]["seed"] == 0


def test_reports_name_records_by_index_and_hash_only(famous_reports, famous_leaky):
    text = report_dumps(famous_reports[3])
    assert report_dumps(famous_reports[3]).count('"values"') == 0
    exposed = famous_reports[3]["most_exposed"][0]
    assert exposed["hash"] == famous_leaky.record_hash(famous_leaky.X_train, exposed["index"])
    assert '"age": 62' not in text


def test_raw_values_only_when_asked(famous_leaky):
    config = AuditConfig(
        n_shadow_models=4, n_jobs=2, attacks=("lira",), sweep=False, include_raw_values=True
    )
    report = audit_run(famous_leaky, config=config, policy=POLICY)
    assert report["raw_values_included"] is True
    assert set(report["most_exposed"][0]["values"]) == set(FAMOUS_PATIENT)


def test_same_seed_same_report_whatever_the_attack_order(famous_mitigated):
    def run(attacks):
        config = AuditConfig(n_shadow_models=4, n_jobs=2, attacks=attacks, sweep=False)
        report = audit_run(famous_mitigated, config=config, policy=POLICY)
        return {a["name"]: (a["auc"], a["tpr_at_fpr"]) for a in report["attacks"]}

    assert run(("lira", "rmia", "shadow")) == run(("shadow", "rmia", "lira"))


def _without_run(report: dict) -> str:
    return json.dumps({k: v for k, v in report.items() if k != "run"}, sort_keys=True)


def test_the_same_seed_gives_the_same_report_bytes_with_one_or_two_jobs(famous_leaky):
    config = AuditConfig(n_shadow_models=4, label="response", n_sweep_shadow_models=2)
    record = Record(X=pd.DataFrame([FAMOUS_PATIENT]))
    first, again, two_jobs = (
        audit_run(
            famous_leaky, config=dataclasses.replace(config, n_jobs=n), policy=POLICY, record=record
        )
        for n in (1, 1, 2)
    )
    assert set(first["run"]) == {
        "generated_at",
        "seconds",
        "attack_seconds",
        "shadow_seconds",
        "n_jobs",
    }
    assert set(first["run"]["attack_seconds"]) == set(DEFAULT_ATTACKS)
    assert (first["run"]["n_jobs"], two_jobs["run"]["n_jobs"]) == (1, 2)
    assert _without_run(first) == _without_run(again)
    assert _without_run(first) == _without_run(two_jobs)
    assert first["model"]["params"]["random_state"] == "RandomState instance"
    assert "0x" not in _without_run(first)


def test_an_audit_never_draws_from_the_global_generators(famous_leaky):
    """In one process (one job), so a draw from NumPy's or Python's global RNG shows."""
    before = (pickle.dumps(np.random.get_state()), random.getstate())
    config = AuditConfig(n_shadow_models=2, n_jobs=1, label="response", n_sweep_shadow_models=2)
    report = audit_run(famous_leaky, config=config, policy=POLICY)
    assert [a["error"] for a in report["attacks"]] == [None] * len(DEFAULT_ATTACKS)
    assert (pickle.dumps(np.random.get_state()), random.getstate()) == before


def test_one_failing_attack_does_not_stop_the_others(famous_leaky):
    policy_text = None  # default policy
    config = AuditConfig(
        n_shadow_models=1, n_jobs=2, attacks=("lira", "rmia", "shadow"), sweep=False
    )
    report = audit_run(famous_leaky, config=config, policy=load_policy(policy_text))
    by_name = {a["name"]: a for a in report["attacks"]}
    assert by_name["lira"]["error"] == "LiRA needs at least 2 shadow models."
    assert by_name["lira"]["auc"] is None
    assert by_name["rmia"]["error"] is None and by_name["shadow"]["error"] is None
    assert any(r["source"] == "attack:lira" for r in report["verdict"]["reasons"])


def test_a_record_outside_the_data_is_scored_too(famous_leaky):
    stranger = {**FAMOUS_PATIENT, "age": 21, "bmi_group": 1}
    config = AuditConfig(n_shadow_models=4, n_jobs=2, sweep=False)
    report = audit_run(
        famous_leaky,
        config=config,
        policy=POLICY,
        record=Record(X=pd.DataFrame([stranger]), y=np.array([1])),
    )
    assert report["record"]["pool_row"] is None
    assert report["record"]["label_source"] == "given"
    assert all(0 <= a["membership_probability"] <= 1 for a in report["record"]["attacks"])


@pytest.mark.parametrize(
    "field, value",
    [
        ("random_state", -1),
        ("random_state", 2**32),
        ("random_state", 1.0),
        ("random_state", True),
        ("random_state", None),
        ("n_shadow_models", 0),
        ("n_jobs", 0),
        ("n_jobs", -1),
        ("n_sweep_shadow_models", 1),
    ],
)
def test_a_number_no_audit_can_run_with_is_refused_in_one_sentence(field, value):
    with pytest.raises(AuditError, match=r"^The [a-z ]+ must be a whole number [^\n]+\.$"):
        AuditConfig(**{field: value})


def test_the_largest_seed_audits(famous_leaky):
    config = AuditConfig(
        random_state=MAX_SEED, n_shadow_models=2, n_jobs=1, attacks=("lira", "shadow"), sweep=False
    )
    report = audit_run(famous_leaky, config=config, policy=POLICY)
    assert [a["error"] for a in report["attacks"]] == [None, None]
    assert report["reproducibility"]["seed"] == MAX_SEED


def test_unknown_attack_is_refused(famous_leaky):
    with pytest.raises(AuditError, match="Unknown attack"):
        audit_run(famous_leaky, config=AuditConfig(attacks=("nope",)), policy=POLICY)


def test_sweep_is_in_the_report(famous_leaky):
    config = AuditConfig(
        n_shadow_models=4, n_jobs=2, attacks=("lira",), sweep=True, n_sweep_shadow_models=4
    )
    sweep = audit_run(famous_leaky, config=config, policy=POLICY)["sweep"]
    assert sweep["original"]["is_original"] is True
    assert {p["param"] for p in sweep["points"]} == {"gamma", "C"}
    assert sweep["recommendation"]["value"] != 3.0


def test_sweep_is_held_to_the_strongest_attack_with_progress_per_setting(famous_leaky):
    config = AuditConfig(
        n_shadow_models=4, n_jobs=2, attacks=("rmia",), sweep=True, n_sweep_shadow_models=2
    )
    calls = []
    report = audit_run(
        famous_leaky, config=config, policy=POLICY, progress=lambda s, d: calls.append((s, d))
    )
    rmia, sweep = report["attacks"][0], report["sweep"]
    assert (sweep["original"]["auc"], sweep["original"]["attack"]) == (rmia["auc"], rmia["title"])
    assert sweep["recommendation"]["n_reference_models"] >= 4
    assert "successive halving" in sweep["attack"]
    steps = [(s, d) for s, d in calls if s.startswith("sweep: ")]
    assert steps and all(0.7 <= d < 1.0 for _, d in steps)
    assert any(s.startswith("sweep: gamma=0.01 (") for s, _ in steps)


def test_the_sweep_needs_the_audits_reference_count_even_from_an_attack_without_one(
    famous_leaky,
):
    config = AuditConfig(n_shadow_models=4, n_jobs=2, attacks=("shadow", "lira"), sweep=False)
    attacks = audit_run(famous_leaky, config=config, policy=POLICY)["attacks"]
    shadow = dict(attacks[0], auc=1.0)  # the strongest, and it trains no reference models
    reference = _sweep_reference([shadow, attacks[1]])
    assert (reference.attack, reference.auc) == (shadow["title"], 1.0)
    assert reference.n_reference_models == 4


def test_an_unexpected_error_in_shadow_training_is_isolated(famous_leaky, monkeypatch):
    import attacks.audit as audit_module

    calls = []

    def broken_pool(*args, **kwargs):
        calls.append(1)
        raise TypeError("shadow exploded")

    monkeypatch.setattr(audit_module, "shadow_pool_fit", broken_pool)
    config = AuditConfig(
        n_shadow_models=4, n_jobs=2, attacks=("lira", "rmia", "shadow"), sweep=False
    )
    report = audit_run(famous_leaky, config=config, policy=POLICY)
    by_name = {a["name"]: a for a in report["attacks"]}
    assert by_name["lira"]["error"] == "it failed with TypeError: shadow exploded."
    assert by_name["rmia"]["error"] == by_name["lira"]["error"]
    assert by_name["shadow"]["error"] is None
    assert len(calls) == 1  # the failed pool is not retrained for each attack


def _uploads() -> dict:
    table = "f0,f1,f2,y\n" + "".join(f"{i % 5},{i % 3},{i % 7},{i % 2}\n" for i in range(400))
    return {
        "model": Upload("m.skops", hostile_files.skops_model()),
        "train": Upload("train.csv", table.encode()),
        "test": Upload("test.csv", table.encode()),
    }


@pytest.mark.parametrize("which", ["model", "train", "test"])
def test_target_from_uploads_applies_the_callers_limit_to_every_file(which):
    uploads = _uploads()
    limit = max(len(upload.data) for upload in uploads.values())
    assert target_from_uploads(**uploads, label="y", max_bytes=limit).n_members == 400
    grown = Upload(uploads[which].name, uploads[which].data + b" " * limit)
    with pytest.raises(IntakeError, match="larger than the limit"):
        target_from_uploads(**{**uploads, which: grown}, label="y", max_bytes=limit)
