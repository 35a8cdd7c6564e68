from django.apps import AppConfig


class ReviewsConfig(AppConfig):
    name = "tre_audit.reviews"
    verbose_name = "Output checking"
