"""The teaching networks trained on their declared recipes: gap, shadow cost, attacks.

Run ``.venv/bin/python benchmarks/nn_recipe_bench.py [--cases a,b] [--shadows 16]
[--jobs 1,2]`` from the repository root.

Per case of :mod:`attacks.nn.teaching` it prints the target's train and test
accuracy (the gap), the seconds to train it and one shadow model (on half the
audit pool, as :func:`attacks.shadows.shadow_train` does), then, for each process
count, the wall time of a pool of ``--shadows`` shadows and whether its
confidences equal the first count's bit for bit; and LiRA (online) and RMIA AUC
and TPR at 1% FPR on that pool. The model is the in-memory
:class:`~attacks.nn.torch_model.TorchRecipeClassifier`, not its ONNX export. The
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from attacks.lira import LiRAAttack  # noqa: E402
from attacks.nn.teaching import CASES, teaching_case, teaching_model  # noqa: E402
from attacks.rmia import RMIAAttack  # noqa: E402
from attacks.shadows import (  # noqa: E402
    fit_quietly,
    reseeded_clone,
    shadow_mask,
    shadow_pool_fit,
    shadow_seed,
)
from attacks.target import Target  # noqa: E402


def case_figures(name: str, n_shadows: int, jobs: list[int]) -> dict:
    """Every figure of one teaching case."""
    case = teaching_case(name)
    started = time.perf_counter()
    model = teaching_model(case)
    figures = {"target_fit_seconds": round(time.perf_counter() - started, 3)}
    train, test = model.score(case.X_train, case.y_train), model.score(case.X_test, case.y_test)
    figures |= {"train_accuracy": train, "test_accuracy": test, "gap": round(train - test, 4)}
    target = Target(model, case.X_train, case.y_train, case.X_test, case.y_test)
    figures["shadow_seconds"] = round(_one_shadow_seconds(target), 3)
    pools = {}
    for n_jobs in jobs:
        started = time.perf_counter()
        pools[n_jobs] = shadow_pool_fit(
            target, n_shadow_models=n_shadows, random_state=0, n_jobs=n_jobs
        )
        figures[f"pool_seconds_{n_jobs}_jobs"] = round(time.perf_counter() - started, 2)
    first = pools[jobs[0]]
    figures["pools_identical"] = all(
        np.array_equal(first.confidences, pool.confidences) for pool in pools.values()
    )
    for attack in (LiRAAttack(online=True, random_state=0), RMIAAttack(random_state=0)):
        metrics = attack.fit(target, pool=first).metrics_
        figures[f"{attack.name}_auc"] = round(metrics.auc, 4)
        figures[f"{attack.name}_tpr_at_1pct_fpr"] = metrics.tpr_at_fpr.get("0.01")
    return figures


def _one_shadow_seconds(target: Target) -> float:
    """Shadow 0's fit, on its half of the pool, in this process."""
    X, y, _ = target.pool()
    mask = shadow_mask(0, len(y), 0)
    shadow = reseeded_clone(target.model, shadow_seed(0, 0))
    started = time.perf_counter()
    fit_quietly(shadow, X.iloc[np.flatnonzero(mask)], y[mask])
    return time.perf_counter() - started


def _peak_mib() -> dict:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mib_self": round(own, 1), "peak_rss_mib_children": round(children, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--shadows", type=int, default=16)
    parser.add_argument("--jobs", default="1,2", help="process counts, comma-separated")
    args = parser.parse_args()
    jobs = [int(n) for n in args.jobs.split(",")]
    figures = {}
    for name in args.cases.split(","):
        figures[name] = case_figures(name, args.shadows, jobs)
        print(name, json.dumps(figures[name]), flush=True)
    figures |= _peak_mib()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
