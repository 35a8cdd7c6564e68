from django.db import models


class Status(models.TextChoices):
    """Where a release request stands. Changes only through ``submission_set_status``."""

    SUBMITTED = "submitted", "Submitted"
    AUDITING = "auditing", "Auditing"
    AUDIT_FAILED = "audit_failed", "Audit failed"
    AWAITING_REVIEW = "awaiting_review", "Awaiting review"
    CHANGES_REQUESTED = "changes_requested", "Changes requested"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    WITHDRAWN = "withdrawn", "Withdrawn"
    RELEASED = "released", "Released"


class FileRole(models.TextChoices):
    MODEL = "model", "Model"
    TRAIN = "train", "Training set"
    TEST = "test", "Held-out set"
    REPORT_PDF = "report_pdf", "Report (PDF)"


class Hosting(models.TextChoices):
    """Where an approved model will live: it decides how it may leave."""

    PUBLIC_FILE = "public_file", "Published as a file"
    ANOTHER_TRE = "another_tre", "Moved to another TRE"
    QUERY_ONLY = "query_only", "Behind a query-only service"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
