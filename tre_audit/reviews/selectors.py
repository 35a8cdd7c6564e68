"""What reviews a user may see."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import F

from tre_audit.reviews.enums import Decision, Role
from tre_audit.reviews.models import Comment, Review
from tre_audit.reviews.services import current_run, user_has_role
from tre_audit.submissions.enums import Status
from tre_audit.submissions.models import AuditRun, Submission
from tre_audit.submissions.selectors import (
    current_runs,
    finding_titles,
    user_roles,
    version_rows,
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

    A fixed handful of queries whatever the queue's length: the page is polled by
    every checker.
    """
    if not user_has_role(user, Role.CHECKER):
        return []
    waiting = list(
        Submission.objects.filter(status=Status.AWAITING_REVIEW)
        .exclude(author=user)
        .select_related("author", "project")
        .order_by("updated_at")
    )
    runs = current_runs(waiting)
    mine = set(
        Review.objects.filter(run__in=runs.values(), reviewer=user).values_list("run_id", flat=True)
    )
    return [
        {
            "submission": s,
            "risk": runs[s.pk].risk,
            "waiting_since": s.updated_at,
        }
        for s in waiting
        if s.pk in runs and runs[s.pk].id not in mine
    ]
