"""The header's unread count on every page."""

from tre_audit.inbox.selectors import notification_unread_count


def inbox(request):
    user = getattr(request, "user", None)  # none on a request refused before authentication
    if user is None or not user.is_authenticated:
        return {}
    return {"inbox_unread": notification_unread_count(user=request.user)}
