"""The audit benchmark's own measuring: CPU of a process tree, the baseline, the fan-out check."""

import os
import subprocess
import sys

import pytest

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


#: Starts a grandchild that outlives it (as a CLI's loky workers outlive the CLI), then exits.
ORPHAN_MAKER = """
import subprocess, sys
subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
"""
#: The grandchild: burns CPU after its parent has gone, then writes its own CPU seconds.
ORPHAN = """
import os, sys, time
time.sleep(0.5)
total = 0
for i in range(3_000_000):
    total += i * i
times = os.times()
open(sys.argv[1], "w").write(str(times.user + times.system))
"""
#: Runs in its own process (a subreaper changes the process for good): the CPU it counts.
ADOPTER = """
import resource, subprocess, sys
from benchmarks import audit_bench
audit_bench.become_subreaper()
subprocess.run([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]], check=True)
audit_bench.reap_adopted(set())
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(usage.ru_utime + usage.ru_stime)
"""


def test_a_subreaper_counts_the_cpu_of_descendants_that_outlive_their_parent(tmp_path):
    written = tmp_path / "orphan-cpu"
    argv = [sys.executable, "-c", ADOPTER, ORPHAN_MAKER, ORPHAN, str(written)]
    counted = float(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    assert counted >= float(written.read_text()) - TICK


def test_models_trained_prefers_the_adaptive_count_over_the_fixed_one():
    report = {"reproducibility": {"n_shadow_models": 64}, "shadow_rounds": {"n_models": 8}}
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
