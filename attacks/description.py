"""Per-column data descriptions: synthetic cohorts for shadow models.

A description says, for each class, how many records to draw and, for each
column, which values occur with which weights. Columns are drawn independently
given the class, which is what a TRE can publish without giving away records.

Example (JSON)::

    {"label": "response",
     "classes": {"1": {"n": 100, "columns": {"smoker": {"values": [0, 1], "weights": [0.2, 0.8]}}},
                 "0": {"n": 100, "columns": {"smoker": {"values": [0, 1], "weights": [0.8, 0.2]}}}}}
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state

from attacks.exceptions import IntakeError


def sample_cohort(description: dict[str, Any], *, classes, random_state=None):
    """Draw a cohort from ``description``.

    Parameters
    ----------
    description : dict
        As in the module docstring.
    classes : array-like
        The model's ``classes_``; description keys are matched to them as strings.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    X : DataFrame
    y : ndarray
    """
    rng = check_random_state(random_state)
    by_name = {str(c): c for c in np.asarray(classes).tolist()}
    frames, labels = [], []
    for key, spec in _classes(description).items():
        if key not in by_name:
            raise IntakeError(f"The data description names class {key!r}, which the model lacks.")
        n = int(spec.get("n", 0))
        frames.append(
            pd.DataFrame({col: _draw(col, dist, n, rng) for col, dist in spec["columns"].items()})
        )
        labels.append(np.full(n, by_name[key]))
    return pd.concat(frames, ignore_index=True), np.concatenate(labels)


def _classes(description):
    classes = description.get("classes") if isinstance(description, dict) else None
    if not isinstance(classes, dict) or not classes:
        raise IntakeError("The data description needs a 'classes' object with one entry per class.")
    columns = {tuple(spec.get("columns", {})) for spec in classes.values()}
    if len(columns) != 1:
        raise IntakeError("Every class in the data description must describe the same columns.")
    return classes


def _draw(column: str, dist: dict, n: int, rng) -> np.ndarray:
    values, weights = dist.get("values"), dist.get("weights")
    if not values or weights is None or len(values) != len(weights):
        raise IntakeError(
            f"Column {column!r} of the data description needs matching "
            "'values' and 'weights' lists."
        )
    p = np.asarray(weights, dtype=float)
    if (p < 0).any() or p.sum() <= 0:
        raise IntakeError(f"Column {column!r} of the data description has invalid weights.")
    return np.asarray(values)[rng.choice(len(values), size=n, p=p / p.sum())]
