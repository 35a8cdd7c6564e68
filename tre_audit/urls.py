from django.contrib import admin
from django.urls import include, path

from tre_audit.accounts import PasswordResetView
from tre_audit.submissions import views as submission_views

urlpatterns = [
    path("", submission_views.home, name="home"),
    path("accounts/password_reset/", PasswordResetView.as_view(), name="password_reset"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("requests/", include("tre_audit.submissions.urls")),
    path("review/", include("tre_audit.reviews.urls")),
    path("dashboard/", include("tre_audit.dashboard.urls")),
    path("endpoints/", include("tre_audit.serving.web_urls")),
    path("inbox/", include("tre_audit.inbox.urls")),
    path("api/", include("tre_audit.api.urls")),
    path("django-admin/", admin.site.urls),
]

handler500 = "tre_audit.api.exceptions.server_error"
