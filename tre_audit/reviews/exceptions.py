"""Domain errors of the reviews app."""


class ReviewNotAllowed(Exception):
    """This user may not review this request now; the message says why."""


class ReviewInvalid(Exception):
    """The review itself is incomplete (a missing reason, comment or justification)."""
