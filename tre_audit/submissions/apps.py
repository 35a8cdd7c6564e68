from django.apps import AppConfig


class SubmissionsConfig(AppConfig):
    name = "tre_audit.submissions"
    verbose_name = "Release requests"
