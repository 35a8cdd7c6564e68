from django.urls import path

from tre_audit.inbox import api

urlpatterns = [
    path("inbox/", api.InboxListView.as_view(), name="api-inbox"),
    path("inbox/read/", api.InboxReadView.as_view(), name="api-inbox-read"),
    path(
        "inbox/<int:notification_id>/read/",
        api.NotificationReadView.as_view(),
        name="api-notification-read",
    ),
]
