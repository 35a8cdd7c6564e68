"""What reviews a user may see."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Exists, F, OuterRef, Q
from django.urls import reverse

from tre_audit.listing import Rows, listing_filter, listing_order, risk_rank, search_q
from tre_audit.reviews.enums import Decision, Role
from tre_audit.reviews.models import Comment, Review
from tre_audit.reviews.services import current_run, user_has_role
from tre_audit.submissions.enums import AuditAction, Status, audit_action_text
from tre_audit.submissions.models import AuditEntry, AuditRun, Submission
from tre_audit.submissions.selectors import (
    finding_titles,
    user_roles,
    version_rows,
    with_current_run,
)


def review_list_visible_to(*, user: AbstractBaseUser, submission: Submission) -> list[Review]:
    """Reviews of the current audit ``user`` may read.

    A checker reviews independently: they see other checkers' reviews only once
    they have submitted their own. Admins and the author see all of them.
    """
    reviews = Review.objects.filter(run=current_run(submission)).select_related("reviewer")
    if user_has_role(user, Role.TRE_ADMIN) or submission.author_id == user.pk:
        return list(reviews)
    if reviews.filter(reviewer=user).exists():
        return list(reviews)
    return []


def version_history_visible_to(*, user: AbstractBaseUser, submission: Submission) -> list[dict]:
    """Every version of the request, newest first (``version_rows``), each earlier one
    with the reviews and comments ``user`` may read of it.

    The current version's reviews and comments follow the independence rule of
    ``review_list_visible_to``. An earlier version's audit can no longer be reviewed,
    so nobody's opinion of it can still be swayed: the author, checkers and admins read
    all of it; anyone else only the author's comments and their own.
    """
    rows = version_rows(submission=submission)
    earlier = {"submission": submission, "run__version__lt": submission.version}
    version = F("run__version")
    reviews = Review.objects.filter(**earlier).select_related("reviewer", "signed_off_by")
    comments = Comment.objects.filter(**earlier).select_related("author")
    if not _reads_earlier_versions(user, submission):
        reviews = reviews.none()
        comments = comments.filter(author_id__in=[user.pk, submission.author_id])
    reviews = list(reviews.annotate(version=version))
    comments = list(comments.annotate(version=version))
    titles = _finding_titles_of_runs({x.run_id for x in [*reviews, *comments]})
    review_rows = _by_version(
        {"review": r, "evidence": [titles[r.run_id].get(e, e) for e in r.evidence]} for r in reviews
    )
    comment_rows = _by_version(
        {"comment": c, "finding": titles[c.run_id].get(c.finding, c.finding)} for c in comments
    )
    for row in rows:
        row["reviews"] = review_rows.get(row["number"], [])
        row["comments"] = comment_rows.get(row["number"], [])
    return rows


def _reads_earlier_versions(user: AbstractBaseUser, submission: Submission) -> bool:
    if submission.author_id == user.pk:
        return True
    return bool(user_roles(user) & {Role.CHECKER, Role.TRE_ADMIN})


def _finding_titles_of_runs(run_ids: set[int]) -> dict[int, dict[str, str]]:
    """Each run's finding titles, read from its report, for the names people read."""
    runs = AuditRun.objects.filter(id__in=run_ids).only("report")
    return {run.id: finding_titles(run.report) for run in runs}


def _by_version(rows) -> dict[int, list[dict]]:
    """Rows of reviews or comments grouped by the version their audit is of."""
    grouped: dict[int, list[dict]] = {}
    for row in rows:
        item = row.get("review") or row["comment"]
        grouped.setdefault(item.version, []).append(row)
    return grouped


def changes_requested_for(*, user: AbstractBaseUser, submission: Submission) -> Review | None:
    """The review that asked for changes, for the author to read first on the page; None
    for anyone else, and once the request is no longer waiting for them."""
    if submission.author_id != user.pk or submission.status != Status.CHANGES_REQUESTED:
        return None
    return (
        Review.objects.filter(run=current_run(submission), decision=Decision.REQUEST_CHANGES)
        .select_related("reviewer")
        .order_by("-created_at")
        .first()
    )


def comment_list_visible_to(*, user: AbstractBaseUser, submission: Submission) -> list[Comment]:
    """Comments on the current audit, under the same independence rule as reviews.

    A checker who has not yet reviewed sees only their own comments and the
    author's answers, so no other checker's opinion reaches them first.
    """
    comments = Comment.objects.filter(run=current_run(submission)).select_related("author")
    if user_has_role(user, Role.TRE_ADMIN) or submission.author_id == user.pk:
        return list(comments)
    if Review.objects.filter(run=current_run(submission), reviewer=user).exists():
        return list(comments)
    return [c for c in comments if c.author_id in (user.pk, submission.author_id)]


def review_queue_for(*, user: AbstractBaseUser) -> list[dict]:
    """Requests awaiting review that ``user`` may review now, oldest first, with their risk.

    No row says how many reviews a request already has: any decision but an
    approval takes it out of the queue, so a count would tell the checker the
    other checker's decision before they make their own.
    """
    return list(review_queue_rows(user=user))


#: The queue's filters: each form field and the lookup it narrows by.
QUEUE_FILTERS = {
    "q": lambda value: search_q(value, title="title", number="pk"),
    "risk": "current_risk",
    "author": "author__username__iexact",
    "project": "project__name__iexact",
    "since": "updated_at__date__gte",
    "until": "updated_at__date__lte",
}
#: The queue's sortable columns ("date": waiting since).
QUEUE_SORTS = {"date": "updated_at", "risk": risk_rank("current_risk"), "title": "title"}


def review_queue_rows(
    *, user: AbstractBaseUser, filters: dict | None = None, sort: str = "date"
) -> Rows:
    """The queue of ``review_queue_for``, narrowed by ``filters`` (the queue form's values,
    ``claim``: "unclaimed" or "mine") and sorted; lazy, so a page reads only its rows.

    A fixed handful of queries whatever the queue's length: the page is polled by
    every checker.
    """
    if not user_has_role(user, Role.CHECKER):
        return Rows(Submission.objects.none(), _queue_row)
    mine = Review.objects.filter(run_id=OuterRef("current_run_id"), reviewer=user)
    waiting = (
        with_current_run(Submission.objects.filter(status=Status.AWAITING_REVIEW))
        .exclude(author=user)
        .filter(current_run_id__isnull=False)
        .exclude(Exists(mine))
        .select_related("author", "project", "claimed_by")
    )
    filters = dict(filters or {})
    waiting = _claim_filter(waiting, claim=filters.pop("claim", ""), user=user)
    waiting = listing_filter(waiting, filters=filters, fields=QUEUE_FILTERS)
    ordering = listing_order(sort, columns=QUEUE_SORTS) or ["updated_at", "pk"]
    return Rows(waiting.order_by(*ordering), _queue_row)


def _claim_filter(waiting, *, claim: str, user: AbstractBaseUser):
    if claim == "unclaimed":
        return waiting.filter(claimed_by__isnull=True)
    if claim == "mine":
        return waiting.filter(claimed_by=user)
    return waiting


def _queue_row(submission: Submission) -> dict:
    return {
        "submission": submission,
        "risk": submission.current_risk or None,
        "waiting_since": submission.updated_at,
        "claimed_by": submission.claimed_by.get_username() if submission.claimed_by else "",
        "claimed_at": submission.claimed_at,
    }


# The request's own trail ------------------------------------------------------------------

#: Entries of a request shown on its page, newest first; the rest are in the audit log.
TRAIL_LIMIT = 20
#: Actions that tell a checker's opinion (a sign-off tells of an approval), hidden from a
#: checker who has not yet reviewed.
OPINIONS = (
    AuditAction.REVIEW_APPROVE,
    AuditAction.REVIEW_REQUEST_CHANGES,
    AuditAction.REVIEW_REJECT,
    AuditAction.COMMENT,
    AuditAction.SIGN_OFF,
)


def audit_trail_visible_to(
    *, user: AbstractBaseUser, submission: Submission, limit: int = TRAIL_LIMIT
) -> dict | None:
    """The request's audit entries in words, newest first, for its author, checkers and
    admins (None for anyone else); at most ``limit``, with how many there are in all.

    Under the independence rule of the reviews, a checker who has not reviewed the
    current audit sees no other checker's review or comment entry.
    """
    is_admin = user_has_role(user, Role.TRE_ADMIN)
    if not (is_admin or submission.author_id == user.pk or user_has_role(user, Role.CHECKER)):
        return None
    entries = AuditEntry.objects.filter(submission=submission)
    if not (is_admin or submission.author_id == user.pk or _has_reviewed(user, submission)):
        entries = entries.exclude(Q(action__in=OPINIONS) & ~Q(actor=user))
    count = entries.count()
    shown = entries.select_related("actor").order_by("-id")[:limit]
    return {
        "entries": [_trail_row(entry) for entry in shown],
        "count": count,
        "log_url": f"{reverse('dashboard:audit_log')}?request={submission.pk}" if is_admin else "",
    }


def _has_reviewed(user: AbstractBaseUser, submission: Submission) -> bool:
    return Review.objects.filter(run=current_run(submission), reviewer=user).exists()


def _trail_row(entry: AuditEntry) -> dict:
    what = audit_action_text(entry.action)
    if entry.action == AuditAction.STATUS and entry.after in Status.values:
        before = Status(entry.before).label if entry.before in Status.values else "new"
        what = f"moved the request from {before.lower()} to {Status(entry.after).label.lower()}"
    return {
        "id": entry.id,
        "who": entry.actor.get_username() if entry.actor else "The service",
        "what": what,
        "reason": entry.reason,
        "at": entry.created_at,
    }
