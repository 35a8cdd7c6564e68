"""What the TRE admin dashboard shows. Everything here reads; nothing writes."""

from __future__ import annotations

import ast
import difflib
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import (
    Case,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    Q,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import TruncWeek
from django.utils import timezone
from kombu.exceptions import ChannelError, OperationalError

from attacks import reading
from attacks.policy import default_policy_text
from attacks.reading import RISKS
from tre_audit.listing import Rows, choice_rank, listing_filter, listing_order, risk_rank, search_q
from tre_audit.reviews.enums import Decision, Role
from tre_audit.reviews.exceptions import ReviewNotAllowed
from tre_audit.reviews.models import Review
from tre_audit.reviews.services import check_user_can_sign_off
from tre_audit.submissions.enums import RunStatus, Status, audit_action_text
from tre_audit.submissions.models import AuditEntry, AuditRun, PolicyVersion, Submission
from tre_audit.submissions.services import ChainCheck, audit_chain_state, audit_chain_verify

#: The statuses that are a checker's decision on a request.
DECIDED = (Status.APPROVED, Status.REJECTED, Status.CHANGES_REQUESTED)
#: Reviews whose evidence counts as a reason a model was sent back.
REFUSALS = (Decision.REJECT, Decision.REQUEST_CHANGES)
#: Where an approval's pending sign-off still matters (it blocks the release).
SIGN_OFF_STATUSES = (Status.AWAITING_REVIEW, Status.APPROVED)
#: Sign-offs the overview lists at once, oldest first (each row checks who may sign).
SIGN_OFFS_SHOWN = 20
#: Seconds the dashboard waits for the broker and for workers to answer: the page
#: must load promptly even when Redis is down.
BROKER_TIMEOUT = 1.0


# Requests and audits -------------------------------------------------------


def submission_counts_by_status() -> list[dict]:
    """How many requests are in each status, every status listed (zeros included)."""
    counts = Counter(Submission.objects.values_list("status", flat=True))
    return [{"status": s.value, "label": s.label, "count": counts[s.value]} for s in Status]


def audit_run_list_failed(*, limit: int = 20) -> dict:
    """Audits that failed, newest first, with the request each belongs to."""
    runs = AuditRun.objects.filter(status=RunStatus.FAILED)
    return {"count": runs.count(), "runs": _run_rows(runs, limit), "query": "status=failed"}


def audit_run_list_active(*, limit: int = 20) -> dict:
    """Audits queued or running now: the ones an admin may have to stop."""
    runs = AuditRun.objects.filter(status__in=ACTIVE)
    return {"count": runs.count(), "runs": _run_rows(runs, limit), "query": "status=active"}


def audit_run_list_retried(*, limit: int = 20) -> dict:
    """Audits that needed more than one attempt (a worker died or a transient error)."""
    runs = AuditRun.objects.filter(attempts__gt=1)
    return {"count": runs.count(), "runs": _run_rows(runs, limit), "query": "retried=on"}


#: Run statuses an admin may stop; the run list's "active" filter.
ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)
#: The run list's filters: each form field and the lookup it narrows by.
RUN_FILTERS = {
    "q": lambda value: search_q(value, title="submission__title", number="submission_id"),
    "status": lambda value: Q(status__in=ACTIVE) if value == "active" else Q(status=value),
    "retried": lambda value: Q(attempts__gt=1),
    "risk": "risk",
    "author": "submission__author__username__iexact",
    "project": "submission__project__name__iexact",
    "since": "created_at__date__gte",
    "until": "created_at__date__lte",
}
#: The run list's sortable columns.
RUN_SORTS = {
    "date": "created_at",
    "status": choice_rank("status", RunStatus.values),
    "risk": risk_rank("risk"),
    "title": "submission__title",
}


def audit_run_rows(*, filters: dict | None = None, sort: str = "-date") -> Rows:
    """Every audit run, newest first unless sorted, narrowed by ``filters``; lazy."""
    runs = AuditRun.objects.select_related("submission").defer("report", "shadow_rounds")
    runs = listing_filter(runs, filters=filters or {}, fields=RUN_FILTERS)
    ordering = listing_order(sort, columns=RUN_SORTS) or ["-created_at", "-pk"]
    return Rows(runs.order_by(*ordering), _run_row)


def _run_rows(runs, limit: int) -> list[dict]:
    newest = runs.select_related("submission").defer("report").order_by("-created_at", "-id")
    return [_run_row(run) for run in newest[:limit]]


def _run_row(run: AuditRun) -> dict:
    return {
        "id": run.id,
        "status": run.get_status_display(),
        "stoppable": run.status in ACTIVE,
        "attempts": run.attempts,
        "error": run.error,
        "risk": run.risk or None,
        "version": run.version,
        "when": run.finished_at or run.started_at or run.created_at,
        "submission_id": run.submission_id,
        "submission_title": run.submission.title,
        "submission_url": run.submission.get_absolute_url(),
    }


@dataclass(frozen=True)
class DecisionTimes:
    """Hours from submission to a checker's first decision, over decided requests."""

    n: int
    median_hours: float | None
    p90_hours: float | None


def decision_time_stats() -> DecisionTimes:
    """Median and 90th percentile of the time from "submitted" to the first decision."""
    submitted: dict[int, datetime] = {}
    for submission_id, at in AuditEntry.objects.filter(action="submitted").values_list(
        "submission_id", "created_at"
    ):
        submitted.setdefault(submission_id, at)
    decided: dict[int, datetime] = {}
    decisions = AuditEntry.objects.filter(action="status", after__in=DECIDED).order_by("id")
    for submission_id, at in decisions.values_list("submission_id", "created_at"):
        decided.setdefault(submission_id, at)
    hours = sorted(
        (decided[s] - submitted[s]).total_seconds() / 3600 for s in decided if s in submitted
    )
    if not hours:
        return DecisionTimes(0, None, None)
    return DecisionTimes(len(hours), percentile(hours, 50), percentile(hours, 90))


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile of sorted ``values``, interpolating between ranks."""
    if not values:
        raise ValueError("No values to take a percentile of.")
    rank = (len(values) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return values[low] + (values[high] - values[low]) * (rank - low)


def risk_distribution() -> list[dict]:
    """How many requests sit at each risk, by the verdict of their newest finished audit.

    Requests never audited to the end are not counted. A report without a
    recognisable risk is counted as "unknown" rather than hidden.
    """
    newest = (
        AuditRun.objects.filter(submission=OuterRef("pk"), status=RunStatus.DONE)
        .order_by("-created_at", "-id")
        .values("id")[:1]
    )
    run_ids = Submission.objects.annotate(run_id=Subquery(newest)).values("run_id")
    risks = Counter(
        AuditRun.objects.filter(id__in=run_ids).values_list("report__verdict__risk", flat=True)
    )
    rows = [{"risk": risk, "count": risks.pop(risk, 0)} for risk in RISKS]
    unknown = sum(risks.values())
    if unknown:
        rows.append({"risk": "unknown", "count": unknown})
    return rows


def rejection_reason_counts(*, limit: int = 10) -> list[dict]:
    """The report findings cited most often by reject and request-changes reviews.

    Each row is a source such as ``attack:rmia``, how many such reviews cite it,
    and the finding's title from the report the review judged, where it has one.
    """
    counts: Counter[str] = Counter()
    titles: dict[str, str] = {}
    reviews = Review.objects.filter(decision__in=REFUSALS).select_related("run")
    for review in reviews.only("evidence", "run__report"):
        sources = set(review.evidence or [])
        counts += Counter(sources)
        report_titles = finding_titles(review.run.report)
        for source in sources:
            if source not in titles and source in report_titles:
                titles[source] = report_titles[source]
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return [{"source": s, "title": titles.get(s, ""), "count": n} for s, n in ranked]


def finding_titles(report: dict | None) -> dict[str, str]:
    """Each finding source of a report (``attack:lira``, ``rule:...``) with its name for people."""
    return reading.finding_titles(report)


# Sign-offs ----------------------------------------------------------------


def sign_off_list_pending(*, admin: AbstractBaseUser, limit: int | None = None) -> list[dict]:
    """High-risk approvals of a request's current audit still awaiting an admin's sign-off,
    oldest first (at most ``limit``).

    Only requests where the sign-off still matters are listed (awaiting review or
    approved); ``user_can_sign_off`` says whether ``admin`` may give it (not the
    checker who approved, nor the author).
    """
    reviews = _sign_offs_pending().select_related("submission", "reviewer").order_by("created_at")
    return [_sign_off_row(r, admin) for r in reviews[:limit]]


def sign_off_count_pending() -> int:
    """How many approvals ``sign_off_list_pending`` would list without a limit."""
    return _sign_offs_pending().count()


def _sign_offs_pending():
    current = (
        AuditRun.objects.filter(
            submission=OuterRef("submission"),
            status=RunStatus.DONE,
            version=OuterRef("submission__version"),
        )
        .order_by("-created_at")
        .values("id")[:1]
    )
    return (
        Review.objects.filter(
            decision=Decision.APPROVE,
            needs_admin_signoff=True,
            signed_off_at__isnull=True,
            submission__status__in=SIGN_OFF_STATUSES,
        )
        .annotate(current_run_id=Subquery(current))
        .filter(run_id=F("current_run_id"))
    )


def _sign_off_row(review: Review, admin: AbstractBaseUser) -> dict:
    try:
        check_user_can_sign_off(admin, review)
        can, why_not = True, ""
    except ReviewNotAllowed as exc:
        can, why_not = False, str(exc)
    return {
        "review_id": review.id,
        "submission_id": review.submission_id,
        "submission_title": review.submission.title,
        "submission_url": review.submission.get_absolute_url(),
        "submission_status": review.submission.get_status_display(),
        "reviewer": review.reviewer.get_username(),
        "reason": review.reason,
        "justification": review.justification,
        "created_at": review.created_at,
        "user_can_sign_off": can,
        "why_not": why_not,
    }


# The broker and its workers -----------------------------------------------


@dataclass(frozen=True)
class BrokerOverview:
    """The audit queue as the broker sees it; ``reachable`` False means nothing is known."""

    reachable: bool
    queue: str
    queue_depth: int | None = None
    workers: list[dict] = field(default_factory=list)
    error: str = ""


def broker_overview(*, app=None, timeout: float = BROKER_TIMEOUT) -> BrokerOverview:
    """Queue depth and the workers online with what each runs, within about ``timeout`` s.

    An unreachable broker is reported, not raised: the dashboard must still load.
    """
    app = app or _celery_app()
    queue = app.conf.task_default_queue
    options = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    try:
        with app.connection_for_read(transport_options=options) as connection:
            connection.ensure_connection(max_retries=0)
            depth = audit_queue_depth(connection=connection, queue=queue)
            workers = worker_list_online(app=app, connection=connection, timeout=timeout)
    except (OperationalError, OSError) as exc:
        return BrokerOverview(False, queue, error=str(exc))
    return BrokerOverview(True, queue, depth, workers)


def _celery_app():
    from tre_audit.celery import app

    return app


def audit_queue_depth(*, connection, queue: str) -> int:
    """Messages waiting in ``queue`` (Redis drops an empty queue: that counts as 0)."""
    with connection.channel() as channel:
        try:
            return channel.queue_declare(queue=queue, passive=True).message_count
        except ChannelError:
            return 0


def worker_list_online(*, app, connection, timeout: float) -> list[dict]:
    """Every worker that answers within ``timeout``, with the tasks it is running now."""
    replies = app.control.inspect(timeout=timeout, connection=connection).active() or {}
    return [
        {"name": name, "tasks": [_task_row(task) for task in tasks or []]}
        for name, tasks in sorted(replies.items())
    ]


def _task_row(task: dict) -> dict:
    args = task.get("args") or []
    if isinstance(args, str):  # older workers send the repr of the arguments
        try:
            args = ast.literal_eval(args)
        except (ValueError, SyntaxError):
            args = []
    started = task.get("time_start")
    return {
        "id": task.get("id", ""),
        "name": task.get("name", ""),
        "run_id": args[0] if args and isinstance(args[0], int) else None,
        "since": datetime.fromtimestamp(started, tz=UTC) if started else None,
    }


# The audit log --------------------------------------------------------------


@dataclass(frozen=True)
class ChainStatus:
    """The audit log's hash check, with the first bad entry described when there is one."""

    check: ChainCheck
    bad_entry: dict | None = None


def audit_chain_status() -> ChainStatus:
    """Verify the whole hash chain; name the first entry that does not match."""
    check = audit_chain_verify()
    if check.ok or check.first_bad_id is None:
        return ChainStatus(check)
    entry = AuditEntry.objects.select_related("actor", "submission").filter(id=check.first_bad_id)
    return ChainStatus(check, _entry_row(entry[0]) if entry else None)  # None: it was removed


def audit_chain_broken() -> str:
    """Why the log's last verification failed, as recorded; empty if it passed or never ran."""
    head = audit_chain_state()
    return head.broken if head else ""


def audit_entry_list_newest(*, limit: int = 200) -> list[dict]:
    """The newest ``limit`` audit entries, newest first."""
    entries = AuditEntry.objects.select_related("actor", "submission").order_by("-id")[:limit]
    return [_entry_row(entry) for entry in entries]


#: The audit log's filters: each form field and the lookup it narrows by.
AUDIT_LOG_FILTERS = {
    "q": lambda value: (
        search_q(value, title="reason", number="submission_id")
        | Q(submission__title__icontains=value)
    ),
    "action": "action",
    "actor": "actor__username__iexact",
    "request": "submission_id",
    "author": "submission__author__username__iexact",
    "project": "submission__project__name__iexact",
    "status": "after",
    "since": "created_at__date__gte",
    "until": "created_at__date__lte",
}


def audit_entries_filtered(*, filters: dict | None = None):
    """The audit entries ``filters`` (the log form's values) select, in log order."""
    entries = AuditEntry.objects.all()
    return listing_filter(entries, filters=filters or {}, fields=AUDIT_LOG_FILTERS)


def audit_entry_rows(*, filters: dict | None = None, sort: str = "-date") -> Rows:
    """The audit entries ``filters`` select, newest first (``sort="date"``: oldest); lazy."""
    entries = audit_entries_filtered(filters=filters).select_related("actor", "submission")
    return Rows(entries.order_by("id" if sort == "date" else "-id"), _entry_row)


def audit_entry_export(*, filters: dict | None = None, up_to: int, chunk_size: int = 1000):
    """Each selected entry up to id ``up_to``, oldest first, as plain values for an export.

    Read with ``.iterator`` in chunks, so the whole log streams in bounded memory. The
    hashes and the actor's id are there so the export can be verified on its own.
    """
    entries = audit_entries_filtered(filters=filters).filter(id__lte=up_to).order_by("id")
    for entry in entries.select_related("actor").iterator(chunk_size=chunk_size):
        yield {
            "id": entry.id,
            "created_at": entry.created_at.isoformat(),
            "actor_id": entry.actor_id,
            "actor": entry.actor.get_username() if entry.actor else "",
            "submission_id": entry.submission_id,
            "action": entry.action,
            "what": audit_action_text(entry.action),
            "before": entry.before,
            "after": entry.after,
            "reason": entry.reason,
            "prev_hash": entry.prev_hash,
            "entry_hash": entry.entry_hash,
        }


def audit_entry_newest_id() -> int:
    """The id of the newest entry (0 for an empty log)."""
    return AuditEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0


def _entry_row(entry: AuditEntry) -> dict:
    return {
        "id": entry.id,
        "created_at": entry.created_at,
        "actor": entry.actor.get_username() if entry.actor else "",
        "submission_id": entry.submission_id,
        "submission_url": entry.submission.get_absolute_url() if entry.submission else "",
        "action": entry.action,
        "what": audit_action_text(entry.action),
        "before": entry.before,
        "after": entry.after,
        "reason": entry.reason,
        "short_hash": entry.entry_hash[:12],
        "entry_hash": entry.entry_hash,
    }


# Users ---------------------------------------------------------------------


def user_list_with_roles() -> list[dict]:
    """Every user with their roles and projects, by username."""
    users = (
        get_user_model()
        .objects.prefetch_related("groups", "projects")
        .order_by(get_user_model().USERNAME_FIELD)
    )
    return [_user_row(user) for user in users]


def _user_row(user: AbstractBaseUser) -> dict:
    roles = [role for role in Role if role in {g.name for g in user.groups.all()}]
    return {
        "id": user.pk,
        "username": user.get_username(),
        "email": user.email,
        "is_active": user.is_active,
        "last_login": user.last_login,
        "roles": [role.value for role in roles],
        "role_labels": [role.label for role in roles],
        "projects": sorted(p.name for p in user.projects.all()),
    }


# The risk policy -------------------------------------------------------------


def policy_overview() -> dict:
    """The current policy and every version, newest first, each diffed against the one before.

    Version 1 is the shipped default file; saved versions start at 2.
    """
    versions = [
        {
            "version": saved.version,
            "note": saved.note,
            "created_by": saved.created_by.get_username() if saved.created_by else "",
            "created_at": saved.created_at,
            "sha256": saved.sha256,
            "text": saved.text,
        }
        for saved in PolicyVersion.objects.select_related("created_by").order_by("version")
    ]
    default = {
        "version": 1,
        "note": "The shipped default policy.",
        "created_by": "",
        "created_at": None,
        "text": default_policy_text(),
    }
    history = [default, *versions]
    for previous, version in zip(history, history[1:]):
        version["diff"] = policy_diff(previous["text"], version["text"])
        version["previous"] = previous["version"]
    return {"current": history[-1], "history": history[::-1]}


def policy_diff(before: str, after: str) -> list[dict]:
    """Unified diff lines of two policy texts, each tagged for display (add, remove, ...)."""
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), n=2, lineterm="")
    return [{"kind": _diff_kind(line), "text": line} for line in list(lines)[2:]]


def _diff_kind(line: str) -> str:
    if line.startswith("@@"):
        return "hunk"
    return {"+": "add", "-": "remove"}.get(line[:1], "context")


# Charts ------------------------------------------------------------------------

#: Weeks the dashboard's trend charts cover, the current week last.
CHART_WEEKS = 12
#: Kinds of audit entry the activity chart counts, by the key its rows use.
ACTIVITY_KEYS = ("submitted", *DECIDED)
#: Time-to-decision bins: (upper bound, label); the last bin is open-ended. The labels
#: are short (h hours, d days) so that six fit under a chart on a phone.
DECISION_TIME_BINS = (
    (timedelta(hours=1), "< 1 h"),
    (timedelta(hours=4), "1–4 h"),
    (timedelta(days=1), "4–24 h"),
    (timedelta(days=3), "1–3 d"),
    (timedelta(days=7), "3–7 d"),
    (None, "> 7 d"),
)


def chart_window_start(*, now: datetime, weeks: int = CHART_WEEKS) -> datetime:
    """Midnight on the Monday that starts the window of ``weeks`` weeks ending with ``now``'s."""
    today = timezone.localtime(now).date()
    monday = today - timedelta(days=today.weekday(), weeks=weeks - 1)
    return timezone.make_aware(datetime.combine(monday, time.min))


def submission_activity_by_week(*, now: datetime, weeks: int = CHART_WEEKS) -> list[dict]:
    """New requests and checkers' decisions per week, from the audit log.

    One grouped query; every week of the window is a row (zeros included), oldest
    first: ``{"week": date, "submitted": n, "approved": n, "rejected": n,
    "changes_requested": n}``. A decision is counted in the week it was made.
    """
    start = chart_window_start(now=now, weeks=weeks)
    counts = (
        AuditEntry.objects.filter(created_at__gte=start, created_at__lte=now)
        .filter(Q(action="submitted") | Q(action="status", after__in=DECIDED))
        .annotate(week=TruncWeek("created_at"))
        .values("week", "action", "after")
        .annotate(n=Count("id"))
        .order_by()
    )
    rows = {
        start.date() + timedelta(weeks=i): dict.fromkeys(ACTIVITY_KEYS, 0) for i in range(weeks)
    }
    for count in counts:
        key = "submitted" if count["action"] == "submitted" else count["after"]
        rows[_week_day(count["week"])][key] += count["n"]
    return [{"week": week, **row} for week, row in rows.items()]


def _week_day(week) -> date:
    """The Monday TruncWeek gave, as a date (a datetime on most backends)."""
    return timezone.localtime(week).date() if isinstance(week, datetime) else week


def decision_time_histogram(*, now: datetime, weeks: int = CHART_WEEKS) -> list[dict]:
    """Requests first decided in the window, by how long that took from "submitted".

    Binned in the database (one query, whatever the number of requests): one row
    per bin of DECISION_TIME_BINS, ``{"label": ..., "count": n}``, zeros included.
    """
    start = chart_window_start(now=now, weeks=weeks)
    entries = AuditEntry.objects.filter(submission=OuterRef("pk")).order_by("id")
    submitted = entries.filter(action="submitted").values("created_at")[:1]
    decided = entries.filter(action="status", after__in=DECIDED).values("created_at")[:1]
    waits = (
        Submission.objects.annotate(submitted_at=Subquery(submitted), decided_at=Subquery(decided))
        .filter(submitted_at__isnull=False, decided_at__gte=start, decided_at__lte=now)
        .annotate(wait=ExpressionWrapper(F("decided_at") - F("submitted_at"), DurationField()))
    )
    last = len(DECISION_TIME_BINS) - 1
    bins = Case(
        *(
            When(wait__lt=bound, then=Value(i))
            for i, (bound, _) in enumerate(DECISION_TIME_BINS[:-1])
        ),
        default=Value(last),
        output_field=IntegerField(),
    )
    counts = dict(
        waits.annotate(bin=bins)
        .values("bin")
        .annotate(n=Count("id"))
        .values_list("bin", "n")
        .order_by()
    )
    return [
        {"label": label, "count": counts.get(i, 0)}
        for i, (_, label) in enumerate(DECISION_TIME_BINS)
    ]
