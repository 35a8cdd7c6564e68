"""Domain errors of the safe_model library.

Every error carries one sentence that can be shown as it is: no traceback
text and no record values.
"""


class ModelRefused(ValueError):
    """An uploaded model was refused, or it crashed, hung or overran its sandbox."""
