"""Fan-out: the shared forest audited by the service at 16 shadows on 1, then 2 workers.

Run ``.venv/bin/python benchmarks/fanout_bench.py [--shadows 16] [--workers 1 2] [--keep]``.

It starts everything itself in a fresh temporary folder (``service_bench``'s
helpers): a private redis-server, a new SQLite database, and the shared forest
as a researcher's three uploads (``make_classification(n_samples=10000,
n_features=20, n_informative=10, random_state=0)``, a stratified 50/50 split
with ``random_state=0``, ``RandomForestClassifier(100, random_state=0)``, as
skops and CSV). Then, for each worker count, it starts that many Celery workers
(``--concurrency 1``, ``OMP_NUM_THREADS=1``; ``TRE_AUDIT_FANOUT=true``,
``TRE_AUDIT_SHADOW_MODELS=--shadows``, ``TRE_AUDIT_SWEEP=false``,
``TRE_AUDIT_JOBS=1``), submits the forest once, waits for its audit, and stops
the workers. Wall seconds run from the submission's commit to the run's end
(the workers are up and idle before it); busy seconds add up how long each task
took, per task name, from the workers' logs (the shadows' sum against the one
final step shows what fanning out can save). The reports of every count must be
the same but for their times (the issue's target: 2 workers at most 0.55x the
wall time of 1). Another load on the machine inflates every figure: the load
average is printed.

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.service_bench import (  # noqa: E402 - after the path is set
    _load,
    _redis_start,
    _service_env,
    _stop,
    _workers_start,
)

LABEL = "label"


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    tmp = Path(tempfile.mkdtemp(prefix="tre-audit-fanout-bench-"))
    procs = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        figures = _bench(args, tmp, procs)
    finally:
        _stop(procs)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(figures))
    return 0 if figures["same_reports"] else 1


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    env["CELERY_BROKER_URL"] = _redis_start(tmp, procs)
    os.environ.update(env)
    researcher = _database_prepare()
    uploads = _shared_forest(tmp)
    figures = {"shadows": args.shadows, "load_average_start": _load(), "runs": {}}
    reports = []
    for n_workers in args.workers:
        print(f"bench: {n_workers} worker(s); load average {_load()}", flush=True)
        mine: list = []
        folder = tmp / f"w{n_workers}"
        folder.mkdir()
        _workers_start(env, folder, mine, n_workers)
        run, wall = _audit_once(researcher, uploads, args.timeout)
        _stop(mine)
        figures["runs"][n_workers] = {
            "wall_seconds": round(wall, 1),
            "busy_seconds": _busy_seconds(folder / "logs"),
            "n_shadow_models": run.report["reproducibility"]["n_shadow_models"],
            "attempts": run.attempts,
        }
        print(f"bench: {figures['runs'][n_workers]}", flush=True)
        reports.append(_without_run(run.report))
    walls = [figures["runs"][n]["wall_seconds"] for n in args.workers]
    figures["wall_ratio"] = round(walls[-1] / walls[0], 3)
    figures["same_reports"] = all(r == reports[0] for r in reports)
    figures["load_average_end"] = _load()
    return figures


#: A worker's log line for a finished task: its name and how long it took.
_SUCCEEDED = re.compile(r"Task submissions\.(\w+)\[[^]]*\] succeeded in ([0-9.]+)s")


def _busy_seconds(logs: Path) -> dict[str, float]:
    """Seconds the workers spent on each task name, summed over their logs."""
    busy: dict[str, float] = {}
    for log in sorted(logs.glob("worker*.log")):
        for name, seconds in _SUCCEEDED.findall(log.read_text(errors="replace")):
            busy[name] = busy.get(name, 0.0) + float(seconds)
    return {name: round(seconds, 1) for name, seconds in busy.items()}


def _database_prepare():
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from tre_audit.reviews.enums import Role

    researcher = get_user_model().objects.create_user("bench-researcher", "r@bench.localhost")
    researcher.groups.set([Group.objects.get(name=Role.RESEARCHER)])
    return researcher


def _shared_forest(tmp: Path) -> dict:
    """The issue's shared forest as the three uploads a researcher sends."""
    import pandas as pd
    import skops.io
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    from attacks.audit import Upload

    X, y = make_classification(n_samples=10_000, n_features=20, n_informative=10, random_state=0)
    X = pd.DataFrame(X, columns=[f"x{i}" for i in range(20)])
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.5, stratify=y, random_state=0
    )
    model = RandomForestClassifier(100, random_state=0).fit(X_train, y_train)
    model_path = tmp / "model.skops"
    skops.io.dump(model, model_path)
    tables = {
        name: X_part.assign(**{LABEL: y_part}).to_csv(index=False).encode()
        for name, X_part, y_part in (("train", X_train, y_train), ("test", X_test, y_test))
    }
    return {
        "model": Upload(name="model.skops", data=model_path.read_bytes()),
        "train": Upload(name="train.csv", data=tables["train"]),
        "test": Upload(name="test.csv", data=tables["test"]),
    }


def _audit_once(researcher, uploads: dict, timeout: float):
    from tre_audit.submissions.enums import RunStatus
    from tre_audit.submissions.models import AuditRun
    from tre_audit.submissions.services import Declaration, submission_create

    submission = submission_create(
        author=researcher,
        title="fan-out bench",
        label=LABEL,
        declaration=Declaration(files_are_exact=True),
        **uploads,
    )
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        run = AuditRun.objects.get(submission=submission)
        if run.status == RunStatus.FAILED:
            raise SystemExit(f"the audit failed: {run.error}")
        if run.status == RunStatus.DONE:
            return run, time.monotonic() - started
        time.sleep(0.5)
    raise SystemExit(f"the audit did not finish in {timeout:.0f} s")


def _without_run(report: dict) -> dict:
    """The report but for its ``run``, the one part that differs between runs."""
    return {k: v for k, v in report.items() if k != "run"}


if __name__ == "__main__":
    raise SystemExit(main())
