"""What a user may see of submissions."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.db.models.fields.json import KT

from attacks import reading
from attacks.progress import PhaseMark, elapsed_text, eta_seconds, eta_text, stage_text
from tre_audit.listing import Rows, choice_rank, listing_filter, listing_order, risk_rank, search_q
from tre_audit.reviews.enums import Role
from tre_audit.submissions.enums import FileRole, RunStatus, Status
from tre_audit.submissions.exceptions import NotAllowed
from tre_audit.submissions.models import (
    DECLARATION_LABELS,
    AuditRun,
    Submission,
    SubmissionVersion,
)


def user_roles(user: AbstractBaseUser) -> set[str]:
    if not user.is_authenticated:
        return set()
    return set(user.groups.values_list("name", flat=True)) & set(Role.values)


def user_is_author_or_admin(user: AbstractBaseUser, submission: Submission) -> bool:
    """Who may act for a request: retry it, release it, download or serve what was released."""
    return submission.author_id == user.pk or Role.TRE_ADMIN in user_roles(user)


def submission_list_visible_to(*, user: AbstractBaseUser) -> QuerySet[Submission]:
    """Requests ``user`` may open.

    Admins see all; researchers their own and their projects'; checkers every
    request that has been audited (the evidence they judge).
    """
    roles = user_roles(user)
    qs = Submission.objects.select_related("author", "project")
    if not user.is_authenticated:
        return qs.none()
    if Role.TRE_ADMIN in roles:
        return qs
    visible = Q(author=user) | Q(project__members=user)
    if Role.CHECKER in roles:
        visible |= Q(runs__status=RunStatus.DONE)
    return qs.filter(visible).distinct()


def submission_get_visible(*, user: AbstractBaseUser, submission_id: int) -> Submission:
    """The request, or NotAllowed (shown as 404: others' requests are not even confirmed)."""
    submission = submission_list_visible_to(user=user).filter(pk=submission_id).first()
    if submission is None:
        raise NotAllowed("There is no request with that number you can see.")
    return submission


def current_run(submission: Submission) -> AuditRun | None:
    """The newest finished audit of the current version: the evidence reviews are about."""
    return (
        submission.runs.filter(status=RunStatus.DONE, version=submission.version)
        .order_by("-created_at")
        .first()
    )


def version_rows(*, submission: Submission) -> list[dict]:
    """Every version of the request, newest first: the author's note on what changed, the
    declaration fields it changed, and its audit's verdict (risk and summary) or state.

    The verdict is the version's newest finished audit's, else its newest audit's state;
    reports are not loaded, only the verdict's summary. Versions sent before their
    records were kept show what the request holds.
    """
    records = {v.number: v for v in submission.versions.all()}
    runs = _verdict_runs(submission)
    networks = _declared_networks(submission)
    rows = []
    for number in range(submission.version, 0, -1):
        record, run = records.get(number), runs.get(number)
        rows.append(
            {
                "number": number,
                "is_current": number == submission.version,
                "note": record.note if record else "",
                "sent_at": record.created_at if record else None,
                "changed": _declaration_changed(records.get(number - 1), record, networks),
                "run": run,
                "risk": run.risk if run and run.status == RunStatus.DONE else None,
                "summary": getattr(run, "summary", None) or "",
            }
        )
    return rows


def _verdict_runs(submission: Submission) -> dict[int, AuditRun]:
    runs = {}
    ordered = submission.runs.annotate(summary=KT("report__verdict__summary")).order_by(
        "version", "created_at", "id"
    )
    for run in ordered.only("id", "version", "status", "risk", "error", "finished_at"):
        if run.status == RunStatus.DONE or runs.get(run.version, run).status != RunStatus.DONE:
            runs[run.version] = run
    return runs


def declaration_changes(*, submission: Submission) -> list[str]:
    """The names (as people read them) of the declaration fields the current version
    changed since the one before, and its network's declaration if that changed (one
    given, dropped or different); none for the first version."""
    records = {
        v.number: v
        for v in submission.versions.filter(number__in=[submission.version - 1, submission.version])
    }
    return _declaration_changed(
        records.get(submission.version - 1),
        records.get(submission.version),
        _declared_networks(submission),
    )


def _declared_networks(submission: Submission) -> dict[int, str]:
    """The SHA-256 of each version's declared network (versions without one are absent)."""
    declared = submission.files.filter(role=FileRole.DECLARATION)
    return dict(declared.values_list("version", "stored_id"))


def _declaration_changed(
    before: SubmissionVersion | None, after: SubmissionVersion | None, networks: dict[int, str]
) -> list[str]:
    if before is None or after is None:
        return []
    old, new = before.declaration(), after.declaration()
    changed = [DECLARATION_LABELS[name] for name in DECLARATION_LABELS if old[name] != new[name]]
    if networks.get(before.number) != networks.get(after.number):
        changed.append(FileRole.DECLARATION.label)
    return changed


def with_current_run(queryset: QuerySet[Submission]) -> QuerySet[Submission]:
    """Each request with its current run's id and risk (as ``current_run``), in the same
    query: ``current_run_id`` and ``current_risk``, None before the first finished audit."""
    current = AuditRun.objects.filter(
        submission=OuterRef("pk"), status=RunStatus.DONE, version=OuterRef("version")
    ).order_by("-created_at", "-id")
    return queryset.annotate(
        current_run_id=Subquery(current.values("id")[:1]),
        current_risk=Subquery(current.values("risk")[:1]),
    )


#: The request list's filters: each form field and the lookup it narrows by.
SUBMISSION_FILTERS = {
    "q": lambda value: search_q(value, title="title", number="pk"),
    "status": "status",
    "risk": "current_risk",
    "author": "author__username__iexact",
    "project": "project__name__iexact",
    "since": "updated_at__date__gte",
    "until": "updated_at__date__lte",
}
#: The request list's sortable columns.
SUBMISSION_SORTS = {
    "date": "updated_at",
    "status": choice_rank("status", Status.values),
    "risk": risk_rank("current_risk"),
    "title": "title",
}


def submission_rows(
    *, user: AbstractBaseUser, filters: dict | None = None, sort: str = "-date"
) -> Rows:
    """The requests ``user`` may see, newest activity first unless ``sort`` says otherwise,
    each with its current risk, narrowed by ``filters`` (the list form's values).

    Lazy: counting takes one query and each page (or the whole, iterated) one more.
    """
    submissions = with_current_run(submission_list_visible_to(user=user))
    submissions = listing_filter(submissions, filters=filters or {}, fields=SUBMISSION_FILTERS)
    ordering = listing_order(sort, columns=SUBMISSION_SORTS) or ["-updated_at", "-pk"]
    return Rows(submissions.order_by(*ordering), _submission_row)


def _submission_row(submission: Submission) -> dict:
    return {"submission": submission, "risk": submission.current_risk or None}


def run_list_for(*, submission: Submission) -> list[AuditRun]:
    """Every audit of every version, newest first."""
    return list(submission.runs.order_by("-version", "-created_at"))


def version_compare(*, submission: Submission) -> list[dict]:
    """One row per audited version: files' hashes, verdict and each attack's AUC and TPR."""
    rows = []
    for run in submission.runs.filter(status=RunStatus.DONE).order_by("version", "created_at"):
        report = run.report or {}
        files = {f.role: f.stored_id for f in submission.files.filter(version=run.version)}
        attacks = reading.attack_rows(report)
        rows.append(
            {
                "version": run.version,
                "run": run.id,
                "risk": report.get("verdict", {}).get("risk"),
                "files": files,
                "auc": {a.get("name"): a.get("auc") for a in report.get("attacks", [])},
                "attacks": {a.name: a for a in attacks},
                "rules": {r.get("rule"): r for r in report.get("rules", []) if r.get("rule")},
                "change": reading.change_sentence(report),
                "finished_at": run.finished_at,
            }
        )
    return rows


def version_diffs(*, rows: list[dict]) -> list[dict]:
    """Each audited version against the one before, as a checker reads a diff.

    ``rows`` are :func:`version_compare`'s. Attacks are named for people, rates in
    percent; a rule that appeared or went away is listed by its title.
    """
    return [_version_diff(before, after) for before, after in zip(rows, rows[1:])]


def _version_diff(before: dict, after: dict) -> dict:
    names = list(dict.fromkeys([*before["attacks"], *after["attacks"]]))
    one_percent = reading.FPR_LEVELS.index("0.01")
    attacks = []
    for name in names:
        old, new = before["attacks"].get(name), after["attacks"].get(name)
        attacks.append(
            {
                "name": name,
                "auc": (_auc(old), _auc(new)),
                "tpr": (_tpr(old, one_percent), _tpr(new, one_percent)),
            }
        )
    old_rules, new_rules = before["rules"], after["rules"]
    return {
        "before": before["version"],
        "after": after["version"],
        "risk": (before["risk"], after["risk"]),
        "attacks": attacks,
        "rules_gone": [_rule_title(old_rules[r]) for r in old_rules if r not in new_rules],
        "rules_new": [_rule_title(new_rules[r]) for r in new_rules if r not in old_rules],
        "rules_kept": [_rule_title(new_rules[r]) for r in new_rules if r in old_rules],
        "change": (before["change"], after["change"]),
    }


def _auc(row: reading.AttackRow | None) -> str:
    if row is None:
        return "not run"
    return reading.auc_text(row.auc) if row.ran else "failed"


def _tpr(row: reading.AttackRow | None, index: int) -> str:
    if row is None:
        return "not run"
    return row.tpr[index].text if row.ran else "failed"


def _rule_title(rule: dict) -> str:
    return rule.get("title") or reading.RULE_UNTITLED


def report_view(report: dict | None) -> dict | None:
    """The report, prepared for the web page: the plain-language summary first, then the
    evidence for experts, in the names, units and sentences of :mod:`attacks.reading`."""
    if not report:
        return None
    verdict = report.get("verdict", {})
    attacks, notes = _attack_table(reading.attack_rows(report))
    return {
        "risk": verdict.get("risk"),
        "plain": reading.summary(report),
        "reasons": _reasons(report),
        "fpr_labels": [reading.fpr_label(level) for level in reading.FPR_LEVELS],
        "attacks": attacks,
        "tpr_notes": notes,
        "rules": report.get("rules", []),
        "network": reading.declared_network(report),
        "sweep": _sweep_view(report.get("sweep"), report.get("model", {}).get("params", {})),
        "shadow_rounds": report.get("shadow_rounds"),
        "most_exposed": _exposed_rows(report.get("most_exposed", [])[:10]),
        "strongest": reading.strongest_attack(report),
        "model": report.get("model", {}),
        "data": report.get("data", {}),
        "inputs": report.get("inputs", []),
        "policy": report.get("policy", {}),
        "record": report.get("record"),
        "titles": finding_titles(report),
        "terms": _terms(),
    }


def finding_titles(report: dict | None) -> dict[str, str]:
    """Each finding source (``attack:rmia``, ``rule:...``) with its name for people."""
    return reading.finding_titles(report)


def _reasons(report: dict) -> list[dict]:
    reasons = report.get("verdict", {}).get("reasons", [])
    return [
        {
            "risk": r.get("risk"),
            "source": r.get("source", ""),
            "title": reading.source_title(report, r.get("source", "")),
            "text": r.get("text", ""),
        }
        for r in sorted(reasons, key=lambda r: reading.risk_rank(r.get("risk")))
        if isinstance(r, dict)
    ]


def _attack_table(rows: list[reading.AttackRow]) -> tuple[list[dict], list[str]]:
    """Attack rows with each n/a cell pointing at one numbered note saying why."""
    notes: list[str] = []
    table = []
    for row in rows:
        cells = []
        for cell in row.tpr:
            if cell.why and cell.why not in notes and not row.error:
                notes.append(cell.why)
            note = notes.index(cell.why) + 1 if cell.why in notes else None
            cells.append({"text": cell.text, "why": cell.why, "note": note})
        table.append({"row": row, "tpr": cells})
    return table, notes


def _exposed_rows(records: list[dict]) -> list[dict]:
    return [
        {
            "index": r.get("index"),
            "hash": r.get("hash"),
            "probability": reading.percent(r.get("probability"), 1),
        }
        for r in records
        if isinstance(r, dict)
    ]


def _sweep_view(sweep: dict | None, model_params: dict) -> dict | None:
    if not sweep:
        return None
    return {
        "attack": sweep.get("attack"),
        "points": [_sweep_point(p) for p in reading.sweep_points(sweep, model_params)],
        "recommendation": sweep.get("recommendation"),
        "skipped": [
            {"setting": reading.setting_text(s.get("param"), s.get("value"))} | s
            for s in sweep.get("skipped", [])
        ],
        "note": sweep.get("note", ""),
    }


def _sweep_point(point: dict) -> dict:
    return {
        "setting": reading.setting_text(point.get("param"), point.get("value")),
        "is_original": point.get("is_original") is True,
        "note": point.get("note", ""),
        "auc": reading.auc_text(point.get("auc")),
        "tpr": reading.percent(point.get("tpr_at_1pct_fpr")),
        "accuracy": reading.percent(point.get("test_accuracy"), 1),
    }


def _terms() -> dict[str, dict]:
    """The glossary keyed for templates: ``terms.auc.text``, ``terms.tpr_at_fpr.term``."""
    return {
        re.sub(r"\W+", "_", term.lower()).strip("_"): {"term": term, "text": text}
        for term, text in reading.GLOSSARY.items()
    }


def stage_label(stage: str) -> str:
    """What the audit is doing, in words: an attack's name or a named step."""
    return stage_text(stage)


def run_eta_seconds(*, run: AuditRun | None, now: datetime) -> float | None:
    """Seconds the running audit has left at its current phase's rate, or None before
    the phase has a rate (``attacks.progress.eta_seconds``)."""
    if run is None or run.status != RunStatus.RUNNING:
        return None
    return eta_seconds(run_phase_mark(run=run), done=run.progress, now=now.timestamp())


def run_phase_mark(*, run: AuditRun) -> PhaseMark | None:
    """Where the run's current phase started, as stored on it (None before any)."""
    if run.phase_started_at is None:
        return None
    return PhaseMark(
        phase=run.phase,
        started_at=run.phase_started_at.timestamp(),
        start_progress=run.phase_start_progress,
        n_updates=run.phase_updates,
    )


def run_elapsed_seconds(*, run: AuditRun | None, now: datetime) -> float | None:
    """Seconds since the running audit started (the page's timer starts from it)."""
    if run is None or run.status != RunStatus.RUNNING or run.started_at is None:
        return None
    return max((now - run.started_at).total_seconds(), 0.0)


def run_progress(*, run: AuditRun | None, now: datetime) -> dict:
    """The running audit as the request page shows it: stage in words, fraction, the
    seconds it has run (the page's timer ticks from them) and the time left, if known."""
    eta = run_eta_seconds(run=run, now=now)
    elapsed = run_elapsed_seconds(run=run, now=now)
    return {
        "stage": stage_label(run.stage if run else ""),
        "progress": run.progress if run else 0.0,
        "attempts": run.attempts if run else 0,
        "run_status": run.status if run else RunStatus.QUEUED,
        "elapsed_seconds": elapsed,
        "elapsed_text": "" if elapsed is None else elapsed_text(elapsed),
        "eta_seconds": eta,
        "eta_text": eta_text(eta),
    }


#: The declaration's caps (attacks.nn.schema.DeclarationLimits) in words.
LIMIT_WORDS = {
    "max_layers": "Layers",
    "max_parameters": "Trainable parameters",
    "max_epochs": "Epochs",
    "max_batch_size": "Batch size",
    "max_input_values": "Values per record",
    "max_activation_values": "Values per record after any layer",
}


def declaration_format() -> dict:
    """How to declare a neural network, for the page the upload form links to.

    Read from the schema itself (each layer type, recipe choice and field with its
    default, and the service's caps) with the teaching networks' declarations as
    examples, so the page cannot drift from what intake accepts.
    """
    from attacks.nn import schema
    from attacks.nn.teaching import DECLARATIONS

    return {
        "top": _schema_fields(schema.Declaration),
        "layers": _schema_entries(*schema.LAYERS.values()),
        "recipe": _schema_fields(schema.Recipe),
        "choices": [
            ("optimizer", _schema_entries(schema.Sgd, schema.Adam, schema.AdamW)),
            (
                "lr_schedule",
                _schema_entries(schema.NoSchedule, schema.StepSchedule, schema.CosineSchedule),
            ),
            (
                "augmentation",
                _schema_entries(schema.HorizontalFlip, schema.RandomCrop, schema.GaussianNoise),
            ),
        ],
        "limits": [
            (LIMIT_WORDS.get(f.name, f.name), f"{f.default:,}")
            for f in dataclasses.fields(schema.DeclarationLimits)
        ],
        "examples": [
            (title, _example_text(DECLARATIONS[name]))
            for title, name in (
                ("A tabular MLP (30 features, 2 classes)", "breast_cancer_mlp"),
                ("An image CNN (8x8 grey images, 10 classes)", "digits_cnn_regularised"),
            )
        ],
    }


def _schema_entries(*classes) -> list[dict]:
    """Each choice's JSON ``type``, the first line of its docstring and its fields."""
    return [
        {
            "type": cls.kind,
            "about": (cls.__doc__ or "").strip().splitlines()[0].replace("``", ""),
            "fields": _schema_fields(cls),
        }
        for cls in classes
    ]


def _schema_fields(cls) -> list[dict]:
    return [{"name": f.name, "default": _default_text(f)} for f in dataclasses.fields(cls)]


def _default_text(f: dataclasses.Field) -> str:
    default = f.default
    if default is dataclasses.MISSING:
        return "required"
    if default is None:
        return "none"
    if hasattr(default, "kind"):  # a choice, e.g. the schedule "none"
        return json.dumps(default.kind)
    return json.dumps(list(default) if isinstance(default, tuple) else default)


def _example_text(declared: dict) -> str:
    """A declaration as a researcher would lay it out: one layer, one recipe key a line."""
    lines = []
    for key, value in declared.items():
        if isinstance(value, list) and any(isinstance(v, dict) for v in value):
            inner = ",\n".join(f"    {json.dumps(v)}" for v in value)
            lines.append(f'  "{key}": [\n{inner}\n  ]')
        elif isinstance(value, dict):
            inner = ",\n".join(f'    "{k}": {json.dumps(v)}' for k, v in value.items())
            lines.append(f'  "{key}": {{\n{inner}\n  }}')
        else:
            lines.append(f'  "{key}": {json.dumps(value)}')
    return "{\n" + ",\n".join(lines) + "\n}"
