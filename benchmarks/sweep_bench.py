"""CPU cost and outcome of the hyperparameter sweep on the benchmark cases.

Run ``.venv/bin/python benchmarks/sweep_bench.py [--cases NAME ...]
[--first-rung 2] [--max-rung 4] [--reference-models 16]``.

Per case it prints the CPU seconds of ``HyperparameterScan.fit`` (this process
and its reaped children, ``getrusage``; ``n_jobs=1`` keeps every model in this
process), how many reference models it trained, each setting's attack AUC with
its interval and reference-model count, the settings it did not attack, and the
recommendation. Each case runs twice: held to a reference (RMIA online with
``--reference-models`` reference models on the audited model, standing in for
the audit's strongest attack; its own CPU is not counted) as ``audit_run``
does, and without one, as the CLI's ``scan`` does. The last line printed is one
JSON object holding every figure.

Before successive halving (LiRA online, 8 shadows and a pooled variance per
point, every point attacked; same cases, ``n_jobs=1``, seed 0) the sweep took
1.3 / 1.0 / 8.4 / 58.9 CPU-s on the teaching example at gamma 3 / gamma 0.1,
breast-cancer RF and the shared forest; it scored the audited gamma=3 at AUC
0.851 while RMIA gives 0.99, and recommended gamma=0.01, keep, keep and
min_samples_leaf=5 respectively.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import warnings

CASES = {
    "teaching_gamma3": "teaching example, SVC gamma=3 (audited setting)",
    "teaching_gamma0.1": "teaching example, SVC gamma=0.1 (the mitigation)",
    "breast_cancer_rf": "breast cancer, RandomForest(100), 70/30 split",
    "shared_forest": "make_classification 10,000 rows (10 informative), RandomForest(100)",
}


def case_target(case: str):
    """The fitted model and its members / non-members for one case."""
    if case.startswith("teaching"):
        return _teaching_target(float(case.removeprefix("teaching_gamma")))
    import pandas as pd
    from sklearn.datasets import load_breast_cancer, make_classification

    if case == "breast_cancer_rf":
        X, y = load_breast_cancer(return_X_y=True, as_frame=True)
        return _forest_target(X, y.to_numpy(), test_size=0.3)
    X, y = make_classification(n_samples=10_000, n_features=20, n_informative=10, random_state=0)
    return _forest_target(pd.DataFrame(X, columns=[f"x{i}" for i in range(20)]), y, 0.5)


def _teaching_target(gamma: float):
    from attacks.datasets import FEATURES, LABEL, famous_patient_data, famous_patient_model
    from attacks.target import Target

    train, test = famous_patient_data()
    model = famous_patient_model(train, gamma)
    return Target(
        model, train[FEATURES], train[LABEL].to_numpy(), test[FEATURES], test[LABEL].to_numpy()
    )


def _forest_target(X, y, test_size: float):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    from attacks.target import Target

    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, stratify=y, random_state=0
    )
    model = RandomForestClassifier(100, random_state=0).fit(X_train, y_train)
    return Target(
        model, X_train.reset_index(drop=True), y_train, X_test.reset_index(drop=True), y_test
    )


def cpu_seconds() -> float:
    """User plus system CPU of this process and of its reaped children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def audit_reference(target, n_models: int):
    """RMIA on the audited model, as the audit's strongest attack would report it."""
    from attacks.rmia import RMIAAttack
    from attacks.scan import SweepReference

    m = RMIAAttack(n_models, online=True, random_state=0, n_jobs=1).fit(target).metrics_
    return SweepReference(
        attack=f"RMIA ({n_models} reference models)",
        auc=m.auc,
        auc_ci=tuple(m.auc_ci),
        tpr_at_1pct_fpr=m.tpr_at_fpr["0.01"],
        n_reference_models=n_models,
    )


def sweep(target, reference, args) -> dict:
    from attacks.scan import HyperparameterScan

    scan = HyperparameterScan(
        n_reference_models=args.first_rung,
        max_reference_models=args.max_rung,
        random_state=0,
        n_jobs=1,
    )
    before, started = cpu_seconds(), time.perf_counter()
    scan.fit(target, reference=reference)
    return {
        "cpu_seconds": round(cpu_seconds() - before, 2),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "n_reference_fits": scan.n_reference_fits_,
        "points": [p.to_dict() for p in scan.points_],
        "skipped": scan.skipped_,
        "recommendation": scan.recommendation_.to_dict() if scan.recommendation_ else None,
    }


def print_sweep(title: str, result: dict) -> None:
    print(
        f"  {title}: {result['cpu_seconds']:.2f} CPU-s ({result['wall_seconds']:.2f} s wall), "
        f"{result['n_reference_fits']} reference models trained"
    )
    for p in result["points"]:
        low, high = p["auc_ci"]
        mark = " (audited)" if p["is_original"] else ""
        print(
            f"    {p['param']}={p['value']!s:<6} AUC {p['auc']:.3f} [{low:.3f}, {high:.3f}] "
            f"{p['n_reference_models']:>2} models  accuracy {p['test_accuracy']:.3f}{mark}"
            f"  {p['note']}"
        )
    for s in result["skipped"]:
        print(f"    {s['param']}={s['value']!s:<6} not attacked: {s['reason']}")
    rec = result["recommendation"]
    print(f"    -> {rec['text'] if rec else 'no recommendation'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--first-rung", type=int, default=2, help="reference models at first")
    parser.add_argument("--max-rung", type=int, default=4, help="most per halving rung")
    parser.add_argument("--reference-models", type=int, default=16, help="the audit's count")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    figures = {"first_rung": args.first_rung, "max_rung": args.max_rung, "cases": {}}
    for case in args.cases:
        target = case_target(case)
        reference = audit_reference(target, args.reference_models)
        print(f"{case}: {CASES[case]}; audit reference {reference.attack} AUC {reference.auc:.3f}")
        held = sweep(target, reference, args)
        alone = sweep(target, None, args)
        print_sweep("held to the audit", held)
        print_sweep("alone (CLI scan)", alone)
        figures["cases"][case] = {"reference_auc": reference.auc, "held": held, "alone": alone}
    print(json.dumps(figures, default=str))


if __name__ == "__main__":
    main()
