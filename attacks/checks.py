"""The numbers an audit is run with, checked before anything runs.

Light on purpose (no NumPy): the CLI refuses a bad ``--seed`` or ``--jobs`` with these
sentences before it reads a file or loads the audit.
"""

from __future__ import annotations

import numbers

from attacks.exceptions import AuditError

#: The data files an audit reads (attacks.intake, attacks.images), as every interface
#: names them to people: the CLI's help, the upload form and the API's schema.
DATA_FORMATS = "CSV, Parquet, a zip of PNG/JPEG images with labels.csv, or an .npz"

#: The largest seed: NumPy's RandomState takes 0 to 2**32 - 1.
MAX_SEED = 2**32 - 1


def check_whole_number(what: str, value, *, low: int, high: int | None = None) -> None:
    """AuditError unless ``value`` is a whole number from ``low`` (to ``high``).

    Parameters
    ----------
    what : str
        The number's name in the sentence, such as ``"The seed"``.
    value : object
    low : int
    high : int, optional
    """
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if whole and low <= value and (high is None or value <= high):
        return
    limits = f"of at least {low}" if high is None else f"from {low} to {high}"
    raise AuditError(f"{what} must be a whole number {limits}, not {value}.")


def audit_numbers_check(
    *, random_state, n_shadow_models=None, n_jobs=None, n_sweep_shadow_models=4
) -> None:
    """AuditError for a number no audit can run with (``AuditConfig`` calls this).

    Parameters
    ----------
    random_state : int
    n_shadow_models : int or None, default=None
    n_jobs : int or None, default=None
    n_sweep_shadow_models : int, default=4
        At least 2: the sweep's attack needs two.
    """
    check_whole_number("The seed", random_state, low=0, high=MAX_SEED)
    for what, value in (("shadow models", n_shadow_models), ("jobs", n_jobs)):
        if value is not None:
            check_whole_number(f"The number of {what}", value, low=1)
    check_whole_number("The number of sweep shadow models", n_sweep_shadow_models, low=2)
