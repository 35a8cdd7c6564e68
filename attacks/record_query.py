"""Was this record in the training set? One record asked about after its audit.

An audit keeps no shadow model, only each shadow's confidences on the audit pool
(and those only when its shadows were trained as tasks). Shadow ``k``'s training
half and seed depend only on the audit seed and ``k`` (:mod:`attacks.shadows`), so
the audit's pool can be made again exactly:

- a record that *is* one of the audit's rows is answered from the stored
  confidences when every shadow's are given, without training anything;
- any other record needs each shadow's confidence on it, so the shadows are trained
  again with the audit's seeds and score it as an extra row (no shadow trains on it).

Either way the attacks are then fitted as the audit fitted them (same seeds), so
the answer is the ``record`` part ``tre-audit audit --record`` would have given.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import PurePath

import numpy as np

from attacks.audit import (
    ATTACKS,
    AuditConfig,
    Record,
    Upload,
    _pool_row,
    _record,
    _record_part,
    _seed,
    _sentence,
    shadow_base_seed,
)
from attacks.exceptions import AuditError, IntakeError
from attacks.intake import MAX_RECORD_BYTES, coerce_labels, load_record
from attacks.policy import Policy
from attacks.shadows import ShadowOutput, shadow_mask, shadow_pool_fit, shadow_pool_from_outputs
from attacks.target import Target
from attacks.verdict import record_reasons
from safe_model.refusal import checked_bytes, quote

#: What a membership answer can be, for people: see :func:`record_answer`.
MEMBER, NOT_MEMBER, UNKNOWN = "member", "not_member", "unknown"


def record_object(upload: Upload) -> dict:
    """The one record of an uploaded CSV (header and one row) or JSON file, as an object.

    Parameters
    ----------
    upload : Upload
        Its name's suffix (``.csv`` or ``.json``) says how to read it. A JSON file
        holds one object mapping feature names to values, or a list of one.

    Returns
    -------
    dict
        Feature name (and perhaps the label) to value; CSV cells that are numbers
        become numbers.

    Raises
    ------
    IntakeError
        If the file is empty, too large, of another kind, or holds other than one row.
    """
    data = checked_bytes(upload.data, max_bytes=MAX_RECORD_BYTES, what="record", error=IntakeError)
    suffix = PurePath(upload.name).suffix.lower()
    if suffix == ".csv":
        return _csv_record(data)
    if suffix == ".json":
        return _json_record(data)
    raise IntakeError(
        f"A record must be a CSV (.csv) or JSON (.json) file, not {quote(suffix or 'none')}."
    )


def _csv_record(data: bytes) -> dict:
    try:
        rows = [row for row in csv.reader(io.StringIO(data.decode("utf-8-sig"))) if row]
    except UnicodeDecodeError:
        raise IntakeError("The record is not UTF-8 text.") from None
    except csv.Error:
        raise IntakeError("The record's CSV could not be parsed.") from None
    if len(rows) != 2:
        raise IntakeError(
            f"The record must be one CSV header and one row, not {max(len(rows) - 1, 0)} rows."
        )
    header, values = rows
    if len(values) != len(header) or len(set(header)) != len(header):
        raise IntakeError("The record's CSV row must have one value for each distinct column.")
    return {name: _csv_value(value) for name, value in zip(header, values)}


def _csv_value(text: str):
    """A CSV cell as a number when it reads as one, None when empty, else the text."""
    if not text.strip():
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _json_record(data: bytes) -> dict:
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise IntakeError("The record is not UTF-8 text.") from None
    except (ValueError, RecursionError):
        raise IntakeError("The record is not valid JSON.") from None
    if isinstance(value, list):
        if len(value) != 1:
            raise IntakeError(f"The record must be one row, not a list of {len(value)}.")
        value = value[0]
    if not isinstance(value, dict):
        raise IntakeError(
            "The record must be one JSON object mapping each feature name to its value."
        )
    return value


def record_check(
    record: dict, *, feature_names: list[str], label: str, classes: list, allow_text: bool
) -> None:
    """Refuse a record the audited model cannot take (IntakeError, one sentence).

    The same checks as the CLI's ``--record`` (every feature, no unknown key, finite
    numbers, a label among ``classes``), made without loading the model.
    """
    _, y = load_record(record, feature_names=feature_names, label=label, allow_text=allow_text)
    if y is not None:
        coerce_labels(y, classes=np.asarray(classes), where="record")


def record_query(
    target: Target,
    *,
    config: AuditConfig,
    policy: Policy,
    record: Record,
    n_shadow_models: int,
    shadows: list[np.ndarray] | None = None,
) -> dict:
    """Answer whether ``record`` was a member, with the audit's attacks and shadow pool.

    Parameters
    ----------
    target : Target
        The audited model and data.
    config : AuditConfig
        The audit's seed, attacks and jobs.
    policy : Policy
        The policy the audit was judged by (its ``record`` thresholds).
    record : Record
        The row asked about, validated against ``target``.
    n_shadow_models : int
        The audit's pool size.
    shadows : list of ndarray, optional
        The audit's stored confidences of shadows ``0..n_shadow_models - 1``; used for
        a record that is one of the audit rows, instead of training the shadows again.

    Returns
    -------
    dict
        The ``record`` part of a report, and ``answer`` (:func:`record_answer`),
        ``reasons``, ``hash``, ``titles``, ``errors``, ``shadows`` ("stored" or
        "trained again") and ``seconds``.
    """
    started = time.perf_counter()
    y = record.y if record.y is not None else np.asarray(target.model.predict(record.X))
    row = _pool_row(target, record.X, y)
    rec_X, rec_y = (None, None) if row is not None else (record.X, y)
    reuse = row is not None and shadows is not None and len(shadows) == n_shadow_models
    if reuse:
        pool = _stored_pool(target, config, shadows)
    else:
        pool = _trained_pool(target, config, n_shadow_models, rec_X, rec_y)
    fitted, errors = _fit_attacks(target, config, pool, rec_X, rec_y)
    part = _record_part(target, record, rec_y, fitted) if fitted else None
    if part is None:
        return {"answer": UNKNOWN, "errors": errors, "seconds": time.perf_counter() - started}
    X, _, _ = target.pool()
    titles = {name: ATTACKS[name][0].format(n=n_shadow_models) for name in fitted}
    return part | {
        "answer": record_answer(part, policy),
        "reasons": _reasons(part, policy, titles),
        "hash": target.record_hash(X, row) if row is not None else target.record_hash(record.X, 0),
        "titles": titles,
        "errors": errors,
        "n_shadow_models": n_shadow_models,
        "shadows": "stored" if reuse else "trained again",
        "seconds": time.perf_counter() - started,
    }


def _reasons(part: dict, policy: Policy, titles: dict[str, str]) -> list[str]:
    """Why the policy flags the record, naming the attack for people."""
    return [
        f"{titles[r.evidence['attack']]} judges it a member with probability "
        f"{r.evidence['membership_probability']:.1%}, while scoring only "
        f"{r.evidence['false_positive_rate']:.1%} of non-members as high."
        for r in record_reasons(part, policy)
    ]


def _trained_pool(target, config, n_shadow_models, rec_X, rec_y):
    """The audit's shadows trained again (same seeds), scoring the record as an extra row;
    None when no attack of the audit uses the pool."""
    if not any(ATTACKS[name][2] for name in config.attacks):
        return None
    return shadow_pool_fit(
        target,
        n_shadow_models=n_shadow_models,
        random_state=shadow_base_seed(config),
        n_jobs=config.n_jobs,
        X_extra=rec_X,
        y_extra=rec_y,
    )


def _stored_pool(target, config, shadows):
    """The audit's pool from its stored confidences (AuditError if they do not fit it)."""
    n, base = target.n_members + target.n_non_members, shadow_base_seed(config)
    if any(len(c) != n for c in shadows):
        raise AuditError("The audit's stored shadow confidences do not match its data.")
    return shadow_pool_from_outputs(
        ShadowOutput(k, shadow_mask(k, n, base), np.asarray(c, dtype=float), np.empty(0))
        for k, c in enumerate(shadows)
    )


def _fit_attacks(target, config, pool, rec_X, rec_y):
    """Each of the audit's attacks, seeded as in the audit; a failure is kept as a sentence."""
    fitted, errors = {}, {}
    for name in config.attacks:
        _, factory, uses_pool = ATTACKS[name]
        try:
            attack = factory(config, _seed(config.random_state, name))
            fitted[name] = attack.fit(
                target, pool=pool if uses_pool else None, X_extra=rec_X, y_extra=rec_y
            )
        except Exception as exc:  # noqa: BLE001 - isolation boundary, as in the audit
            errors[name] = _sentence(exc)
    return fitted, errors


def record_answer(part: dict, policy: Policy) -> str:
    """MEMBER, NOT_MEMBER or UNKNOWN: the strongest attack's call on the record.

    MEMBER when the policy flags the record (:func:`attacks.verdict.record_reasons`);
    NOT_MEMBER when its membership probability is as far below one half as the
    policy's medium level is above it (it scores like the non-members); else UNKNOWN.
    An attack cannot prove that a record was left out: NOT_MEMBER only says the
    model shows no sign of it.
    """
    if record_reasons(part, policy):
        return MEMBER
    if part["membership_probability"] <= 1 - policy["record", "probability_medium"]:
        return NOT_MEMBER
    return UNKNOWN


def record_query_uploads(
    *,
    model: Upload,
    train: Upload,
    test: Upload,
    label: str,
    record: Upload,
    config: AuditConfig,
    declaration: Upload | None = None,
    policy: Policy,
    n_shadow_models: int,
    shadows: list[np.ndarray] | None = None,
    max_bytes: int,
) -> dict:
    """:func:`record_query` on the audit's uploads and an uploaded record (CSV or JSON)."""
    from attacks.audit import target_from_uploads

    target = target_from_uploads(
        model=model,
        train=train,
        test=test,
        label=label,
        max_bytes=max_bytes,
        declaration=declaration,
        policy=policy,
    )
    as_json = Upload(name="record.json", data=json.dumps(record_object(record)).encode())
    return record_query(
        target,
        config=config,
        policy=policy,
        record=_record(target, as_json, label),
        n_shadow_models=n_shadow_models,
        shadows=shadows,
    )
