"""The supervised output attack (``worst_case``) beside RMIA on every benchmark case.

Run ``.venv/bin/python benchmarks/worst_case_bench.py [--cases a,b] [--n-jobs N]``
from the repository root.

Per case it prints AUC and TPR at 1% FPR of three attacks, with the CPU
seconds of this process and its children for each:

- **old**: ``attacks/worst_case.py`` as it was at ``OLD_COMMIT`` (read with
  ``git show``, so no copy of it is kept here): the sorted probabilities, loss
  and correctness fed to a forest whose output ties.
- **new**: the current ``WorstCaseAttack``.
- **RMIA-16**: ``RMIAAttack(n_reference_models=16, random_state=0)``.

Every attack is scored by the current ``attacks.metrics``, so a TPR that a
tie leaves unresolved is printed as ``n/a`` with the tie's range.

Cases: the three of ``benchmarks/audit_bench.py`` (breast cancer RF(100),
breast cancer scaled LR, the 10,000-row forest), the teaching example (SVC
gamma=3), a decision tree on breast cancer and the shared forest
(``make_classification(n_samples=10000, n_features=20, n_informative=10,
random_state=0)``, stratified 50/50 split, ``RandomForestClassifier(100)``).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.audit_bench import case_target  # noqa: E402

#: The last commit before ties were broken and the features widened.
OLD_COMMIT = "6f27f7c"

AUDIT_BENCH_CASES = ("breast_cancer_rf", "breast_cancer_lr", "classification_10k_rf")
CASES = (*AUDIT_BENCH_CASES, "famous_patient_svc", "breast_cancer_tree", "shared_forest")


def target_for(case: str):
    """The fitted target of one case."""
    if case in AUDIT_BENCH_CASES:
        return case_target(case)
    return {
        "famous_patient_svc": _famous_patient,
        "breast_cancer_tree": _breast_cancer_tree,
        "shared_forest": _shared_forest,
    }[case]()


def _famous_patient():
    from attacks.datasets import FEATURES, LABEL, famous_patient_data, famous_patient_model
    from attacks.target import Target

    train, test = famous_patient_data()
    return Target(
        famous_patient_model(train, 3.0),
        train[FEATURES],
        train[LABEL].to_numpy(),
        test[FEATURES],
        test[LABEL].to_numpy(),
    )


def _breast_cancer_tree():
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.tree import DecisionTreeClassifier

    from attacks.target import Target

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y.to_numpy(), test_size=0.3, stratify=y, random_state=0
    )
    model = DecisionTreeClassifier(random_state=0).fit(X_train, y_train)
    return Target(model, X_train, y_train, X_test, y_test)


def _shared_forest():
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    from attacks.target import Target

    X, y = make_classification(n_samples=10_000, n_features=20, n_informative=10, random_state=0)
    X = pd.DataFrame(X, columns=[f"x{i}" for i in range(20)])
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.5, stratify=y, random_state=0
    )
    model = RandomForestClassifier(100, random_state=0).fit(X_train, y_train)
    return Target(model, X_train, y_train, X_test, y_test)


def old_worst_case_class():
    """``WorstCaseAttack`` as it was at ``OLD_COMMIT``, or None outside a git checkout."""
    try:
        source = subprocess.run(
            ["git", "show", f"{OLD_COMMIT}:attacks/worst_case.py"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType("worst_case_old")
    exec(compile(source, f"{OLD_COMMIT}:attacks/worst_case.py", "exec"), module.__dict__)
    return module.WorstCaseAttack


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measured(attack, target) -> dict:
    """AUC, TPR at 1% FPR (or why not) and CPU seconds of one fitted attack."""
    from attacks.metrics import tpr_unresolved_text

    start = _cpu_seconds()
    metrics = attack.fit(target).metrics_
    why = metrics.tpr_unresolved.get("0.01")
    return {
        "auc": metrics.auc,
        "tpr_at_1pct": metrics.tpr_at_fpr["0.01"],
        "tpr_note": None if why is None else tpr_unresolved_text(why),
        "cpu_seconds": _cpu_seconds() - start,
    }


def attacks_for(n_jobs: int) -> dict:
    """Name -> a fresh attack, seeded 0."""
    from attacks.rmia import RMIAAttack
    from attacks.worst_case import WorstCaseAttack

    made = {"new": lambda: WorstCaseAttack(random_state=0, n_jobs=n_jobs)}
    old = old_worst_case_class()
    if old is not None:
        made = {"old": lambda: old(random_state=0, n_jobs=1), **made}
    made["RMIA-16"] = lambda: RMIAAttack(n_reference_models=16, random_state=0, n_jobs=n_jobs)
    return made


def _cell(row: dict) -> str:
    tpr = "n/a" if row["tpr_at_1pct"] is None else f"{row['tpr_at_1pct']:6.1%}"
    return f"{row['auc']:.3f} {tpr:>6} {row['cpu_seconds']:6.1f}s"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--n-jobs", type=int, default=1)
    args = parser.parse_args(argv)
    made = attacks_for(args.n_jobs)
    print(f"{'case':22}" + "".join(f"{name + ': AUC TPR@1% CPU':>27}" for name in made))
    for case in args.cases.split(","):
        target = target_for(case)
        rows = {name: measured(make(), target) for name, make in made.items()}
        print(f"{case:22}" + "".join(f"{_cell(row):>27}" for row in rows.values()), flush=True)
        for name, row in rows.items():
            if row["tpr_note"]:
                print(f"{'':22}{name} TPR@1% n/a: {row['tpr_note']}")


if __name__ == "__main__":
    main()
