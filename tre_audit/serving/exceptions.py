"""Domain errors of secure serving; the API turns them into 4xx."""

from tre_audit.submissions.exceptions import NotAllowed, SubmissionError


class ServingError(SubmissionError):
    """The endpoint cannot be deployed or called as asked; the message says why."""


class ServingNotAllowed(NotAllowed):
    """The user may not deploy, stop or call this endpoint (shown as 404 or 403)."""


class BudgetSpent(ServingError):
    """The caller's query budget for today is spent (HTTP 429, with ``Retry-After``)."""

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after
