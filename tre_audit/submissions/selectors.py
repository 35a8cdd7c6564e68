"""What a user may see of submissions."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.db.models.fields.json import KT

from attacks.metrics import tpr_unresolved_text
from tre_audit.listing import Rows, choice_rank, listing_filter, listing_order, risk_rank, search_q
from tre_audit.reviews.enums import Role
from tre_audit.submissions.enums import RunStatus, Status
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
    rows = []
    for number in range(submission.version, 0, -1):
        record, run = records.get(number), runs.get(number)
        rows.append(
            {
                "number": number,
                "is_current": number == submission.version,
                "note": record.note if record else "",
                "sent_at": record.created_at if record else None,
                "changed": _declaration_changed(records.get(number - 1), record),
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
    changed since the one before; none for the first version."""
    records = {
        v.number: v
        for v in submission.versions.filter(number__in=[submission.version - 1, submission.version])
    }
    return _declaration_changed(
        records.get(submission.version - 1), records.get(submission.version)
    )


def _declaration_changed(before: SubmissionVersion | None, after: SubmissionVersion | None):
    if before is None or after is None:
        return []
    old, new = before.declaration(), after.declaration()
    return [DECLARATION_LABELS[name] for name in DECLARATION_LABELS if old[name] != new[name]]


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
