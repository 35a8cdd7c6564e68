from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "tre_audit.api"
    label = "tre_audit_api"
    verbose_name = "REST API"

    def ready(self) -> None:
        from tre_audit.api import signals  # noqa: F401  (connects the receivers)
