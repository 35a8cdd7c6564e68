"""A realistic ``report.json`` dict (schema 2.0) for PDF and report tests.

Every key of docs/report-schema.md is filled, with the awkward cases a
renderer must handle: a failed attack, a TPR level finer than 1 / n
non-members (null), a sweep with a recommendation and a queried record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from statistics import NormalDist

N_MEMBERS = 1000
N_NON_MEMBERS = 500
ROC_POINTS = 50
FEATURES = [
    "age",
    "sex",
    "bmi",
    "systolic_bp",
    "diastolic_bp",
    "cholesterol",
    "hdl",
    "ldl",
    "triglycerides",
    "hba1c",
    "smoker",
    "alcohol_units_per_week",
    "postcode_deprivation",
    "ethnicity",
    "prior_mi",
    "prior_stroke",
    "statin",
    "ace_inhibitor",
]
_NORMAL = NormalDist()
_TRAIN_SHA = hashlib.sha256(b"train.parquet").hexdigest()
ATTACK_SECONDS = {"shadow": 3.2, "lira": 41.7, "lira_offline": 0.8, "rmia": 6.3, "worst_case": 12.4}


def sample_report() -> dict:
    """A complete report of a leaky random forest, as the audit writes it."""
    attacks = _attacks()
    return {
        "schema_version": "2.0",
        "tool": {"name": "tre-audit", "version": "0.1.0"},
        "verdict": _verdict(),
        "model": _model(),
        "data": _data(),
        "inputs": _inputs(),
        "attacks": attacks,
        "rules": _rules(),
        "sweep": _sweep(),
        "most_exposed": attacks[1]["most_exposed"],
        "record": _record(),
        "policy": _policy(),
        "reproducibility": _reproducibility(),
        "raw_values_included": False,
        "run": {
            "generated_at": "2025-03-14T10:22:31+00:00",
            "seconds": 71.3,
            "attack_seconds": ATTACK_SECONDS,
            "n_jobs": 4,
        },
    }


def network_report(name: str = "digits_cnn_regularised", *, recipe: bool = True) -> dict:
    """The sample report as it reads for a teaching network submitted as an ONNX file:
    ``model.declaration`` as the audit writes it (the schema's ``to_dict``)."""
    from attacks.nn.schema import parse_declaration
    from attacks.nn.teaching import DECLARATIONS

    declared = {k: v for k, v in DECLARATIONS[name].items() if recipe or k != "recipe"}
    report = sample_report()
    report["model"] = {
        **report["model"],
        "type": "safe_model.onnx_model.OnnxClassifier",
        "pipeline_steps": [],
        "params": {"n_threads": 1, "output": "logits"},
        "declaration": parse_declaration(declared, n_classes=None).to_dict(),
    }
    return report


def schema_1(report: dict) -> dict:
    """The same report as schema 1.0 wrote it (as reports stored before 2.0 are): no
    ``run``, its fields in the header, in each attack and in ``reproducibility``."""
    old = {k: v for k, v in report.items() if k != "run"}
    run = report["run"]
    old |= {"schema_version": "1.0", "generated_at": run["generated_at"]}
    old["attacks"] = [a | {"seconds": run["attack_seconds"][a["name"]]} for a in report["attacks"]]
    old["reproducibility"] = report["reproducibility"] | {
        "n_jobs": run["n_jobs"],
        "seconds": run["seconds"],
    }
    return old


def _verdict() -> dict:
    reasons = [
        {
            "risk": "high",
            "source": "attack:lira",
            "evidence": {"auc": 0.842, "auc_ci": [0.821, 0.863]},
            "text": "LiRA (online) tells members from non-members with AUC 0.842 "
            "(95% CI 0.821 to 0.863; 0.5 is guessing).",
        },
        {
            "risk": "high",
            "source": "record",
            "evidence": {"membership_probability": 0.93},
            "text": "The queried record is a member with probability 0.93 (LiRA (online)), "
            "flagged at a false-positive rate of 0.4%.",
        },
        {
            "risk": "high",
            "source": "rule:min_leaf_records",
            "evidence": {"min_samples_leaf": 1, "min_leaf_records": 5},
            "text": "Tree leaves may hold a single training record (min_samples_leaf=1).",
        },
        {
            "risk": "medium",
            "source": "attack:lira_offline",
            "evidence": {"error": "Shadow models did not converge on the population data."},
            "text": "LiRA (offline) could not run: Shadow models did not converge on the "
            "population data. The audit is incomplete without it.",
        },
        {
            "risk": "medium",
            "source": "attack:rmia",
            "evidence": {"tpr": 0.058, "fpr": 0.01},
            "text": "RMIA finds 5.8% of members at a 1% false-positive rate (5.8x chance).",
        },
    ]
    return {
        "risk": "high",
        "reasons": reasons,
        "summary": "High risk: the model reveals which records it was trained on; "
        "do not release it as it stands.",
    }


def _model() -> dict:
    params = {
        "bootstrap": True,
        "ccp_alpha": 0.0,
        "class_weight": None,
        "criterion": "gini",
        "max_depth": None,
        "max_features": "sqrt",
        "max_leaf_nodes": None,
        "min_samples_leaf": 1,
        "min_samples_split": 2,
        "n_estimators": 200,
        "n_jobs": None,
        "oob_score": False,
        "random_state": 42,
        "verbose": 0,
        "monotonic_cst": None,
        "warm_start": False,
        "note_long_value": "x" * 150,
    }
    return {
        "type": "sklearn.ensemble._forest.RandomForestClassifier",
        "pipeline_steps": ["scale: StandardScaler", "forest: RandomForestClassifier"],
        "params": params,
        "classes": [0, 1],
        "train_accuracy": 1.0,
        "test_accuracy": 0.812,
    }


def _data() -> dict:
    return {
        "label": "cvd_event_5y",
        "features": FEATURES,
        "n_members": N_MEMBERS,
        "n_non_members": N_NON_MEMBERS,
        "class_counts": {"train": {"0": 804, "1": 196}, "test": {"0": 398, "1": 102}},
    }


def _inputs() -> list[dict]:
    files = [
        ("model", "cvd_forest.skops", 4_812_330),
        ("train", "train.parquet", 61_204),
        ("test", "test.parquet", 30_877),
        ("record", "row.json", 412),
        ("description", "description.json", 2_906),
    ]
    return [
        {
            "role": role,
            "name": name,
            "sha256": hashlib.sha256(name.encode()).hexdigest(),
            "bytes": size,
        }
        for role, name, size in files
    ]


def _attacks() -> list[dict]:
    shadow = _attack(
        "shadow",
        "Shadow model (Shokri)",
        1.1,
        params={"n_shadow_models": 16},
        details={"shadow_member_confidence": 0.947, "shadow_non_member_confidence": 0.781},
    )
    lira = _attack(
        "lira",
        "LiRA (online)",
        2.0,
        params={"n_shadow_models": 16},
        details={"n_shadow_models": 16},
    )
    offline = _failed(
        "lira_offline", "LiRA (offline)", "Shadow models did not converge on the population data."
    )
    rmia = _attack(
        "rmia",
        "RMIA",
        1.4,
        params={"n_reference_models": 16, "gamma": 2.0},
        details={"n_reference_models": 16},
    )
    worst = _attack(
        "worst_case",
        "Worst case (attack model on outputs)",
        1.7,
        params={"n_splits": 5, "n_baselines": 5},
        details={"baseline_aucs": [0.503, 0.488, 0.517, 0.495, 0.509], "p_value": 1.2e-9},
    )
    return [shadow, lira, offline, rmia, worst]


def _attack(name, title, separation, *, params, details) -> dict:
    fpr, tpr = _roc(separation)
    return {
        "name": name,
        "title": title,
        "params": params,
        "error": None,
        "auc": round(_NORMAL.cdf(separation / math.sqrt(2)), 4),
        "auc_ci": [
            round(_NORMAL.cdf(separation / math.sqrt(2)) - 0.021, 4),
            round(_NORMAL.cdf(separation / math.sqrt(2)) + 0.021, 4),
        ],
        "tpr_at_fpr": {"0.001": None, "0.01": _tpr(0.01, separation), "0.1": _tpr(0.1, separation)},
        "min_resolvable_fpr": 1 / N_NON_MEMBERS,
        "advantage": round(2 * _NORMAL.cdf(separation / 2) - 1, 4),
        "roc": {"fpr": fpr, "tpr": tpr},
        "details": details,
        "most_exposed": _exposed(separation),
    }


def _failed(name, title, error) -> dict:
    return {
        "name": name,
        "title": title,
        "params": {},
        "error": error,
        "auc": None,
        "auc_ci": None,
        "tpr_at_fpr": {"0.001": None, "0.01": None, "0.1": None},
        "min_resolvable_fpr": None,
        "advantage": None,
        "roc": None,
        "details": {},
        "most_exposed": [],
    }


def _tpr(fpr: float, separation: float) -> float:
    """Binormal ROC: TPR at an FPR for members shifted by ``separation`` SDs."""
    return round(_NORMAL.cdf(_NORMAL.inv_cdf(fpr) + separation), 4)


def _roc(separation: float) -> tuple[list[float], list[float]]:
    lo = math.log10(1 / N_NON_MEMBERS)
    fpr = [0.0] + [10 ** (lo - lo * i / (ROC_POINTS - 2)) for i in range(ROC_POINTS - 1)]
    fpr[-1] = 1.0
    return [round(f, 6) for f in fpr], [0.0] + [
        _tpr(min(f, 0.999999), separation) for f in fpr[1:-1]
    ] + [1.0]


def _record_hash(index: int) -> str:
    row = json.dumps({"row": index}, separators=(",", ":")).encode()
    return hmac.new(_TRAIN_SHA.encode(), row, hashlib.sha256).hexdigest()[:16]


def _exposed(separation: float) -> list[dict]:
    indices = [17, 402, 93, 771, 5, 260, 614, 38, 959, 127]
    return [
        {
            "index": i,
            "hash": _record_hash(i),
            "score": round(4.0 + separation - 0.31 * k, 3),
            "probability": round(0.99 - 0.012 * k * (3 - separation), 3),
        }
        for k, i in enumerate(indices)
    ]


def _rules() -> list[dict]:
    return [
        {
            "rule": "min_leaf_records",
            "risk": "high",
            "title": "Leaves can hold one record",
            "reason": "min_samples_leaf=1 lets a leaf hold a single training record, so a "
            "prediction can single a person out.",
            "evidence": {"min_samples_leaf": 1, "min_leaf_records": 5, "smallest_leaf": 1},
        },
        {
            "rule": "max_params_per_record",
            "risk": "medium",
            "title": "Many parameters per record",
            "reason": "The forest has 0.42 fitted parameters per training record, leaving few "
            "residual degrees of freedom.",
            "evidence": {"params_per_record": 0.42, "max_params_per_record": 0.1},
        },
    ]


def _sweep() -> dict:
    grid = [
        ("min_samples_leaf", 1, 0.842, 0.812, 1.0),
        ("min_samples_leaf", 5, 0.655, 0.808, 0.9),
        ("min_samples_leaf", 10, 0.603, 0.805, 0.87),
        ("min_samples_leaf", 20, 0.561, 0.793, 0.85),
        ("max_depth", 4, 0.548, 0.779, 0.81),
        ("max_depth", 8, 0.628, 0.801, 0.88),
        ("max_depth", 16, 0.781, 0.810, 0.98),
        ("max_depth", None, 0.842, 0.812, 1.0),
    ]
    points = [
        {
            "param": p,
            "value": v,
            "is_original": p == "min_samples_leaf" and v == 1,
            "auc": auc,
            "auc_ci": [round(auc - 0.022, 3), round(auc + 0.022, 3)],
            "tpr_at_1pct_fpr": round(max(0.0, (auc - 0.5) * 0.35), 3),
            "test_accuracy": test,
            "train_accuracy": train,
        }
        for p, v, auc, test, train in grid
    ]
    recommendation = {
        "param": "min_samples_leaf",
        "value": 10,
        "auc": 0.603,
        "test_accuracy": 0.805,
        "auc_reduction": 0.239,
        "accuracy_change": -0.007,
        "text": "Set min_samples_leaf=10: LiRA AUC falls from 0.842 to 0.603 "
        "while held-out accuracy changes by -0.7 percentage points.",
    }
    return {
        "attack": "LiRA (online, 8 shadow models)",
        "points": points,
        "original": points[0],
        "recommendation": recommendation,
        "accuracy_tolerance": 0.01,
        "note": "",
    }


def _record() -> dict:
    return {
        "membership_probability": 0.93,
        "attack": "lira",
        "label_source": "given",
        "pool_row": {"set": "train", "index": 402},
        "attacks": [
            {"name": "shadow", "membership_probability": 0.71, "false_positive_rate": 0.084},
            {"name": "lira", "membership_probability": 0.93, "false_positive_rate": 0.004},
            {"name": "rmia", "membership_probability": 0.88, "false_positive_rate": 0.012},
            {"name": "worst_case", "membership_probability": 0.79, "false_positive_rate": 0.036},
        ],
    }


def _policy() -> dict:
    thresholds = {
        "audit": {"n_shadow_models": 16, "top_k": 10},
        "attacks": {
            "auc_medium": 0.6,
            "auc_high": 0.8,
            "require_significant_auc": True,
            "tpr_ratio_medium": 3.0,
            "tpr_ratio_high": 10.0,
        },
        "record": {
            "probability_medium": 0.6,
            "probability_high": 0.8,
            "max_false_positive_rate": 0.1,
        },
        "rules": {"min_leaf_records": 5, "svc_gamma_high": 1.0, "max_params_per_record": 0.1},
    }
    return {
        "name": "tre-audit default",
        "version": "1",
        "sha256": hashlib.sha256(b"policy_default.toml").hexdigest(),
        "thresholds": thresholds,
    }


def _reproducibility() -> dict:
    versions = {
        "python": "3.12.3",
        "numpy": "2.1.3",
        "scipy": "1.14.1",
        "scikit-learn": "1.5.2",
        "pandas": "2.2.3",
        "skops": "0.10.0",
        "tre-audit": "0.1.0",
    }
    return {
        "seed": 20250314,
        "n_shadow_models": 16,
        "attacks": ["shadow", "lira", "lira_offline", "rmia", "worst_case"],
        "versions": versions,
        "platform": "Linux-6.8.0-45-generic-x86_64-with-glibc2.39",
    }
