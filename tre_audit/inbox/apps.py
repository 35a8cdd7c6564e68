from django.apps import AppConfig


class InboxConfig(AppConfig):
    name = "tre_audit.inbox"
    verbose_name = "Notifications"
