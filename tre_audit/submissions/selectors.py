"""What a user may see of submissions."""

from __future__ import annotations

import re

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet

from attacks import reading
from tre_audit.reviews.enums import Role
from tre_audit.submissions.enums import RunStatus
from tre_audit.submissions.exceptions import NotAllowed
from tre_audit.submissions.models import AuditRun, Submission


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


def current_runs(submissions: list[Submission]) -> dict[int, AuditRun]:
    """Each submission's current run (as ``current_run``), in one query; no reports loaded."""
    version = {s.pk: s.version for s in submissions}
    runs = {}
    done = AuditRun.objects.filter(submission__in=version, status=RunStatus.DONE).order_by(
        "created_at"
    )
    for run in done.only("id", "submission_id", "version", "risk"):
        if run.version == version[run.submission_id]:
            runs[run.submission_id] = run
    return runs


def submission_rows(*, user: AbstractBaseUser) -> list[dict]:
    """The requests ``user`` may see, newest activity first, each with its current risk."""
    submissions = list(submission_list_visible_to(user=user).order_by("-updated_at"))
    runs = current_runs(submissions)
    return [
        {"submission": s, "risk": runs[s.pk].risk if s.pk in runs else None} for s in submissions
    ]


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


_STAGES = {
    "": "Queued: waiting for a worker",
    "rules": "Checking the model's settings against the rules",
    "sweep": "Sweeping hyperparameters for a safer setting",
    "report": "Writing the report",
    "done": "Done",
}


def stage_label(stage: str) -> str:
    """What the audit is doing, in words: an attack's title or a named step."""
    from attacks.audit import ATTACKS

    if stage in ATTACKS:
        return f"Running: {ATTACKS[stage][0].split(' (')[0]}"
    return _STAGES.get(stage, stage[:1].upper() + stage[1:])
