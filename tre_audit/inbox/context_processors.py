"""The header's unread count on every page."""

from tre_audit.inbox.selectors import notification_unread_count


def inbox(request):
    if not request.user.is_authenticated:
        return {}
    return {"inbox_unread": notification_unread_count(user=request.user)}
