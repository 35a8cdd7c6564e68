"""The Celery app: Redis broker, settings from Django with the CELERY_ prefix."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tre_audit.settings")

app = Celery("tre_audit")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
