"""The audit benchmark's own measuring: CPU of a process tree, the baseline, the fan-out check."""

import os
import subprocess
import sys

import pytest
from celery import Celery

from benchmarks import audit_bench

#: A child that burns CPU, prints its own user + system seconds, then waits to be told to end.
BURNER = """
import os, sys
total = 0
for i in range(3_000_000):
    total += i * i
times = os.times()
print(times.user + times.system, flush=True)
sys.stdin.readline()
"""

#: /proc/<pid>/stat counts in clock ticks; a sample can trail the child's own figure by one.
TICK = 1 / os.sysconf("SC_CLK_TCK")


def _burner() -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", BURNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def test_sampler_counts_a_child_process_cpu():
    sampler = audit_bench.TreeSampler()
    sampler.start()
    child = _burner()
    own = float(child.stdout.readline())
    figures = sampler.stop()
    child.communicate("\n")
    assert sampler.cpu_last[child.pid] == pytest.approx(own, abs=2 * TICK)
    assert figures["cpu_seconds_sampled"] >= sampler.cpu_last[child.pid]
    assert figures["processes_seen"] >= 2


def test_rusage_figures_count_a_reaped_child():
    sampler = audit_bench.TreeSampler()
    before = audit_bench._rusage_cpu()
    sampler.start()
    child = _burner()
    own = float(child.stdout.readline())
    child.communicate("\n")  # reaped: only RUSAGE_CHILDREN still knows its CPU
    sampler.stop()
    figures = audit_bench._rusage_figures(before, sampler)
    assert figures["cpu_seconds"] >= own - TICK


def test_models_trained_prefers_the_adaptive_count_over_the_fixed_one():
    report = {"reproducibility": {"n_shadow_models": 64, "n_models_trained": 8}}
    assert audit_bench.models_trained(report) == 8
    assert audit_bench.models_trained({"reproducibility": {"n_shadow_models": 16}}) == 16
    assert audit_bench.models_trained({}) is None


def _entry(auc: float) -> dict:
    return {
        "best_attack": "rmia",
        "best_auc": auc,
        "best_tpr_at_1pct": 0.5,
        "models_trained": 16,
        "cpu_seconds": 10.0,
    }


@pytest.mark.parametrize(("now", "passes"), [(0.905, True), (0.95, True), (0.885, False)])
def test_baseline_compare_fails_only_a_drop_beyond_the_tolerance(now, passes):
    baseline = {"cases": {"case": {"16": _entry(0.9)}}}
    rows = audit_bench.baseline_compare({"case": {"16": _entry(now)}}, baseline)
    assert rows["case_16"]["pass"] is passes
    assert rows["case_16"]["auc_diff"] == pytest.approx(now - 0.9)


def test_baseline_compare_skips_cases_the_baseline_does_not_hold():
    baseline = {"cases": {"case": {"16": _entry(0.9)}}}
    assert audit_bench.baseline_compare({"other": {"16": _entry(0.9)}}, baseline) == {}
    assert audit_bench.baseline_compare({"case": {"16": _entry(0.9)}}, None) == {}


def _app(shadow_queue: str | None) -> Celery:
    app = Celery("bench-test", set_as_current=False)

    @app.task(name="submissions.audit_run_execute", shared=False)
    def audit(run_id):
        return run_id

    if shadow_queue is not None:
        app.conf.task_routes = {"submissions.shadow_fit": {"queue": shadow_queue}}

        @app.task(name="submissions.shadow_fit", shared=False)
        def shadow(seed):
            return seed

    return app


def test_fanout_queues_are_the_audit_queue_and_the_shadow_queue():
    assert audit_bench.fanout_queues(_app("shadows")) == ["celery", "shadows"]


def test_fanout_stops_with_a_sentence_without_a_shadow_task():
    with pytest.raises(SystemExit, match="no shadow task"):
        audit_bench.fanout_queues(_app(None))


def test_fanout_stops_with_a_sentence_when_shadows_share_the_audit_queue():
    with pytest.raises(SystemExit, match="no queue of its own"):
        audit_bench.fanout_queues(_app("celery"))
