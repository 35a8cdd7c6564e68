"""What every page needs to draw its navigation: the signed-in user's roles."""

from tre_audit.reviews.enums import Role
from tre_audit.submissions.selectors import user_roles


def roles(request):
    user = getattr(request, "user", None)  # absent on a 400 refused before the middleware
    mine = user_roles(user) if user is not None else set()
    return {
        "is_researcher": Role.RESEARCHER in mine,
        "is_checker": Role.CHECKER in mine,
        "is_tre_admin": Role.TRE_ADMIN in mine,
    }
