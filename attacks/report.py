"""Plain-data pieces of ``report.json`` (schema: docs/report-schema.md)."""

from __future__ import annotations

import inspect
import json
import math
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from attacks.base import MembershipAttack
from attacks.target import Target

SCHEMA_VERSION = "1.0"
VERSIONED_PACKAGES = ("numpy", "scipy", "scikit-learn", "pandas", "skops", "tre-audit")


def attack_dict(
    name: str,
    title: str,
    attack: MembershipAttack,
    *,
    seconds: float,
    details: dict,
    exposed: list[dict],
) -> dict[str, Any]:
    """One entry of ``attacks[]`` for an attack that ran."""
    m = attack.metrics_
    return {
        "name": name,
        "title": title,
        "params": json_safe(attack.get_params()),
        "error": None,
        "auc": m.auc,
        "auc_ci": list(m.auc_ci),
        "tpr_at_fpr": m.tpr_at_fpr,
        "min_resolvable_fpr": m.min_resolvable_fpr,
        "advantage": m.advantage,
        "roc": {"fpr": m.roc_fpr, "tpr": m.roc_tpr},
        "seconds": round(seconds, 3),
        "details": json_safe(details),
        "most_exposed": exposed,
    }


def failed_attack_dict(name: str, title: str, error: str, seconds: float) -> dict[str, Any]:
    """One entry of ``attacks[]`` for an attack that failed: every metric null."""
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
        "seconds": round(seconds, 3),
        "details": {},
        "most_exposed": [],
    }


def exposed_records(
    target: Target, attack: MembershipAttack, *, k: int, raw_values: bool
) -> list[dict]:
    """The ``k`` members the attack scores most exposed, by index and keyed hash."""
    rows = []
    for index in attack.most_exposed(k).tolist():
        row = {
            "index": index,
            "hash": target.record_hash(target.X_train, index),
            "score": float(attack.scores_[index]),
            "probability": float(attack.probabilities_[index]),
        }
        if raw_values:
            row["values"] = json_safe(target.X_train.iloc[index].to_dict())
        rows.append(row)
    return rows


def model_summary(target: Target) -> dict[str, Any]:
    """Type, steps, parameters and accuracies of the audited model."""
    model = target.model
    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    steps = (
        [f"{n}: {type(s).__name__}" for n, s in model.steps] if isinstance(model, Pipeline) else []
    )
    return {
        "type": f"{type(final).__module__}.{type(final).__qualname__}",
        "pipeline_steps": steps,
        "params": json_safe(final.get_params(deep=False)),
        "classes": json_safe(list(model.classes_)),
        "train_accuracy": float(model.score(target.X_train, target.y_train)),
        "test_accuracy": float(model.score(target.X_test, target.y_test)),
    }


def data_summary(target: Target, label: str) -> dict[str, Any]:
    """Sizes and class balance of the audit data (no values)."""

    def counts(y):
        values, n = np.unique(y, return_counts=True)
        return {str(v): int(c) for v, c in zip(values.tolist(), n.tolist())}

    return {
        "label": label,
        "features": target.feature_names,
        "n_members": target.n_members,
        "n_non_members": target.n_non_members,
        "class_counts": {"train": counts(target.y_train), "test": counts(target.y_test)},
    }


def reproducibility(*, seed, n_shadow_models, n_jobs, attacks, seconds) -> dict[str, Any]:
    """What it takes to run the same audit again and get the same report."""
    versions = {"python": sys.version.split()[0]}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "seed": seed,
        "n_shadow_models": n_shadow_models,
        "n_jobs": n_jobs,
        "attacks": list(attacks),
        "versions": versions,
        "platform": platform.platform(),
        "seconds": round(seconds, 3),
    }


def header() -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "tool": {"name": "tre-audit", "version": _own_version()},
    }


def _own_version() -> str:
    try:
        return metadata.version("tre-audit")
    except metadata.PackageNotFoundError:
        return "unknown"


def json_safe(value: Any) -> Any:
    """``value`` as JSON-able data: numpy scalars unwrapped, NaN as None, sets sorted, any
    other object :func:`described <describe>` (never its repr, which may hold an address)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((json_safe(v) for v in value), key=repr)
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return describe(value)


def describe(value: object) -> str:
    """A stable name for an object JSON has no form for, the same in every run.

    An estimator is shown as its class and the parameters it changed
    (``"DecisionTreeClassifier(max_depth=3)"``), a class or function by its name,
    anything else by its type (``"RandomState instance"``).
    """
    if isinstance(value, BaseEstimator):
        changed = json_safe(_changed_params(value))
        return f"{type(value).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"
    name = getattr(value, "__qualname__", None)
    return name if isinstance(name, str) else f"{type(value).__name__} instance"


def _changed_params(estimator: BaseEstimator) -> dict[str, Any]:
    """The parameters that differ from the class's defaults, compared as scikit-learn's
    own repr compares them (by repr, so arrays and NaN compare too)."""
    defaults = inspect.signature(type(estimator).__init__).parameters
    return {
        k: v
        for k, v in estimator.get_params(deep=False).items()
        if k not in defaults or repr(v) != repr(defaults[k].default)
    }


def report_dumps(report: dict[str, Any]) -> str:
    """The report as stable, pretty JSON text (no NaN, which JSON forbids)."""
    return json.dumps(report, indent=2, allow_nan=False) + "\n"
