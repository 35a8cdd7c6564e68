"""Exception messages with the data taken out, for failure reasons and logs.

A model that fails on a record often names the record in its message (scikit-learn's
``Found unknown categories ['PATIENT-Jane-Doe-1961-03-02'] in column 0``). What such
an error says is worth keeping; the values it quotes must not reach a report or a log.
"""

from __future__ import annotations

import re

#: Shown instead of anything that may be a value from the data.
PLACEHOLDER = "<value>"
#: A message is cut to this many characters: a long one is mostly data.
MAX_CHARS = 300

_PATTERNS = (
    re.compile(r"\[[^\]]*\]"),  # list and array contents: [...] is a list of values
    re.compile(r"\{[^}]*\}"),  # dict and set contents
    re.compile(r"""[bBrRuU]?('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""),  # quoted text
    re.compile(r"[-+]?\d+(?:[-/:.,]\d+)+(?:[eE][-+]?\d+)?"),  # decimals, dates, times
    re.compile(r"[-+]?\d+[eE][-+]?\d+|\d{4,}"),  # exponents; long integers (ids, years)
    # long tokens with a digit or a symbol (ids, hashes, paths; not class names)
    re.compile(r"""(?=[^\s\[\](){},;:'"]*[^\sA-Za-z_\[\](){},;:'"])[^\s\[\](){},;:'"]{16,}"""),
)


def redact(text: str) -> str:
    """``text`` on one line with quoted text, bracketed lists, numbers and long tokens
    replaced by ``<value>``.

    Small integers (column indices, counts such as "5 features") are kept: they say
    what went wrong and are rarely a record's value.

    Parameters
    ----------
    text : str
        An exception's message, or any text about to be logged or shown.

    Returns
    -------
    str
        At most :data:`MAX_CHARS` characters.
    """
    text = " ".join(str(text).split())
    for pattern in _PATTERNS:
        text = pattern.sub(lambda match: _placeholder(match.group(0)), text)
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"


def _placeholder(found: str) -> str:
    if found.startswith("[") and found.endswith("]"):
        return f"[{PLACEHOLDER}]"
    if found.startswith("{") and found.endswith("}"):
        return f"{{{PLACEHOLDER}}}"
    return PLACEHOLDER


def exception_summary(exc: BaseException) -> str:
    """The exception's type and its redacted message: ``"ValueError: Found ... [<value>]"``.

    Parameters
    ----------
    exc : BaseException

    Returns
    -------
    str
    """
    message = redact(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
