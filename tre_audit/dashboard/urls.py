from django.urls import path

from tre_audit.dashboard import views

app_name = "dashboard"
urlpatterns = [
    path("", views.index, name="index"),
    path("sign-offs/<int:review_id>/", views.sign_off, name="sign_off"),
    path("audit-log/", views.audit_log, name="audit_log"),
    path("audit-log/export.<str:fmt>", views.audit_log_export, name="audit_log_export"),
    path("runs/", views.runs, name="runs"),
    path("users/", views.users, name="users"),
    path("users/new/", views.user_new, name="user_new"),
    path("users/<int:user_id>/roles/", views.user_roles, name="user_roles"),
    path("policy/", views.policy, name="policy"),
    path("policy/new/", views.policy_new, name="policy_new"),
]
