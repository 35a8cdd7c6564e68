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

#: 2.0 moved what varies between runs of the same audit into ``run`` (see report_run).
SCHEMA_VERSION = "2.0"
VERSIONED_PACKAGES = ("numpy", "scipy", "scikit-learn", "pandas", "skops", "tre-audit")


def attack_dict(
    name: str,
    title: str,
    attack: MembershipAttack,
    *,
    details: dict,
    exposed: list[dict],
) -> dict[str, Any]:
    """One entry of ``attacks[]`` for an attack that ran."""
    m = attack.metrics_
    return {
        "name": name,
        "title": title,
        "params": json_safe(used_params(attack)),
        "error": None,
        "auc": m.auc,
        "auc_ci": list(m.auc_ci),
        "tpr_at_fpr": m.tpr_at_fpr,
        "tpr_unresolved": m.tpr_unresolved,
        "min_resolvable_fpr": m.min_resolvable_fpr,
        "advantage": m.advantage,
        "roc": {"fpr": m.roc_fpr, "tpr": m.roc_tpr},
        "details": json_safe(details),
        "most_exposed": exposed,
    }


def used_params(attack: MembershipAttack) -> dict[str, Any]:
    """The attack's parameters as it ran: a count it was given (``n_reference_models=4``)
    but that a shared pool overrode is the count it used (``n_reference_models_``), so the
    table agrees with the title; parameters of speed only are left to ``run``."""
    params = _without_execution(attack.get_params())
    return {k: getattr(attack, f"{k}_", v) if k.startswith("n_") else v for k, v in params.items()}


def failed_attack_dict(name: str, title: str, error: str) -> dict[str, Any]:
    """One entry of ``attacks[]`` for an attack that failed: every metric null."""
    return {
        "name": name,
        "title": title,
        "params": {},
        "error": error,
        "auc": None,
        "auc_ci": None,
        "tpr_at_fpr": {"0.001": None, "0.01": None, "0.1": None},
        "tpr_unresolved": {},
        "min_resolvable_fpr": None,
        "advantage": None,
        "roc": None,
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
    params = final.get_params(deep=False)
    if hasattr(final, "shadow_template"):  # an ONNX file: its bytes and template are no setting
        params = {k: v for k, v in params.items() if k not in ("model_bytes", "shadow_template")}
    summary = {
        "type": f"{type(final).__module__}.{type(final).__qualname__}",
        "pipeline_steps": steps,
        "params": json_safe(params),
        "classes": json_safe(list(model.classes_)),
        "train_accuracy": float(model.score(target.X_train, target.y_train)),
        "test_accuracy": float(model.score(target.X_test, target.y_test)),
    }
    declaration = getattr(final, "declaration_", None)  # attacks.nn.declared.declared_model
    if declaration is not None:
        summary["declaration"] = declaration
    return summary


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


def reproducibility(*, seed, n_shadow_models, attacks) -> dict[str, Any]:
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
        "attacks": list(attacks),
        "versions": versions,
        "platform": platform.platform(),
    }


def header() -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "tre-audit", "version": _own_version()},
    }


def run_part(
    *,
    seconds: float,
    attack_seconds: dict[str, float],
    n_jobs: int | None,
    shadow_seconds: float | None = None,
) -> dict:
    """The ``run`` object: when the audit ran, how long it took and on how many processes.

    It is the one part of the report in which two audits with the same seed differ.
    """
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "attack_seconds": {name: round(s, 3) for name, s in attack_seconds.items()},
        "shadow_seconds": None if shadow_seconds is None else round(shadow_seconds, 3),
        "n_jobs": n_jobs,
    }


def report_run(report: dict) -> dict[str, Any]:
    """The report's ``run`` object, also for a report of schema 1, which spread it over
    the header (``generated_at``), each attack (``seconds``) and ``reproducibility``."""
    run = report.get("run")
    if isinstance(run, dict):
        return run
    repro, attacks = _dict(report.get("reproducibility")), report.get("attacks")
    attacks = [a for a in attacks if isinstance(a, dict)] if isinstance(attacks, list) else []
    return {
        "generated_at": report.get("generated_at"),
        "seconds": repro.get("seconds"),
        "attack_seconds": {str(a.get("name")): a.get("seconds") for a in attacks},
        "n_jobs": repro.get("n_jobs"),
    }


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


#: Parameters that change how fast an attack runs, not what it finds (``run`` has them).
EXECUTION_PARAMS = ("n_jobs",)


def _without_execution(params: dict) -> dict:
    return {k: v for k, v in params.items() if k not in EXECUTION_PARAMS}


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
    """The report as ``report.json`` text, wherever it is written (the CLI, the service).

    Keys are sorted, so a report read back from a database that reorders them
    (PostgreSQL's jsonb) gives the same bytes; floats keep Python's shortest
    round-trip form; NaN, which JSON forbids, is refused.
    """
    return json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n"
