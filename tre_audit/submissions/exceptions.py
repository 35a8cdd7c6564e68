"""Domain errors of the submissions app; views turn them into 400/403."""


class SubmissionError(Exception):
    """Base class: a sentence a user can read."""


class InvalidTransition(SubmissionError):
    """A status change the state machine does not allow."""


class UploadRefused(SubmissionError):
    """An uploaded file was refused (size, type or content)."""


class NotAllowed(SubmissionError):
    """The user may not do this to this request."""


class AuditLogBroken(SubmissionError):
    """The audit log failed verification: nothing more is recorded until it is restored."""
