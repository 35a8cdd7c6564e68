"""What reviews a user may see."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser

from tre_audit.reviews.enums import Role
from tre_audit.reviews.models import Comment, Review
from tre_audit.reviews.services import current_run, user_has_role
from tre_audit.submissions.enums import Status
from tre_audit.submissions.models import Submission
from tre_audit.submissions.selectors import current_runs


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
