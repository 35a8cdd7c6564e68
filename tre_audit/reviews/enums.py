from django.db import models


class Role(models.TextChoices):
    """The three roles, as Django groups."""

    RESEARCHER = "researcher", "Researcher"
    CHECKER = "checker", "Output checker"
    TRE_ADMIN = "tre_admin", "TRE admin"


class Decision(models.TextChoices):
    APPROVE = "approve", "Approve"
    REQUEST_CHANGES = "request_changes", "Request changes"
    REJECT = "reject", "Reject"


class ReleaseCondition(models.TextChoices):
    """How an approved model may leave the TRE."""

    AS_FILE = "as_file", "As a file"
    ENDPOINT_ONLY = "endpoint_only", "Only behind a secure endpoint (never as weights)"
