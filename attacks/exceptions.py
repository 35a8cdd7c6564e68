"""Domain errors of the attacks library.

Every error carries one sentence that can be shown to a researcher as it is:
no traceback, no raw record values.
"""


class AuditError(Exception):
    """Base class of every error the attacks library raises on purpose."""


class IntakeError(AuditError, ValueError):
    """A submitted model, data file or record was refused."""


class PolicyError(AuditError, ValueError):
    """A risk policy file is malformed or holds an out-of-range threshold."""


class AttackError(AuditError, RuntimeError):
    """An attack could not run on this target (for example too few records)."""
