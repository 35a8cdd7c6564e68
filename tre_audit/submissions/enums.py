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
    """What a stored file of a request is. A version holds one file per role; the
    declaration is optional (an ONNX model's architecture and training recipe)."""

    MODEL = "model", "Model"
    DECLARATION = "declaration", "Declared architecture and training recipe"
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


class AuditAction(models.TextChoices):
    """What an audit entry records: the stored string, and what it says to a person.

    Reviews are stored as ``review:<decision>`` and endpoint events as
    ``endpoint:<event>``; those strings are kept as they were first written.
    """

    SUBMITTED = "submitted", "submitted the request"
    STATUS = "status", "changed the status"
    REVIEW_APPROVE = "review:approve", "approved"
    REVIEW_REQUEST_CHANGES = "review:request_changes", "asked for changes"
    REVIEW_REJECT = "review:reject", "rejected"
    SIGN_OFF = "sign-off", "signed off a high-risk approval"
    COMMENT = "comment", "commented"
    CLAIM = "claim", "took the review on"
    UNCLAIM = "unclaim", "released the review claim"
    ROLES = "roles", "changed a user's roles"
    USER_CREATED = "user-created", "created a user"
    POLICY = "policy", "saved a risk policy version"
    LOG_EXPORT = "log-export", "exported the audit log"
    ENDPOINT_DEPLOY = "endpoint:deploy", "deployed a secure endpoint"
    ENDPOINT_GRANT = "endpoint:grant", "let a user call an endpoint"
    ENDPOINT_REVOKE = "endpoint:revoke", "stopped a user calling an endpoint"
    ENDPOINT_STOP = "endpoint:stop", "stopped an endpoint"
    ENDPOINT_FAILED = "endpoint:failed", "an endpoint failed"
    ENDPOINT_EVALUATE = "endpoint:evaluate", "called the encrypted endpoint"
    ENDPOINT_RUN = "endpoint:run", "called the enclave endpoint"
    ENDPOINT_MPC_OPEN = "endpoint:mpc-open", "opened a secure-inference session"
    ENDPOINT_PREDICT = "endpoint:predict", "called the secure-inference endpoint"
    ENDPOINT_MPC_FAILED = "endpoint:mpc-failed", "a secure-inference session failed"


def audit_action_text(action: str) -> str:
    """An entry's action in words; an action no enum member names is shown as stored."""
    try:
        return AuditAction(action).label
    except ValueError:
        return action
