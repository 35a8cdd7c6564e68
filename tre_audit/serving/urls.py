from django.urls import path

from tre_audit.serving import api

E = "endpoints/<int:endpoint_id>/"
urlpatterns = [
    path("endpoints/", api.EndpointListView.as_view(), name="api-endpoint-list"),
    path(E, api.EndpointDetailView.as_view(), name="api-endpoint-detail"),
    path(f"{E}stop/", api.EndpointStopView.as_view(), name="api-endpoint-stop"),
    path(f"{E}callers/", api.EndpointCallersView.as_view(), name="api-endpoint-callers"),
    path(f"{E}he/info", api.HEModelInfoView.as_view(), name="api-he-info"),
    path(f"{E}he/evaluate", api.HEEvaluateView.as_view(), name="api-he-evaluate"),
    path(f"{E}attestation", api.AttestationView.as_view(), name="api-enclave-attestation"),
    path(f"{E}run", api.EnclaveRunView.as_view(), name="api-enclave-run"),
    path(f"{E}mpc/info", api.MPCModelInfoView.as_view(), name="api-mpc-info"),
    path(f"{E}mpc/sessions", api.MPCSessionOpenView.as_view(), name="api-mpc-sessions"),
    path(
        f"{E}mpc/sessions/<str:session>/close",
        api.MPCSessionCloseView.as_view(),
        name="api-mpc-session-close",
    ),
]
