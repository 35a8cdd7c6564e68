from csp.constants import UNSAFE_INLINE
from csp.decorators import csp_update
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView

from tre_audit.api import views

R = "requests/<int:submission_id>/"  # one request

v1 = [
    path("token/", views.TokenView.as_view(), name="api-token"),
    path("token/logout/", views.TokenLogoutView.as_view(), name="api-token-logout"),
    path("requests/", views.RequestListView.as_view(), name="api-request-list"),
    path(R, views.RequestDetailView.as_view(), name="api-request-detail"),
    path(f"{R}report.json", views.ReportJsonView.as_view(), name="api-report-json"),
    path(f"{R}report.pdf", views.ReportPdfView.as_view(), name="api-report-pdf"),
    path(f"{R}versions/", views.NewVersionView.as_view(), name="api-new-version"),
    path(f"{R}withdraw/", views.WithdrawView.as_view(), name="api-withdraw"),
    path(f"{R}retry/", views.RetryView.as_view(), name="api-retry"),
    path(f"{R}reviews/", views.ReviewCreateView.as_view(), name="api-review-create"),
    path(f"{R}reviews/<int:review_id>/sign-off/", views.SignOffView.as_view(), name="api-sign-off"),
    path(f"{R}release/", views.ReleaseView.as_view(), name="api-release"),
    path(f"{R}bundle.zip", views.BundleView.as_view(), name="api-bundle"),
    path("queue/", views.QueueView.as_view(), name="api-queue"),
]

#: Redoc (served locally) starts from an inline script, styles its page inline and
#: renders in a blob worker: allowed on this one page only.
_redoc = csp_update(
    {"script-src": [UNSAFE_INLINE], "style-src": [UNSAFE_INLINE], "worker-src": ["blob:"]}
)(SpectacularRedocView.as_view(url_name="api-schema"))

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", _redoc, name="api-docs"),
    path("v1/", include(v1)),
    path("v1/", include("tre_audit.serving.urls")),
    path("v1/", include("tre_audit.inbox.api_urls")),
]
