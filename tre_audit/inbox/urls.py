from django.urls import path

from tre_audit.inbox import views

app_name = "inbox"
urlpatterns = [
    path("", views.inbox_list, name="list"),
    path("<int:notification_id>/", views.inbox_open, name="open"),
    path("read/", views.inbox_mark_all_read, name="read-all"),
]
