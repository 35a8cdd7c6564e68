"""What reviews a user may see."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser

from tre_audit.reviews.enums import Role
from tre_audit.reviews.models import Review
from tre_audit.reviews.services import current_run, user_has_role
from tre_audit.submissions.models import Submission


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
