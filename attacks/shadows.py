"""Shadow (reference) models, trained in parallel and kept only as confidences.

LiRA and RMIA both need the same thing: many models of the target's
configuration, each trained on a random half of the audit pool, and the
confidence each gives to every record. A :class:`ShadowPool` holds exactly
that, ``n_shadow_models x n_records`` numbers, and never the models themselves,
so nothing is written to disk and nothing can be reused for another model.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, clone
from sklearn.utils import check_random_state

from attacks.exceptions import AttackError
from attacks.target import Target, true_class_proba

#: Why the attacks that retrain the model do not run on one that cannot be retrained.
NO_TRAINING_RECIPE = (
    "No training recipe was declared with this model, so no shadow model of it can be trained."
)


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

    def joined(self, more: ShadowPool) -> ShadowPool:
        """This pool followed by ``more`` (the next shadows of the same seed)."""
        return ShadowPool(
            in_mask=np.vstack([self.in_mask, more.in_mask]),
            confidences=np.vstack([self.confidences, more.confidences]),
            extra_confidences=np.vstack([self.extra_confidences, more.extra_confidences]),
        )

    def first(self, n: int) -> ShadowPool:
        """The pool of its first ``n`` shadows."""
        return ShadowPool(self.in_mask[:n], self.confidences[:n], self.extra_confidences[:n])


def shadow_mask(index: int, n_records: int, base_seed: int) -> np.ndarray:
    """Which records shadow ``index`` trains on: a random half, in complementary pairs.

    Shadows ``2j`` and ``2j + 1`` split the pool between them, so each record is IN
    for half of any even number of shadows. The mask depends only on
    ``(base_seed, index)``: the first ``n`` shadows of a larger pool are the
    ``n`` shadows of a smaller one, so a pool grown in rounds, or trained shadow
    by shadow on other machines, is the pool trained at once.
    """
    pair = np.random.RandomState(_derived(base_seed, index // 2, 0))
    half = pair.rand(n_records) < 0.5
    return half if index % 2 == 0 else ~half


def shadow_seed(index: int, base_seed: int) -> int:
    """The ``random_state`` the model of shadow ``index`` is fitted with."""
    return _derived(base_seed, index, 1)


def _derived(base_seed: int, index: int, stream: int) -> int:
    state = np.random.SeedSequence([int(base_seed), int(index), stream]).generate_state(1)[0]
    return int(state % (2**31 - 1))


def base_seed_of(random_state) -> int:
    """One integer from ``random_state``: an int is used as it is."""
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    return int(check_random_state(random_state).randint(2**31 - 1))


@dataclass(frozen=True)
class ShadowOutput:
    """What one trained shadow leaves behind: its mask and its confidences, never itself."""

    index: int
    in_mask: np.ndarray
    confidences: np.ndarray
    extra_confidences: np.ndarray


def shadow_train(
    target: Target,
    *,
    index: int,
    base_seed: int,
    X_extra: pd.DataFrame | None = None,
    y_extra: np.ndarray | None = None,
) -> ShadowOutput:
    """Train shadow ``index`` of the pool seeded by ``base_seed`` and keep its outputs.

    Whatever process or machine runs it, the same arguments give the same output.
    """
    X, y, _ = target.pool()
    X_extra, y_extra = _extra_or_empty(X, y, X_extra, y_extra)
    mask = shadow_mask(index, len(y), base_seed)
    template = clone(training_template(target.model))
    conf, extra = _fit_one(template, X, y, mask, shadow_seed(index, base_seed), X_extra, y_extra)
    return ShadowOutput(index=index, in_mask=mask, confidences=conf, extra_confidences=extra)


def shadow_pool_from_outputs(outputs) -> ShadowPool:
    """A pool of shadow outputs, in index order; the indices must run 0..n-1."""
    outputs = sorted(outputs, key=lambda o: o.index)
    if [o.index for o in outputs] != list(range(len(outputs))):
        raise ValueError("shadow outputs must be numbered 0 to n-1 without gaps")
    return ShadowPool(
        in_mask=np.array([o.in_mask for o in outputs], dtype=bool),
        confidences=np.array([o.confidences for o in outputs], dtype=float),
        extra_confidences=np.array([o.extra_confidences for o in outputs], dtype=float).reshape(
            len(outputs), -1
        ),
    )


def shadow_pool_fit(
    target: Target,
    *,
    n_shadow_models: int,
    random_state=None,
    n_jobs: int | None = None,
    X_extra: pd.DataFrame | None = None,
    y_extra: np.ndarray | None = None,
    start: int = 0,
) -> ShadowPool:
    """Train shadows ``start .. start + n_shadow_models - 1`` in processes on this machine.

    Shadows run in separate processes (``n_jobs``, default all cores). Each is
    :func:`shadow_train`, so the pool is the same whichever way it is trained.
    With ``start`` > 0 the result holds only the new shadows (see
    :meth:`ShadowPool.joined`).
    """
    if n_shadow_models < 1:
        raise ValueError("n_shadow_models must be at least 1")
    base = base_seed_of(random_state)
    X, y, _ = target.pool()
    X_extra, y_extra = _extra_or_empty(X, y, X_extra, y_extra)
    # unfitted: a fitted forest is megabytes to ship per job
    template = clone(training_template(target.model))
    indices = range(start, start + n_shadow_models)
    jobs = (
        delayed(_fit_one)(
            template, X, y, shadow_mask(k, len(y), base), shadow_seed(k, base), X_extra, y_extra
        )
        for k in indices
    )
    results = Parallel(n_jobs=n_jobs or -1, prefer="processes")(jobs)
    return ShadowPool(
        in_mask=np.array([shadow_mask(k, len(y), base) for k in indices], dtype=bool),
        confidences=np.array([r[0] for r in results]).reshape(n_shadow_models, len(y)),
        extra_confidences=np.array([r[1] for r in results]).reshape(n_shadow_models, len(y_extra)),
    )


def _extra_or_empty(X, y, X_extra, y_extra):
    if X_extra is None:
        return X.iloc[:0], y[:0]
    return X_extra, y_extra


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


def training_template(model: BaseEstimator) -> BaseEstimator:
    """What shadows of ``model`` are clones of: the model itself, or its declared template.

    A model that cannot be refitted from itself (an ONNX file:
    :class:`safe_model.onnx_model.OnnxClassifier`) has a ``shadow_template``, the
    estimator built from its declared architecture and recipe, or None.

    Raises
    ------
    AttackError
        :data:`NO_TRAINING_RECIPE`, if the template is None: every attack that
        trains shadows reports that sentence and the others run.
    """
    if not hasattr(model, "shadow_template"):
        return model
    if model.shadow_template is None:
        raise AttackError(NO_TRAINING_RECIPE)
    return model.shadow_template


def reseeded_clone(model: BaseEstimator, seed: int) -> BaseEstimator:
    """An unfitted copy of ``model`` (its :func:`training_template`) whose every
    ``random_state`` is ``seed``.

    Works through Pipelines and meta-estimators (``svc__random_state``), and sets
    every ``n_jobs`` that asks for more to 1, so that shadows, which already run
    one per core, do not oversubscribe the machine.
    """
    shadow = clone(training_template(model))
    params = shadow.get_params(deep=True)
    updates = {k: seed for k in params if k.split("__")[-1] == "random_state"}
    updates.update(
        {k: 1 for k, v in params.items() if k.split("__")[-1] == "n_jobs" and v not in (None, 1)}
    )
    return shadow.set_params(**updates)
