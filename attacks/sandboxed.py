"""Check and audit untrusted uploads in a sandbox process, never in the caller's.

A crafted model can crash or hang compiled code however carefully it was
validated, so the process that loads an upload and predicts with it is a
short-lived, resource-limited child (:mod:`safe_model.sandbox`). A crash, hang
or overrun there is one sentence here (an :class:`~attacks.exceptions.IntakeError`
at intake, an :class:`~attacks.exceptions.AuditError` during an audit), and the
web worker, Celery worker or CLI that asked lives on. Only plain data crosses:
the uploads' bytes go in, a report dict comes back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

import numpy as np

from attacks.audit import AuditConfig, Progress, Upload, audit_uploads, target_from_uploads
from attacks.exceptions import AttackError, AuditError, IntakeError, PolicyError
from attacks.intake import DEFAULT_MAX_BYTES
from attacks.policy import Policy
from safe_model.exceptions import ModelRefused
from safe_model.redact import exception_summary
from safe_model.sandbox import AUDIT_LIMITS, INTAKE_LIMITS, SandboxLimits, sandbox_call

#: Exceptions of ours that a child may raise: they carry user-safe sentences.
_RERAISED = (IntakeError, PolicyError, AttackError, AuditError, ModelRefused)

#: What the sandbox's zygote imports first for a call on a neural network (an upload
#: set with a declaration): each shadow is one call, and its child would otherwise
#: spend 1.2 s importing torch and 1.0 s more on an optimiser's first step (which
#: imports torch._dynamo and sympy); a shadow of the teaching MLP took 2.2 s, now
#: 1.1 s. Other calls, and the CLI on a scikit-learn model, do not pay for them.
TORCH_PRELOAD = ("torch", "torch.optim", "torch._dynamo")


def uploads_check(
    *,
    model: Upload,
    train: Upload,
    test: Upload,
    declaration: Upload | None = None,
    label: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    limits: SandboxLimits = INTAKE_LIMITS,
    policy: Policy | None = None,
) -> None:
    """Load the three uploads and trial-predict, in a sandbox.

    Parameters
    ----------
    model, train, test : Upload
        The submitted skops or ONNX model and its members and non-members.
    declaration : Upload, optional
        An ONNX model's declared architecture and training recipe (JSON,
        ``docs/nn-declaration.md``).
    label : str
        Name of the label column.
    max_bytes : int, default=200 MiB
        Largest accepted file, applied by every loader.
    limits : SandboxLimits, default=INTAKE_LIMITS
        What the sandbox process may use.
    policy : Policy, optional
        Its ``[neural_networks]`` caps bound a declared recipe (default policy's if None).

    Raises
    ------
    IntakeError
        If a file is refused, or the model crashed, hung or overran the sandbox.
    """
    try:
        sandbox_call(
            "attacks.sandboxed:_check_in_child",
            kwargs={
                "uploads": _wire_uploads(
                    model=model, train=train, test=test, declaration=declaration
                )
            }
            | {"label": label, "max_bytes": max_bytes, "policy": _policy_to_wire(policy)},
            limits=limits,
            preload=TORCH_PRELOAD if declaration is not None else (),
            reraise=_RERAISED,
        )
    except (AuditError, ModelRefused) as exc:
        raise IntakeError(str(exc)) from None


def uploads_audit(
    *,
    model: Upload,
    train: Upload,
    test: Upload,
    declaration: Upload | None = None,
    label: str,
    policy: Policy,
    config: AuditConfig,
    record: Upload | None = None,
    description: Upload | None = None,
    progress: Progress | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    limits: SandboxLimits = AUDIT_LIMITS,
) -> dict:
    """:func:`attacks.audit.audit_uploads`, run in a sandbox; returns the report.

    Raises
    ------
    AuditError
        If the audit was refused or failed, including a crash, hang or overrun of
        the sandbox: the sentence says which.
    """
    uploads = _wire_uploads(
        model=model,
        train=train,
        test=test,
        declaration=declaration,
        record=record,
        description=description,
    )
    kwargs = {
        "uploads": uploads,
        "label": label,
        "policy": dataclasses.asdict(policy),
        "config": dataclasses.asdict(config),
        "max_bytes": max_bytes,
    }
    return _audit_call("_audit_in_child", kwargs, limits, progress=progress)


def uploads_scan(
    *,
    model: Upload,
    train: Upload,
    test: Upload,
    declaration: Upload | None = None,
    label: str,
    policy: Policy,
    config: AuditConfig,
    max_bytes: int = DEFAULT_MAX_BYTES,
    limits: SandboxLimits = AUDIT_LIMITS,
    progress: Progress | None = None,
) -> dict:
    """The structural rules and the hyperparameter sweep alone, run in a sandbox
    (``progress`` hears the sweep's stages, as in :func:`uploads_audit`).

    The sweep takes ``config``'s seed and jobs; with no audit to compare against it
    scores the submitted setting itself, and ``n_sweep_shadow_models`` is its
    ``max_reference_models``.

    Returns
    -------
    dict
        ``{"rules": [...], "sweep": {...}}``, as in the report.

    Raises
    ------
    AuditError
        As :func:`uploads_audit`.
    """
    kwargs = {
        "uploads": _wire_uploads(model=model, train=train, test=test, declaration=declaration),
        "label": label,
        "policy": dataclasses.asdict(policy),
        "sweep": {
            "max_reference_models": config.n_sweep_shadow_models,
            "random_state": config.random_state,
        },
        "n_jobs": config.n_jobs,
        "max_bytes": max_bytes,
    }
    return _audit_call("_scan_in_child", kwargs, limits, progress=progress)


def uploads_shadow_train(
    *,
    model: Upload,
    train: Upload,
    test: Upload,
    declaration: Upload | None = None,
    label: str,
    index: int,
    base_seed: int,
    max_bytes: int = DEFAULT_MAX_BYTES,
    limits: SandboxLimits = AUDIT_LIMITS,
    policy: Policy | None = None,
) -> np.ndarray:
    """Shadow ``index`` of an audit (:func:`attacks.shadows.shadow_train`), trained in a sandbox.

    Its training mask follows from ``(base_seed, index)`` and the pool's size, so only
    its confidences come back, checked: one finite probability per audit record.

    Returns
    -------
    ndarray of float64, shape (n_records,)

    Raises
    ------
    AuditError
        As :func:`uploads_audit`, or if the sandbox sent back something else.
    """
    kwargs = {
        "uploads": _wire_uploads(model=model, train=train, test=test, declaration=declaration),
        "label": label,
        "index": index,
        "base_seed": base_seed,
        "max_bytes": max_bytes,
        "policy": _policy_to_wire(policy),
    }
    confidences = _audit_call("_shadow_in_child", kwargs, limits)
    return confidences_checked(confidences)


def confidences_checked(confidences: Any, n_records: int | None = None) -> np.ndarray:
    """One shadow's confidences as float64, or AuditError if they are not probabilities
    (of ``n_records`` records, when given)."""
    ok = (
        isinstance(confidences, np.ndarray)
        and confidences.ndim == 1
        and confidences.dtype.kind == "f"
        and (n_records is None or len(confidences) == n_records)
    )
    if ok:
        confidences = confidences.astype(np.float64)
        ok = bool(np.isfinite(confidences).all() and (confidences >= 0).all())
        ok = ok and bool((confidences <= 1).all())
    if not ok:
        raise AuditError("A shadow model's confidences are not one probability per record.")
    return confidences


def uploads_audit_round(
    *,
    model: Upload,
    train: Upload,
    test: Upload,
    declaration: Upload | None = None,
    label: str,
    policy: Policy,
    config: AuditConfig,
    shadows: list[np.ndarray | str],
    history: list[dict],
    progress: Progress | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    limits: SandboxLimits = AUDIT_LIMITS,
) -> dict:
    """One round of an audit whose shadows were trained elsewhere, run in a sandbox.

    The pool attacks are scored on ``shadows`` (shadow ``k``'s confidences, or the
    sentence saying why it failed) and :func:`attacks.rounds.rounds_decide` is asked
    whether to stop, given the earlier rounds' ``history``. If it stops (or a shadow
    failed: the pool attacks then report that error), the whole audit is run on that
    pool (:func:`attacks.audit.audit_uploads` with ``rounds``).

    Returns
    -------
    dict
        ``{"report": {...}}`` when the audit is done, else ``{"round": {...}}``: this
        round's entry for ``history``.

    Raises
    ------
    AuditError
        As :func:`uploads_audit`.
    """
    kwargs = {
        "uploads": _wire_uploads(model=model, train=train, test=test, declaration=declaration),
        "label": label,
        "policy": dataclasses.asdict(policy),
        "config": dataclasses.asdict(config),
        "shadows": shadows,
        "history": history,
        "max_bytes": max_bytes,
    }
    return _audit_call("_round_in_child", kwargs, limits, progress=progress)


def uploads_record_query(
    *,
    model: Upload,
    train: Upload,
    test: Upload,
    declaration: Upload | None = None,
    label: str,
    record: Upload,
    policy: Policy,
    config: AuditConfig,
    n_shadow_models: int,
    shadows: list[np.ndarray] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    limits: SandboxLimits = AUDIT_LIMITS,
) -> dict:
    """Whether ``record`` was in the training set, asked of an audit, in a sandbox.

    :func:`attacks.record_query.record_query_uploads`: the audit's shadow pool is made
    again from its seed (``config``, ``n_shadow_models``), reusing ``shadows`` (the
    audit's stored confidences) for a record that is one of the audit rows.

    Returns
    -------
    dict
        The answer, as :func:`attacks.record_query.record_query`.

    Raises
    ------
    AuditError
        As :func:`uploads_audit`; an IntakeError if the record is refused.
    """
    kwargs = {
        "uploads": _wire_uploads(
            model=model, train=train, test=test, declaration=declaration, record=record
        ),
        "label": label,
        "policy": dataclasses.asdict(policy),
        "config": dataclasses.asdict(config),
        "n_shadow_models": n_shadow_models,
        "shadows": shadows,
        "max_bytes": max_bytes,
    }
    return _audit_call("_record_query_in_child", kwargs, limits)


def _audit_call(function: str, kwargs: dict, limits: SandboxLimits, progress=None):
    """``function`` of this module run in a sandbox; a crash, hang or overrun there is an
    AuditError with the sandbox's sentence."""
    try:
        return sandbox_call(
            f"attacks.sandboxed:{function}",
            kwargs=kwargs,
            limits=limits,
            on_event=_progress_relay(progress),
            reraise=_RERAISED,
            preload=TORCH_PRELOAD if "declaration" in kwargs["uploads"] else (),
        )
    except ModelRefused as exc:
        raise AuditError(str(exc)) from None


def _policy_to_wire(policy: Policy | None) -> dict | None:
    return None if policy is None else dataclasses.asdict(policy)


def _wire_uploads(**uploads: Upload | None) -> dict[str, list]:
    return {role: [u.name, u.data] for role, u in uploads.items() if u is not None}


def _progress_relay(progress: Progress | None):
    """Events come from the child, so they are checked before they are believed."""
    if progress is None:
        return None

    def relay(event: dict) -> None:
        stage, done = event.get("stage"), event.get("done")
        if not isinstance(stage, str) or not isinstance(done, int | float):
            return
        if isinstance(done, bool) or not math.isfinite(done) or not stage.isprintable():
            return
        progress(stage[:100], min(max(float(done), 0.0), 1.0))

    return relay


# ------------------------------------------------------------ inside the sandbox


@contextlib.contextmanager
def _data_errors():
    """An unexpected error is the model failing on the data: one sentence, values left out.

    MemoryError passes as it is: the sandbox reports it as its memory limit.
    """
    try:
        yield
    except (AuditError, ModelRefused, MemoryError):
        raise
    except Exception as exc:
        raise AuditError(f"The model failed on the data: {exception_summary(exc)}.") from None


def _check_in_child(*, uploads: dict, label: str, max_bytes: int, policy: dict | None) -> None:
    with _data_errors():
        target_from_uploads(
            **_uploads_from_wire(uploads),
            label=label,
            max_bytes=max_bytes,
            policy=_policy_from_wire(policy),
        )


def _audit_in_child(
    *, uploads: dict, label: str, policy: dict, config: dict, max_bytes: int
) -> dict:
    from safe_model.sandbox import sandbox_emit

    with _data_errors():
        return audit_uploads(
            **_uploads_from_wire(uploads),
            label=label,
            policy=Policy(**policy),
            config=_config_from_wire(config),
            progress=lambda stage, done: sandbox_emit({"stage": stage, "done": done}),
            max_bytes=max_bytes,
        )


def _shadow_in_child(
    *, uploads: dict, label: str, index: int, base_seed: int, max_bytes: int, policy: dict | None
) -> np.ndarray:
    from attacks.shadows import shadow_train

    with _data_errors():
        target = target_from_uploads(
            **_uploads_from_wire(uploads),
            label=label,
            max_bytes=max_bytes,
            policy=_policy_from_wire(policy),
        )
        return shadow_train(target, index=index, base_seed=base_seed).confidences


def _round_in_child(
    *,
    uploads: dict,
    label: str,
    policy: dict,
    config: dict,
    shadows: list,
    history: list,
    max_bytes: int,
) -> dict:
    from safe_model.sandbox import sandbox_emit

    policy, config = Policy(**policy), _config_from_wire(config)
    uploads = _uploads_from_wire(uploads)
    with _data_errors():
        target = target_from_uploads(**uploads, label=label, max_bytes=max_bytes, policy=policy)
        rounds, done = _pool_rounds_of(target, config, policy, shadows, history)
        if not done:
            return {"round": dataclasses.asdict(rounds.history[-1])}
        report = audit_uploads(
            **uploads,
            label=label,
            policy=policy,
            config=config,
            progress=lambda stage, done: sandbox_emit({"stage": stage, "done": done}),
            max_bytes=max_bytes,
            rounds=rounds,
            target=target,
        )
    return {"report": report}


def _pool_rounds_of(target, config, policy, shadows, history):
    """(PoolRounds so far, whether to stop): a failed shadow stops the rounds, and each
    pool attack then reports its sentence."""
    from attacks.audit import round_measure, shadow_base_seed, shadow_rule
    from attacks.rounds import PoolRounds, Round, RoundResult, round_counts, rounds_decide
    from attacks.shadows import ShadowOutput, shadow_mask, shadow_pool_from_outputs

    rule = shadow_rule(config, policy)
    past = [Round(r["n_models"], [RoundResult(**x) for x in r["results"]]) for r in history]
    failed = next((s for s in shadows if isinstance(s, str)), None)
    if failed is not None:
        return PoolRounds(pool=None, history=past, reason="", error=AuditError(failed)), True
    n, base = target.n_members + target.n_non_members, shadow_base_seed(config)
    pool = shadow_pool_from_outputs(
        ShadowOutput(k, shadow_mask(k, n, base), confidences_checked(c, n), np.empty(0))
        for k, c in enumerate(shadows)
    )
    try:
        rounds = past + [Round(len(shadows), round_measure(target, config, pool))]
    except Exception as exc:  # noqa: BLE001 - as in-process: every pool attack reports it
        return PoolRounds(pool=None, history=past, reason="", error=exc), True
    stop, reason = rounds_decide(rounds, rule, n_non_members=target.n_non_members)
    done = stop or len(shadows) >= round_counts(rule)[-1]
    return PoolRounds(pool=pool, history=rounds, reason=reason), done


def _record_query_in_child(
    *,
    uploads: dict,
    label: str,
    policy: dict,
    config: dict,
    n_shadow_models: int,
    shadows: list | None,
    max_bytes: int,
) -> dict:
    from attacks.record_query import record_query_uploads
    from attacks.report import json_safe

    with _data_errors():
        answer = record_query_uploads(
            **_uploads_from_wire(uploads),
            label=label,
            policy=Policy(**policy),
            config=_config_from_wire(config),
            n_shadow_models=n_shadow_models,
            shadows=None if shadows is None else [confidences_checked(c) for c in shadows],
            max_bytes=max_bytes,
        )
    return json_safe(answer)


def _scan_in_child(
    *, uploads: dict, label: str, policy: dict, sweep: dict, n_jobs: int | None, max_bytes: int
) -> dict:
    from attacks.audit import sweep_dict
    from attacks.report import json_safe
    from attacks.scan import HyperparameterScan, check_rules
    from safe_model.sandbox import sandbox_emit

    with _data_errors():
        target = target_from_uploads(
            **_uploads_from_wire(uploads), label=label, max_bytes=max_bytes, policy=Policy(**policy)
        )
        rules = check_rules(target, thresholds=policy["sections"]["rules"])
        scan = HyperparameterScan(**sweep, n_jobs=n_jobs).fit(
            target, progress=lambda stage, done: sandbox_emit({"stage": stage, "done": done})
        )
    return json_safe({"rules": [dataclasses.asdict(r) for r in rules], "sweep": sweep_dict(scan)})


def _policy_from_wire(policy: dict | None) -> Policy | None:
    return None if policy is None else Policy(**policy)


def _uploads_from_wire(uploads: dict) -> dict[str, Upload]:
    return {role: Upload(name=name, data=data) for role, (name, data) in uploads.items()}


def _config_from_wire(config: dict[str, Any]) -> AuditConfig:
    tuples = {"attacks": tuple(config["attacks"]), "inputs": tuple(config["inputs"])}
    return AuditConfig(**(config | tuples))
