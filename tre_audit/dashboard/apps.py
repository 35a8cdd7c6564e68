from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "tre_audit.dashboard"
    verbose_name = "Admin dashboard"
