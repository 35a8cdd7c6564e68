from django.urls import path

from tre_audit.submissions import views

app_name = "submissions"
urlpatterns = [
    path("", views.submission_list, name="list"),
    path("new/", views.submission_create, name="create"),
    path("declaration-format/", views.declaration_format, name="declaration_format"),
    path("<int:submission_id>/", views.submission_detail, name="detail"),
    path("<int:submission_id>/progress/", views.submission_progress, name="progress"),
    path("<int:submission_id>/report.pdf", views.report_pdf, name="report_pdf"),
    path("<int:submission_id>/report.json", views.report_json, name="report_json"),
    path("<int:submission_id>/versions/", views.submission_compare, name="compare"),
    path("<int:submission_id>/versions/new/", views.submission_new_version, name="new_version"),
    path("<int:submission_id>/withdraw/", views.submission_withdraw, name="withdraw"),
    path("<int:submission_id>/retry/", views.audit_run_retry, name="retry"),
    path("<int:submission_id>/release.zip", views.release_bundle, name="bundle"),
    path("runs/<int:run_id>/stop/", views.audit_run_stop, name="stop"),
    path(
        "<int:submission_id>/record-queries/",
        views.record_query_create,
        name="record_query_create",
    ),
    path(
        "<int:submission_id>/record-queries/<int:query_id>/",
        views.record_query_status,
        name="record_query_status",
    ),
    path(
        "<int:submission_id>/record-queries/<int:query_id>/values/",
        views.record_query_values,
        name="record_query_values",
    ),
]
