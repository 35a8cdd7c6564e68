"""Domain errors of secure serving; the API turns them into 4xx."""

from tre_audit.submissions.exceptions import NotAllowed, SubmissionError


class ServingError(SubmissionError):
    """The endpoint cannot be deployed or called as asked; the message says why."""


class ServingNotAllowed(NotAllowed):
    """The user may not deploy, stop or call this endpoint (shown as 404 or 403)."""
