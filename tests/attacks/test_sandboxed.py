"""Uploads audited in a sandbox process give what an audit in this process gives."""

from attacks.audit import AuditConfig, audit_uploads
from attacks.policy import load_policy
from attacks.sandboxed import _progress_relay, uploads_audit

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
