from django.urls import path

from tre_audit.serving import views

app_name = "serving"
urlpatterns = [
    path("requests/<int:submission_id>/deploy/", views.endpoint_deploy, name="deploy"),
    path(
        "requests/<int:submission_id>/enclave-root.pem",
        views.enclave_root_certificate,
        name="root_certificate",
    ),
    path("<int:endpoint_id>/stop/", views.endpoint_stop, name="stop"),
    path("<int:endpoint_id>/callers/", views.endpoint_callers, name="callers"),
]
