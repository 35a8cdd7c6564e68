"""What a user may see of submissions."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet

from attacks.metrics import tpr_unresolved_text
from attacks.progress import PhaseMark, elapsed_text, eta_seconds, eta_text, stage_text
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
    """One row per version: files' hashes, verdict and each attack's AUC, side by side."""
    rows = []
    for run in submission.runs.filter(status=RunStatus.DONE).order_by("version", "created_at"):
        report = run.report or {}
        files = {f.role: f.stored_id for f in submission.files.filter(version=run.version)}
        rows.append(
            {
                "version": run.version,
                "run": run.id,
                "risk": report.get("verdict", {}).get("risk"),
                "files": files,
                "auc": {a.get("name"): a.get("auc") for a in report.get("attacks", [])},
                "finished_at": run.finished_at,
            }
        )
    return rows


FPR_LEVELS = ("0.001", "0.01", "0.1")


def report_view(report: dict | None) -> dict | None:
    """The report, prepared for the web page: rows of plain values, no raw records."""
    if not report:
        return None
    verdict = report.get("verdict", {})
    return {
        "risk": verdict.get("risk"),
        "summary": verdict.get("summary", ""),
        "reasons": verdict.get("reasons", []),
        "attacks": [_attack_row(a) for a in report.get("attacks", [])],
        "rules": report.get("rules", []),
        "sweep": _sweep_view(report.get("sweep")),
        "shadow_rounds": report.get("shadow_rounds"),
        "most_exposed": report.get("most_exposed", [])[:10],
        "model": report.get("model", {}),
        "data": report.get("data", {}),
        "inputs": report.get("inputs", []),
        "policy": report.get("policy", {}),
        "record": report.get("record"),
        "titles": finding_titles(report),
    }


def finding_titles(report: dict | None) -> dict[str, str]:
    """Each finding source (``attack:rmia``, ``rule:...``) with a human title."""
    report = report or {}
    titles = {
        f"attack:{a.get('name')}": a.get("title", a.get("name")) for a in report.get("attacks", [])
    }
    titles |= {
        f"rule:{r.get('rule')}": r.get("title", r.get("rule")) for r in report.get("rules", [])
    }
    for reason in report.get("verdict", {}).get("reasons", []):
        titles.setdefault(reason.get("source", ""), reason.get("title") or reason.get("source"))
    if report.get("sweep"):
        titles["sweep"] = "Hyperparameter sweep"
    titles.pop("", None)
    return dict(sorted(titles.items()))


def _attack_row(attack: dict) -> dict:
    ci = attack.get("auc_ci") or [None, None]
    return {
        "source": f"attack:{attack.get('name')}",
        "title": attack.get("title", attack.get("name")),
        "error": attack.get("error"),
        "auc": attack.get("auc"),
        "auc_low": ci[0],
        "auc_high": ci[1],
        "tpr": [_tpr_cell(attack, level) for level in FPR_LEVELS],
        "advantage": attack.get("advantage"),
    }


def _tpr_cell(attack: dict, level: str) -> dict:
    """A TPR and, when it is None, why (a tie, or too few non-members)."""
    value = (attack.get("tpr_at_fpr") or {}).get(level)
    why = (attack.get("tpr_unresolved") or {}).get(level) or {}
    return {"value": value, "why": None if value is not None else tpr_unresolved_text(why)}


def _sweep_view(sweep: dict | None) -> dict | None:
    if not sweep:
        return None
    return {
        "attack": sweep.get("attack"),
        "points": sweep.get("points", []),
        "recommendation": sweep.get("recommendation"),
        "skipped": sweep.get("skipped", []),
        "note": sweep.get("note", ""),
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
