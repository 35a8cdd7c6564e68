"""What the model sandbox costs, and how much address space a real audit needs in it.

Run ``.venv/bin/python benchmarks/sandbox_bench.py [--calls N] [--no-audit]``.

- **zygote start**: the first ``sandbox_call`` of a process, which starts the
  zygote (a fresh interpreter importing numpy, pandas, scikit-learn, skops).
- **per call**: median of N calls of a trivial function (fork, limits, network
  namespace, a round trip of CBOR frames, reaping), beside what a child would
  pay without the zygote: a fresh ``subprocess`` that imports the same
  libraries, and a bare ``python -c pass``.
- **transfer**: a 64 MiB float array sent to a child and its sum sent back.
- **intake**: the famous-patient example loaded and validated by
  ``attacks.audit.target_from_uploads`` and 5 rows predicted, inside
  ``INTAKE_LIMITS``: the child's address space before and after.
- **audit**: a real audit (by default breast cancer, RandomForest(100); ``--case``
  takes another case of ``audit_bench.py``; 16 shadow models, sweep on,
  ``n_jobs=2``) inside ``AUDIT_LIMITS``: its seconds and the peak
  address space (``VmPeak``) of the child and of the largest of its joblib/loky
  workers. ``RLIMIT_AS`` applies to each process on its own, so the larger of
  the two is what ``memory_bytes`` must exceed.

The last line printed is one JSON object holding every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from safe_model.sandbox import AUDIT_LIMITS, INTAKE_LIMITS, PRELOAD, MiB, sandbox_call

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the child imports this file by its module name
MODULE = Path(__file__).stem
N_FRESH = 5


def echo(*, value):
    return value


def array_sum(*, array):
    return float(array.sum())


def intake_job() -> dict:
    """Run in the sandbox: intake of the famous-patient example, and a trial predict."""
    from attacks.audit import Upload, target_from_uploads
    from attacks.datasets import LABEL, write_famous_patient_example

    start_mib = _vm_peak_mib(os.getpid())
    paths = write_famous_patient_example(os.getcwd())  # trains the example's model
    uploads = {
        role: Upload(name=Path(path).name, data=Path(path).read_bytes())
        for role, path in paths.items()
        if role in ("model", "train", "test")
    }
    target = target_from_uploads(**uploads, label=LABEL)
    target.model.predict(target.X_train[:5])
    return {"child_start_vm_mib": start_mib, "child_vm_peak_mib": _vm_peak_mib(os.getpid())}


def audit_job(*, case: str) -> dict:
    """Run in the sandbox: one audit, then the peak address space of this process tree."""
    from audit_bench import case_target

    from attacks.audit import AuditConfig, audit_run
    from attacks.policy import load_policy

    target = case_target(case)
    started = time.perf_counter()
    config = AuditConfig(n_shadow_models=16, sweep=True, n_jobs=2, random_state=0)
    audit_run(target, config=config, policy=load_policy())
    seconds = time.perf_counter() - started
    workers = [_vm_peak_mib(pid) for pid in _descendants(os.getpid())]
    return {
        "seconds": seconds,
        "child_vm_peak_mib": _vm_peak_mib(os.getpid()),
        "worker_vm_peak_mib": max(workers, default=0.0),
        "n_workers": len(workers),
    }


def _descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        for task in os.listdir(f"/proc/{parent}/task"):
            with open(f"/proc/{parent}/task/{task}/children") as file:
                children = [int(c) for c in file.read().split()]
            found += children
            stack += children
    return found


def _vm_peak_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith("VmPeak:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _median_seconds(run, n: int) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _fresh(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--no-audit", action="store_true")
    parser.add_argument("--case", default="breast_cancer_rf", help="a case of audit_bench.py")
    args = parser.parse_args()
    trivial = f"{MODULE}:echo"
    figures = {
        "zygote_start_seconds": _median_seconds(
            lambda: sandbox_call(trivial, kwargs={"value": 0}, limits=INTAKE_LIMITS), 1
        ),
        "per_call_seconds": _median_seconds(
            lambda: sandbox_call(trivial, kwargs={"value": 0}, limits=INTAKE_LIMITS), args.calls
        ),
        "fresh_import_subprocess_seconds": _median_seconds(
            lambda: _fresh("; ".join(f"import {name}" for name in PRELOAD)), N_FRESH
        ),
        "fresh_bare_subprocess_seconds": _median_seconds(lambda: _fresh("pass"), N_FRESH),
    }
    array = np.random.default_rng(0).random(64 * MiB // 8)
    figures["transfer_64mib_seconds"] = _median_seconds(
        lambda: sandbox_call(f"{MODULE}:array_sum", kwargs={"array": array}, limits=AUDIT_LIMITS), 3
    )
    figures["intake"] = sandbox_call(f"{MODULE}:intake_job", kwargs={}, limits=INTAKE_LIMITS)
    if not args.no_audit:
        figures["audit"] = sandbox_call(
            f"{MODULE}:audit_job", kwargs={"case": args.case}, limits=AUDIT_LIMITS
        )
    for name, value in figures.items():
        print(f"{name:34} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
