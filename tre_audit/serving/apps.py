from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "tre_audit.serving"
    verbose_name = "Secure serving"
