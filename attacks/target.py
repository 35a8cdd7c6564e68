"""The audited target: a fitted model with its members and non-members."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: Probabilities are clipped to [EPS, 1 - EPS] before any logit, so a tree that
#: answers exactly 0 or 1 still gives finite scores (logit range about +-27.6).
EPS = 1e-12


@dataclass(frozen=True)
class Target:
    """A fitted classifier and the two data sets a membership audit needs.

    Parameters
    ----------
    model : estimator
        Fitted scikit-learn classifier (or Pipeline ending in one).
    X_train, y_train : DataFrame, ndarray
        The records the model was trained on (the members).
    X_test, y_test : DataFrame, ndarray
        Held-out records from the same population (the non-members).
    record_key : bytes, default=b""
        Key of the keyed hash that names records in reports. The CLI and the
        service pass the SHA-256 of the training file, so anyone holding that
        file can match a hash to its row while an outsider cannot brute-force
        low-entropy rows from the hash.
    """

    model: Any
    X_train: pd.DataFrame
    y_train: np.ndarray
    X_test: pd.DataFrame
    y_test: np.ndarray
    record_key: bytes = field(default=b"", repr=False)

    @property
    def n_members(self) -> int:
        return len(self.y_train)

    @property
    def n_non_members(self) -> int:
        return len(self.y_test)

    @property
    def feature_names(self) -> list[str]:
        return [str(c) for c in self.X_train.columns]

    def pool(self) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """Members then non-members as one table, with 1/0 membership."""
        X = pd.concat([self.X_train, self.X_test], ignore_index=True)
        y = np.concatenate([self.y_train, self.y_test])
        membership = np.r_[np.ones(self.n_members, int), np.zeros(self.n_non_members, int)]
        return X, y, membership

    def record_hash(self, X: pd.DataFrame, index: int) -> str:
        """Keyed hash naming row ``index`` of ``X`` without revealing it."""
        row = json.dumps([_plain(v) for v in X.iloc[index].tolist()], separators=(",", ":"))
        return hmac.new(self.record_key, row.encode(), hashlib.sha256).hexdigest()[:16]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def true_class_proba(model: Any, X: pd.DataFrame, y: np.ndarray) -> np.ndarray:
    """Probability the model gives each record's true class.

    A model without ``predict_proba`` is treated as hard-label: 1 when it
    predicts the true class, 0 otherwise. A class the model never saw gets 0.
    """
    classes = np.asarray(model.classes_)
    if not hasattr(model, "predict_proba"):
        return (np.asarray(model.predict(X)) == y).astype(float)
    proba = np.asarray(model.predict_proba(X), dtype=float)
    column = {c: i for i, c in enumerate(classes.tolist())}
    idx = np.array([column.get(v, -1) for v in np.asarray(y).tolist()])
    out = np.zeros(len(idx))
    known = idx >= 0
    out[known] = proba[np.flatnonzero(known), idx[known]]
    return out


def logit(p: np.ndarray, floor: float = EPS) -> np.ndarray:
    """Logit scaling of a confidence, as in LiRA: log(p / (1 - p)), clipped to ``floor``."""
    p = np.clip(np.asarray(p, dtype=float), floor, 1 - floor)
    return np.log(p) - np.log1p(-p)


#: A single tree's leaves often answer exactly 0 or 1; stop its logits at 1%.
TREE_FLOOR = 0.01


def probability_floor(model: Any) -> float:
    """Half the smallest probability step the model can express.

    A forest votes in steps of 1/n_estimators and k-NN in steps of 1/k, so a
    probability of exactly 1.0 means "every vote", not "infinitely sure".
    Clipping at 1e-12 instead turns those into logits of +-27.6 that swamp
    LiRA's variance: on a 10,000-row forest, online LiRA at 16 shadows rose from
    AUC 0.696 to 0.879 with the half-vote floor (benchmarks/audit_bench.py).
    Models with continuous outputs keep the tiny default.
    """
    from sklearn.ensemble import BaggingClassifier, ExtraTreesClassifier, RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.tree import BaseDecisionTree

    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    if isinstance(final, RandomForestClassifier | ExtraTreesClassifier | BaggingClassifier):
        return 0.5 / max(int(final.n_estimators), 1)
    if isinstance(final, KNeighborsClassifier):
        return 0.5 / max(int(final.n_neighbors), 1)
    if isinstance(final, BaseDecisionTree):
        return TREE_FLOOR
    return EPS
