"""Uploads audited in a sandbox process give what an audit in this process gives."""

import numpy as np
import pytest

from attacks.audit import AuditConfig, audit_uploads, shadow_base_seed, shadow_rule
from attacks.exceptions import AuditError
from attacks.policy import default_policy_text, load_policy
from attacks.rounds import round_counts
from attacks.sandboxed import (
    _progress_relay,
    confidences_checked,
    uploads_audit,
    uploads_audit_round,
    uploads_shadow_train,
)

TINY = AuditConfig(n_shadow_models=2, attacks=("shadow",), sweep=False, n_jobs=1)


def test_the_sandboxed_audit_reports_what_the_in_process_one_does(example_files):
    stages = []
    args = {**example_files, "label": "response", "policy": load_policy(), "config": TINY}
    sandboxed = uploads_audit(**args, progress=lambda stage, done: stages.append(stage))
    here = audit_uploads(**args)
    assert _untimed(sandboxed) == _untimed(here)
    assert stages and stages[-1] == "report"  # progress crossed the boundary


def _untimed(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "run"}


def test_progress_from_the_child_is_checked_before_it_is_believed():
    seen = []
    relay = _progress_relay(lambda stage, done: seen.append((stage, done)))
    events = [
        {"stage": "lira", "done": 0.5},
        {"stage": "nan", "done": float("nan")},
        {"stage": "bool", "done": True},
        {"stage": "escape\x1b[2J", "done": 0.1},
        {"stage": 3, "done": 0.1},
        {"stage": "rmia", "done": 7},
    ]
    for event in events:
        relay(event)
    assert seen == [("lira", 0.5), ("rmia", 1.0)]


# Shadows trained one sandbox at a time, as the service's tasks do --------------------

#: Rounds of 2, 4 and 8 shadows: small, and more than one round to decide on.
ROUNDS_POLICY = load_policy(
    default_policy_text()
    .replace("min_shadow_models = 4", "min_shadow_models = 2")
    .replace("max_shadow_models = 64", "max_shadow_models = 8")
)
POOLED = AuditConfig(attacks=("shadow", "lira", "rmia"), sweep=False, n_jobs=1)


def _fanned_out(files, *, config=POOLED, policy=ROUNDS_POLICY, fail_index=None):
    """The audit with each shadow trained in its own sandbox call, round by round."""
    args = {**files, "label": "response", "policy": policy, "config": config}
    base = shadow_base_seed(config)
    shadows, history = [], []
    for count in round_counts(shadow_rule(config, policy)):
        for k in range(len(shadows), count):
            trained = uploads_shadow_train(**files, label="response", index=k, base_seed=base)
            shadows.append("Shadow 1 broke." if k == fail_index else trained)
        out = uploads_audit_round(**args, shadows=shadows, history=history)
        if "report" in out:
            return out["report"]
        history.append(out["round"])
    raise AssertionError("the last round must end the audit")


def test_shadows_trained_one_sandbox_at_a_time_give_the_in_process_report(example_files):
    fanned = _fanned_out(example_files)
    here = audit_uploads(**example_files, label="response", policy=ROUNDS_POLICY, config=POOLED)
    assert _untimed(fanned) == _untimed(here)
    assert [r["n_models"] for r in fanned["shadow_rounds"]["rounds"]][0] == 2
    assert fanned["shadow_rounds"]["n_models"] == here["reproducibility"]["n_shadow_models"]


def test_a_failed_shadow_is_reported_by_each_pool_attack_and_the_others_run(example_files):
    report = _fanned_out(example_files, fail_index=1)
    errors = {a["name"]: a["error"] for a in report["attacks"]}
    assert errors["lira"] == errors["rmia"] == "Shadow 1 broke."
    assert not errors["shadow"]
    assert report["shadow_rounds"]["stopped"] == "Training the shadow models failed."


@pytest.mark.parametrize(
    "confidences",
    [
        np.array([0.5, np.nan]),
        np.array([0.5, 1.5]),
        np.array([[0.5, 0.5]]),
        np.array([1, 0]),
        "0.5",
    ],
)
def test_confidences_from_a_sandbox_must_be_one_probability_per_record(confidences):
    with pytest.raises(AuditError, match="one probability per record"):
        confidences_checked(confidences)


def test_confidences_of_the_wrong_length_are_refused():
    assert confidences_checked(np.array([0.25, 1.0], dtype=np.float32), 2).dtype == np.float64
    with pytest.raises(AuditError, match="one probability per record"):
        confidences_checked(np.array([0.25, 1.0]), 3)
