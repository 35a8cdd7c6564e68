"""Shadow (reference) models, trained in parallel and kept only as confidences.

LiRA and RMIA both need the same thing: many models of the target's
configuration, each trained on a random half of the audit pool, and the
confidence each gives to every record. A :class:`ShadowPool` holds exactly
that, ``n_shadow_models x n_records`` numbers, and never the models themselves,
so nothing is written to disk and nothing can be reused for another model.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, clone
from sklearn.utils import check_random_state

from attacks.target import Target, true_class_proba


@dataclass(frozen=True)
class ShadowPool:
    """Confidences of shadow models on the audit pool.

    Attributes
    ----------
    in_mask : ndarray of bool, shape (n_shadow_models, n_records)
        ``in_mask[k, i]`` is True when shadow ``k`` was trained on record ``i``.
    confidences : ndarray, shape (n_shadow_models, n_records)
        Probability shadow ``k`` gives record ``i``'s true class.
    extra_confidences : ndarray, shape (n_shadow_models, n_extra)
        The same for extra rows (a queried record) that no shadow trains on.
    """

    in_mask: np.ndarray
    confidences: np.ndarray
    extra_confidences: np.ndarray

    @property
    def n_shadow_models(self) -> int:
        return self.in_mask.shape[0]


def paired_halves(n_models: int, n_records: int, rng: np.random.RandomState) -> np.ndarray:
    """Training masks in complementary pairs: each record is IN for half the models.

    With an odd count the last model takes a random half on its own.
    """
    masks = []
    for _ in range(n_models // 2):
        half = rng.rand(n_records) < 0.5
        masks += [half, ~half]
    if n_models % 2:
        masks.append(rng.rand(n_records) < 0.5)
    return np.array(masks, dtype=bool).reshape(n_models, n_records)


def shadow_pool_fit(
    target: Target,
    *,
    n_shadow_models: int,
    random_state=None,
    n_jobs: int | None = None,
    X_extra: pd.DataFrame | None = None,
    y_extra: np.ndarray | None = None,
) -> ShadowPool:
    """Train ``n_shadow_models`` clones of the target model on paired halves of the pool.

    Shadows run in separate processes (``n_jobs``, default all cores); each gets
    a seed drawn from ``random_state``, so the same seed gives the same pool.
    """
    if n_shadow_models < 1:
        raise ValueError("n_shadow_models must be at least 1")
    rng = check_random_state(random_state)
    X, y, _ = target.pool()
    in_mask = paired_halves(n_shadow_models, len(y), rng)
    seeds = rng.randint(2**31 - 1, size=n_shadow_models)
    if X_extra is None:
        X_extra, y_extra = X.iloc[:0], y[:0]
    template = clone(target.model)  # unfitted: a fitted forest is megabytes to ship per job
    jobs = (
        delayed(_fit_one)(template, X, y, mask, int(seed), X_extra, y_extra)
        for mask, seed in zip(in_mask, seeds)
    )
    results = Parallel(n_jobs=n_jobs or -1, prefer="processes")(jobs)
    conf = np.array([r[0] for r in results]).reshape(n_shadow_models, len(y))
    extra = np.array([r[1] for r in results]).reshape(n_shadow_models, len(y_extra))
    return ShadowPool(in_mask=in_mask, confidences=conf, extra_confidences=extra)


def _fit_one(model, X, y, mask, seed, X_extra, y_extra):
    shadow = fit_quietly(reseeded_clone(model, seed), X.iloc[np.flatnonzero(mask)], y[mask])
    extra = true_class_proba(shadow, X_extra, y_extra) if len(y_extra) else np.empty(0)
    return true_class_proba(shadow, X, y), extra


def fit_quietly(model: BaseEstimator, X, y) -> BaseEstimator:
    """Fit a copy of the researcher's configuration without repeating its warnings.

    The researcher saw them when fitting the target; shadows and sweep points
    would print them again dozens of times.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X, y)


def reseeded_clone(model: BaseEstimator, seed: int) -> BaseEstimator:
    """An unfitted copy of ``model`` whose every ``random_state`` is ``seed``.

    Works through Pipelines and meta-estimators (``svc__random_state``), and sets
    every ``n_jobs`` that asks for more to 1, so that shadows, which already run
    one per core, do not oversubscribe the machine.
    """
    shadow = clone(model)
    params = shadow.get_params(deep=True)
    updates = {k: seed for k in params if k.split("__")[-1] == "random_state"}
    updates.update(
        {k: 1 for k, v in params.items() if k.split("__")[-1] == "n_jobs" and v not in (None, 1)}
    )
    return shadow.set_params(**updates)
