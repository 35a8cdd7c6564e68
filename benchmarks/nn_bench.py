"""Neural networks audited by the service: the teaching MLP and CNN at 16 shadows on 1,
then 2 Celery workers.

Run ``.venv/bin/python benchmarks/nn_bench.py [--cases breast_cancer_mlp,digits_cnn_overfit]
[--shadows 16] [--workers 1 2] [--keep]``.

Like ``fanout_bench.py`` (whose helpers it uses) it starts everything itself in a fresh
temporary folder: a private redis-server, a new SQLite database, then for each worker
count that many workers (``--concurrency 1``, one thread each, ``TRE_AUDIT_FANOUT=true``,
``TRE_AUDIT_SHADOW_MODELS=--shadows``, no sweep). Each case of
:mod:`attacks.nn.teaching` is written as a researcher uploads it (``model.onnx``, its
declaration, ``train.csv``, ``test.csv``) and submitted once per worker count; the
shadows are trained from the declared recipe by tre-audit's own loop, one Celery task
each. Per case and count it prints the wall seconds from the submission's commit to
the run's end, the seconds per shadow (the workers' busy seconds on shadow tasks over
the number of shadows), whether the report equals the first count's (it must: the
same seed), and LiRA's and RMIA's AUC and TPR at 1% FPR. Peak memory is the largest
resident set of any process the workers ran and waited for (``RUSAGE_CHILDREN``,
sandbox children included), read after the workers stop. Another load on the machine
inflates every time: the load average is printed.

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.fanout_bench import (  # noqa: E402 - after the path is set
    _audit_once,
    _busy_seconds,
    _database_prepare,
    _without_run,
)
from benchmarks.service_bench import (  # noqa: E402
    _load,
    _redis_start,
    _service_env,
    _stop,
    _workers_start,
)

CASES = ("breast_cancer_mlp", "digits_cnn_overfit")
ATTACKS = ("lira", "rmia")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    tmp = Path(tempfile.mkdtemp(prefix="tre-audit-nn-bench-"))
    procs: list = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        figures = _bench(args, tmp, procs)
    finally:
        _stop(procs)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(figures))
    return 0 if all(case["same_reports"] for case in figures["cases"].values()) else 1


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--shadows", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per audit")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and logs")
    parser.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _bench(args, tmp: Path, procs: list) -> dict:
    env = _service_env(args, tmp) | {
        "TRE_AUDIT_FANOUT": "true",
        "TRE_AUDIT_SHADOW_MODELS": str(args.shadows),
        "TRE_AUDIT_SWEEP": "false",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    env["CELERY_BROKER_URL"] = _redis_start(tmp, procs)
    os.environ.update(env)
    researcher = _database_prepare()
    cases = args.cases.split(",")
    uploads = {name: _teaching_uploads(name, tmp / name) for name in cases}
    figures = {"shadows": args.shadows, "load_average_start": _load(), "cases": {}}
    for name in cases:
        figures["cases"][name] = {"runs": {}}
    reports: dict[str, list] = {name: [] for name in cases}
    for n_workers in args.workers:
        mine: list = []
        folder = tmp / f"w{n_workers}"
        folder.mkdir()
        _workers_start(env, folder, mine, n_workers)
        for name in cases:
            print(f"bench: {name}, {n_workers} worker(s); load {_load()}", flush=True)
            busy_before = _busy_seconds(folder / "logs").get("audit_shadow_train", 0.0)
            run, wall = _audit_once(researcher, uploads[name], args.timeout)
            busy = _busy_seconds(folder / "logs").get("audit_shadow_train", 0.0) - busy_before
            n_models = run.report["reproducibility"]["n_shadow_models"]
            figures["cases"][name]["runs"][n_workers] = {
                "wall_seconds": round(wall, 1),
                "seconds_per_shadow": round(busy / max(n_models, 1), 2),
                "n_shadow_models": n_models,
                "attacks": _attack_figures(run.report),
            }
            print(f"bench: {figures['cases'][name]['runs'][n_workers]}", flush=True)
            reports[name].append(_without_run(run.report))
        _stop(mine)
    for name in cases:
        runs = figures["cases"][name]["runs"]
        walls = [runs[n]["wall_seconds"] for n in args.workers]
        figures["cases"][name]["wall_ratio"] = round(walls[-1] / walls[0], 3)
        figures["cases"][name]["same_reports"] = all(r == reports[name][0] for r in reports[name])
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    figures["peak_rss_mib"] = round(children / 1024, 1)
    figures["load_average_end"] = _load()
    return figures


def _teaching_uploads(name: str, folder: Path) -> dict:
    from attacks.audit import Upload
    from attacks.nn.teaching import teaching_write

    paths = teaching_write(name, folder)
    files = {role: Upload(path.name, path.read_bytes()) for role, path in paths.items()}
    files["architecture"] = files.pop("declaration")
    return files


def _attack_figures(report: dict) -> dict:
    """AUC and TPR at 1% FPR of LiRA (online) and RMIA, as the report states them."""
    return {
        a["name"]: {"auc": a["auc"], "tpr_at_1pct_fpr": a["tpr_at_fpr"].get("0.01")}
        for a in report["attacks"]
        if a["name"] in ATTACKS
    }


if __name__ == "__main__":
    raise SystemExit(main())
