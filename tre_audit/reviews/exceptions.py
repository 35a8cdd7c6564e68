"""Domain errors of the reviews app."""


class ReviewNotAllowed(Exception):
    """This user may not review this request now; the message says why."""


class ReviewInvalid(Exception):
    """The review itself is incomplete (a missing reason, comment or justification).

    ``field`` names the form field the sentence is about, so a page can say it there.
    """

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field
