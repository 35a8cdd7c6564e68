from django.apps import AppConfig


class SubmissionsConfig(AppConfig):
    name = "tre_audit.submissions"
    verbose_name = "Release requests"

    def ready(self) -> None:
        # Make our Celery app (Redis broker) the one .delay() uses in web processes.
        from tre_audit import celery  # noqa: F401
