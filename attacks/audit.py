"""One full audit: rules, attacks, sweep, record query and verdict, as report.json data.

``audit_run`` is what the CLI and the service's Celery task both call. Every
attack is isolated: one that fails is reported with its error, and the others
still run. Seeds are derived from the audit seed and the attack's *name*, so
the same seed gives the same report whichever attacks are enabled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from attacks import report
from attacks.checks import MAX_SEED, audit_numbers_check  # noqa: F401 - MAX_SEED: public here too
from attacks.exceptions import AttackError, AuditError, IntakeError
from attacks.lira import LiRAAttack
from attacks.policy import Policy, round_rule
from attacks.reading import attack_name
from attacks.rmia import RMIAAttack
from attacks.rounds import PoolRounds, RoundResult, RoundRule, pool_grow
from attacks.scan import HyperparameterScan, SweepReference, check_rules
from attacks.shadow import ShadowModelAttack
from attacks.shadows import ShadowPool, shadow_pool_fit
from attacks.target import Target
from attacks.verdict import verdict_decide
from attacks.worst_case import WorstCaseAttack
from safe_model.loader import DEFAULT_MAX_BYTES

#: name -> (title, factory(config, seed), uses the shared shadow pool)
ATTACKS: dict[str, tuple[str, Callable, bool]] = {
    "shadow": (
        "Shadow-model attack",
        lambda c, s: ShadowModelAttack(data_description=c.data_description, random_state=s),
        False,
    ),
    "lira": (
        "LiRA (online, {n} shadow models)",
        lambda c, s: LiRAAttack(online=True, random_state=s),
        True,
    ),
    "lira_offline": (
        "LiRA (offline, {n} shadow models)",
        lambda c, s: LiRAAttack(online=False, random_state=s),
        True,
    ),
    "rmia": (
        "RMIA ({n} reference models)",
        lambda c, s: RMIAAttack(online=True, random_state=s),
        True,
    ),
    "worst_case": (
        "Supervised output attack",
        lambda c, s: WorstCaseAttack(random_state=s, n_jobs=c.n_jobs),
        False,
    ),
}
DEFAULT_ATTACKS = tuple(ATTACKS)

#: A progress callback gets a stage name and the fraction of the audit done.
Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class AuditConfig:
    """What to run. ``n_shadow_models`` None takes the policy's count."""

    n_shadow_models: int | None = None
    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    random_state: int = 0
    n_jobs: int | None = None
    label: str = "label"
    data_description: dict | None = None
    include_raw_values: bool = False
    sweep: bool = True
    n_sweep_shadow_models: int = 4
    inputs: tuple[dict, ...] = field(default=())

    def __post_init__(self):
        """Refuse a number no audit can run with (AuditError), before anything runs."""
        audit_numbers_check(
            random_state=self.random_state,
            n_shadow_models=self.n_shadow_models,
            n_jobs=self.n_jobs,
            n_sweep_shadow_models=self.n_sweep_shadow_models,
        )


@dataclass(frozen=True)
class Record:
    """A queried record: one row of features and its label, if the attacker knows it."""

    X: pd.DataFrame
    y: np.ndarray | None = None


def audit_run(
    target: Target,
    *,
    config: AuditConfig,
    policy: Policy,
    record: Record | None = None,
    progress: Progress | None = None,
    rounds: PoolRounds | None = None,
) -> dict:
    """Run the whole audit and return the report as a dict (docs/report-schema.md).

    ``rounds`` is a shadow pool grown elsewhere (the service trains shadows as
    Celery tasks); without it the pool is grown here, in rounds, until the
    policy's rule stops it.
    """
    started = time.perf_counter()
    progress = progress or (lambda stage, done: None)
    unknown = set(config.attacks) - set(ATTACKS)
    if unknown:
        raise AuditError(f"Unknown attack(s): {', '.join(sorted(unknown))}.")
    rec_X, rec_y = _record_rows(target, record)
    progress("rules", 0.0)
    rules = [
        dataclasses.asdict(f) for f in check_rules(target, thresholds=policy.sections["rules"])
    ]
    top_k = min(policy["audit", "top_k"], target.n_members)
    shadow_seconds = None
    if rounds is None and any(ATTACKS[name][2] for name in config.attacks):
        shadows_started = time.perf_counter()
        rounds = _pool_rounds(target, config, policy, rec_X, rec_y, progress)
        shadow_seconds = time.perf_counter() - shadows_started
    fitted, attacks, seconds = _run_attacks(target, config, rounds, top_k, rec_X, rec_y, progress)
    sweep = None
    if config.sweep:
        sweep = _run_sweep(target, config, attacks, rounds, shadow_rule(config, policy), progress)
    record_part = _record_part(target, record, rec_y, fitted) if record is not None else None
    verdict = verdict_decide(attacks=attacks, rules=rules, record=record_part, policy=policy)
    progress("report", 1.0)
    return _assemble(
        target,
        config,
        policy,
        attacks,
        rules,
        sweep,
        record_part,
        verdict,
        fitted,
        rounds,
        report.run_part(
            seconds=time.perf_counter() - started,
            attack_seconds=seconds,
            n_jobs=config.n_jobs,
            shadow_seconds=shadow_seconds,
        ),
    )


def shadow_rule(config: AuditConfig, policy: Policy) -> RoundRule:
    """Shadows to train: a fixed count if the caller asked for one, else the policy's rounds."""
    if config.n_shadow_models is not None:
        return RoundRule.fixed(config.n_shadow_models)
    return round_rule(policy)


def shadow_base_seed(config: AuditConfig) -> int:
    """The seed every shadow of this audit derives its own from (see attacks.shadows)."""
    return _seed(config.random_state, "pool")


def round_measure(target: Target, config: AuditConfig, pool: ShadowPool) -> list[RoundResult]:
    """Each of the audit's pool attacks scored on ``pool``."""
    results = []
    for name in config.attacks:
        _, factory, uses_pool = ATTACKS[name]
        if not uses_pool:
            continue
        try:
            attack = factory(config, _seed(config.random_state, name)).fit(target, pool=pool)
        except AttackError:  # too few shadows for it yet: the others decide this round
            continue
        results.append(RoundResult.of(pool.n_shadow_models, name, attack))
    return results


def _pool_rounds(target, config, policy, rec_X, rec_y, progress) -> PoolRounds:
    """Grow the shared pool in rounds here; a failure is kept for every attack that needs it."""
    rule = shadow_rule(config, policy)

    def train(start, n):
        return shadow_pool_fit(
            target,
            n_shadow_models=n,
            start=start,
            n_jobs=config.n_jobs,
            X_extra=rec_X,
            y_extra=rec_y,
            random_state=shadow_base_seed(config),
        )

    def done(n_done, n_max):
        progress(f"shadow models: {n_done} trained", 0.05 + 0.45 * n_done / n_max)

    progress(f"shadow models: training up to {rule.max_models}", 0.05)
    try:
        return pool_grow(
            train=train,
            measure=lambda pool: round_measure(target, config, pool),
            rule=rule,
            n_non_members=target.n_non_members,
            progress=done,
        )
    except Exception as exc:  # noqa: BLE001 - re-raised to every attack that needs the pool
        return PoolRounds(pool=None, history=[], reason="", error=exc)


def _run_attacks(target, config, rounds, top_k, rec_X, rec_y, progress):
    """Run each attack in isolation: a failure is reported and the others go on."""
    fitted, results, seconds = {}, [], {}
    n_shadows = rounds.n_models if rounds is not None else 0
    for i, name in enumerate(config.attacks):
        title, factory, uses_pool = ATTACKS[name]
        # a pool attack without a pool (no recipe, or training failed) is not "0 models"
        title = title.format(n=n_shadows) if n_shadows or not uses_pool else attack_name(name)
        progress(name, 0.5 + 0.2 * i / len(config.attacks))
        started = time.perf_counter()
        try:
            attack = factory(config, _seed(config.random_state, name))
            attack.fit(
                target, pool=rounds.get() if uses_pool else None, X_extra=rec_X, y_extra=rec_y
            )
        except Exception as exc:  # noqa: BLE001 - isolation boundary: reported, never swallowed
            results.append(report.failed_attack_dict(name, title, _sentence(exc)))
            continue
        finally:
            seconds[name] = time.perf_counter() - started
        fitted[name] = attack
        exposed = report.exposed_records(
            target, attack, k=top_k, raw_values=config.include_raw_values
        )
        results.append(
            report.attack_dict(
                name,
                title,
                attack,
                details=_details(attack),
                exposed=exposed,
            )
        )
    return fitted, results, seconds


def _details(attack) -> dict:
    names = (
        "shadow_member_confidence_",
        "shadow_non_member_confidence_",
        "n_shadow_models_",
        "n_reference_models_",
        "variance_",
        "baseline_aucs_",
        "p_value_",
    )
    return {n.rstrip("_"): getattr(attack, n) for n in names if hasattr(attack, n)}


def _run_sweep(target, config, attacks, rounds, rule, progress) -> dict:
    """The sweep, held to the audit's strongest attack; progress between 0.7 and 1.0.

    It draws its reference models with the audit's shadow seed, so the audited
    setting's are the audit's own shadows, not trained again.
    """
    pool = None if rounds is None or rounds.error is not None else rounds.pool
    progress("sweep", 0.7)
    scan = HyperparameterScan(
        max_reference_models=config.n_sweep_shadow_models,
        n_jobs=config.n_jobs,
        random_state=_seed(config.random_state, "sweep"),
    ).fit(
        target,
        reference=_sweep_reference(attacks),
        progress=lambda stage, done: progress(stage, 0.7 + 0.3 * done),
        pool=pool,
        pool_seed=shadow_base_seed(config),
        rule=rule,
    )
    return sweep_dict(scan)


def _sweep_reference(attacks: list[dict]) -> SweepReference | None:
    """The strongest attack's result on the audited model, in the sweep's terms.

    Its count is the most reference models any attack of the audit used, so a
    change never rests on fewer even when the strongest attack trains none.
    """
    strongest = _strongest(attacks)
    if strongest is None:
        return None
    return SweepReference(
        attack=strongest["title"],
        auc=strongest["auc"],
        auc_ci=tuple(strongest["auc_ci"]),
        tpr_at_1pct_fpr=strongest["tpr_at_fpr"].get("0.01"),
        n_reference_models=max(_n_reference_models(a) for a in attacks if not a["error"]),
    )


def _n_reference_models(attack: dict) -> int:
    details = attack["details"]
    return details.get("n_reference_models") or details.get("n_shadow_models") or 0


def _strongest(attacks: list[dict]) -> dict | None:
    """The attack with the highest AUC among those that ran (ties by name)."""
    ran = [a for a in attacks if not a["error"]]
    return max(ran, key=lambda a: (a["auc"], a["name"]), default=None)


def sweep_dict(scan: HyperparameterScan) -> dict:
    """A fitted scan as the report's ``sweep`` object."""

    def plain(obj):
        return None if obj is None else report.json_safe(dataclasses.asdict(obj))

    counts = scan.rung_counts_
    span = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return {
        "attack": (
            f"RMIA, {span} reference models per point, successive halving; "
            f"a recommendation confirmed with up to {scan.n_confirmation_models_}"
        ),
        "points": [plain(p) for p in scan.points_],
        "original": plain(scan.original_),
        "recommendation": plain(scan.recommendation_),
        "skipped": report.json_safe(scan.skipped_),
        "n_reference_fits": scan.n_reference_fits_,
        "accuracy_tolerance": scan.accuracy_tolerance,
        "note": scan.note_,
    }


def _record_rows(target, record):
    """The queried record as extra rows, unless it is already one of the audit rows."""
    if record is None:
        return None, None
    y = record.y if record.y is not None else np.asarray(target.model.predict(record.X))
    if _pool_row(target, record.X, y) is not None:
        return None, None
    return record.X, y


def _pool_row(target, X_row, y_row):
    X, y, membership = target.pool()
    same = (X.to_numpy() == X_row[X.columns].to_numpy()).all(axis=1) & (y == y_row[0])
    hits = np.flatnonzero(same)
    return None if len(hits) == 0 else int(hits[0])


def _record_part(target, record, rec_y, fitted) -> dict:
    y = record.y if record.y is not None else np.asarray(target.model.predict(record.X))
    row = _pool_row(target, record.X, y)
    per_attack = [_record_attack(name, a, row) for name, a in fitted.items()]
    if not per_attack:
        return None
    strongest = max(fitted, key=lambda n: (fitted[n].metrics_.auc, n))
    n_m = target.n_members
    return {
        "membership_probability": next(
            a["membership_probability"] for a in per_attack if a["name"] == strongest
        ),
        "attack": strongest,
        "label_source": "given" if record.y is not None else "predicted",
        "pool_row": None
        if row is None
        else {"set": "train" if row < n_m else "test", "index": row if row < n_m else row - n_m},
        "attacks": per_attack,
    }


def _record_attack(name, attack, row) -> dict:
    non = attack.membership_ == 0
    if row is None:
        p = float(attack.extra_probabilities_[0])
        fpr = float((attack.probabilities_[non] >= p).mean())
    else:
        p = float(attack.probabilities_[row])
        others = non.copy()
        others[row] = False
        fpr = float((attack.scores_[others] >= attack.scores_[row]).mean())
    return {"name": name, "membership_probability": p, "false_positive_rate": fpr}


def _assemble(
    target, config, policy, attacks, rules, sweep, record_part, verdict, fitted, rounds, run
) -> dict:
    strongest = _strongest(attacks)
    out = {
        **report.header(),
        "verdict": {
            "risk": verdict.risk,
            "summary": verdict.summary,
            "reasons": [report.json_safe(dataclasses.asdict(r)) for r in verdict.reasons],
        },
        "model": report.model_summary(target),
        "data": report.data_summary(target, config.label),
        "inputs": list(config.inputs),
        "attacks": attacks,
        "rules": report.json_safe(rules),
        "sweep": sweep,
        "most_exposed": strongest["most_exposed"] if strongest else [],
        "policy": policy.to_dict(),
        "reproducibility": report.reproducibility(
            seed=config.random_state,
            n_shadow_models=rounds.n_models if rounds is not None else 0,
            attacks=config.attacks,
        ),
        "raw_values_included": config.include_raw_values,
        "shadow_rounds": None if rounds is None else rounds.summary(shadow_rule(config, policy)),
        "run": run,
    }
    if record_part is not None:
        out["record"] = record_part
    return out


def _seed(random_state: int, name: str) -> int:
    """A seed for one part of the audit, fixed by the audit seed and the part's name."""
    return int(
        np.random.SeedSequence([int(random_state), zlib.crc32(name.encode())]).generate_state(1)[0]
        % (2**31 - 1)
    )


def _sentence(exc: Exception) -> str:
    """One sentence for the report: our own errors as they are, others by type."""
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    if not isinstance(exc, AuditError):
        text = f"it failed with {type(exc).__name__}" + (f": {text}" if text else "")
    return text if text.endswith(".") else text + "."


@dataclass(frozen=True)
class Upload:
    """A submitted file: its name (for its type) and its bytes."""

    name: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def describe(self, role: str) -> dict:
        return {"role": role, "name": self.name, "sha256": self.sha256, "bytes": len(self.data)}


def target_from_uploads(
    *,
    model: Upload,
    train: Upload,
    test: Upload,
    label: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    declaration: Upload | None = None,
    policy: Policy | None = None,
) -> Target:
    """Validate the submitted files and build the audit target (IntakeError if not).

    ``max_bytes`` is the caller's upload limit, applied to every file. An ONNX
    model may come with its ``declaration`` (``docs/nn-declaration.md``): it says
    how image data become inputs and what the output holds, is checked against the
    file's weights, and its recipe trains the shadow models, within ``policy``'s
    ``[neural_networks]`` caps (the default policy's if None). The tables are read
    before the model: an ONNX model's classes are the training labels.
    """
    from attacks import intake

    declared = None
    if declaration is not None:
        from attacks.nn.declared import declaration_read

        declared = declaration_read(declaration.data, policy=policy)
    preprocessing = declared.preprocessing if declared else None
    train_table, test_table = (
        intake.load_table(u.data, filename=u.name, max_bytes=max_bytes, preprocessing=preprocessing)
        for u in (train, test)
    )
    estimator = intake.load_model(
        model.data,
        filename=model.name,
        max_bytes=max_bytes,
        labels=intake.label_column(train_table, label=label),  # they name an ONNX model's classes
        output=declared.output if declared else "probabilities",
    )
    if declared is not None:
        from attacks.nn.declared import declared_model

        estimator = declared_model(estimator, declared)
    return intake.build_target(
        estimator, train_table, test_table, label=label, record_key=bytes.fromhex(train.sha256)
    )


def audit_uploads(
    *,
    model: Upload,
    train: Upload,
    test: Upload,
    label: str,
    policy: Policy,
    config: AuditConfig,
    record: Upload | None = None,
    description: Upload | None = None,
    progress: Progress | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    rounds: PoolRounds | None = None,
    target: Target | None = None,
    declaration: Upload | None = None,
) -> dict:
    """Audit submitted files end to end: the one entry point of the CLI and the service.

    ``max_bytes`` is the caller's upload limit, passed to every loader; ``rounds`` as
    in :func:`audit_run`. ``target`` is the one these uploads make
    (:func:`target_from_uploads`) when the caller has built it already: a model is
    not loaded twice.
    """
    if target is None:
        target = target_from_uploads(
            model=model,
            train=train,
            test=test,
            label=label,
            max_bytes=max_bytes,
            declaration=declaration,
            policy=policy,
        )
    inputs = [
        u.describe(role)
        for role, u in (
            ("model", model),
            ("declaration", declaration),
            ("train", train),
            ("test", test),
            ("record", record),
            ("description", description),
        )
        if u is not None
    ]
    row = None if record is None else _record(target, record, label)
    config = dataclasses.replace(
        config, label=label, inputs=tuple(inputs), data_description=_description(description)
    )
    return audit_run(
        target, config=config, policy=policy, record=row, progress=progress, rounds=rounds
    )


def _record(target: Target, upload: Upload, label: str) -> Record:
    """The queried record, validated against the target's features and classes."""
    from sklearn.pipeline import Pipeline

    from attacks.intake import coerce_labels, load_record

    X, y = load_record(
        upload.data,
        feature_names=target.feature_names,
        label=label,
        allow_text=isinstance(target.model, Pipeline),
    )
    if y is not None:
        y = coerce_labels(y, classes=target.model.classes_, where="record")
    return Record(X=X, y=y)


def _description(upload: Upload | None) -> dict | None:
    if upload is None:
        return None
    try:
        return json.loads(upload.data)
    except (ValueError, UnicodeDecodeError):
        raise IntakeError("The data description is not valid JSON.") from None
