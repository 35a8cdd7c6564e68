"""Wording of refusals, shared by every library that reads untrusted uploads.

A refusal is one sentence shown to a researcher as it is, so names and
exception texts quoted in it are made printable and capped in length, and
record values are never quoted at all.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from safe_model.redact import exception_summary

#: Most names and values quoted in one refusal sentence.
MAX_QUOTED = 5


def checked_bytes(data: Any, *, max_bytes: int, what: str, error: type[Exception]) -> bytes:
    """Return an upload as bytes, or raise ``error`` if it is not bytes, empty or too large.

    Parameters
    ----------
    data : object
        The upload as received.
    max_bytes : int
        Largest accepted size.
    what : str
        What the upload is ("model file"), for the sentence.
    error : type of Exception
        The caller's domain error, raised with one sentence.

    Returns
    -------
    bytes
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise error(f"The {what} must be given as bytes.")
    data = bytes(data)
    if not data:
        raise error(f"The {what} is empty.")
    if len(data) > max_bytes:
        raise error(f"The {what} is larger than the limit of {size(max_bytes)}.")
    return data


def repeated(names: Iterable[str]) -> list[str]:
    """Names that occur more than once, sorted, in time linear in their number.

    Parameters
    ----------
    names : iterable of str

    Returns
    -------
    list of str
    """
    return sorted(name for name, n in Counter(names).items() if n > 1)


def quote(value: Any, limit: int = 60) -> str:
    """One-line, length-capped quotation of a name for a refusal sentence.

    Parameters
    ----------
    value : object
    limit : int, default=60
        Most characters shown; longer text ends in "...".

    Returns
    -------
    str
    """
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value)[: limit + 1])
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"'{text}'"


def quote_all(values: Iterable[Any]) -> str:
    """Quote at most :data:`MAX_QUOTED` values, then say how many more there are.

    Parameters
    ----------
    values : iterable

    Returns
    -------
    str
    """
    values = list(values)
    shown = ", ".join(quote(value) for value in values[:MAX_QUOTED])
    hidden = len(values) - MAX_QUOTED
    return f"{shown} and {hidden} more" if hidden > 0 else shown


def reason(exc: BaseException) -> str:
    """An exception's type and message, its data values taken out, for a sentence's end.

    Parameters
    ----------
    exc : BaseException

    Returns
    -------
    str
    """
    return quote(exception_summary(exc), limit=160)[1:-1].rstrip(".")


def size(n_bytes: int) -> str:
    """A byte count in the largest binary unit that fits ("1.5 GiB").

    Parameters
    ----------
    n_bytes : int

    Returns
    -------
    str
    """
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:g} {unit}"
    return f"{n_bytes} bytes"


class _Repeated(ValueError):
    """JSON keys that occur twice in one object (``args[0]``: their names)."""


class _Constant(ValueError):
    """NaN or Infinity, which Python's json accepts and JSON does not."""


def strict_json(data: Any, *, what: str, max_bytes: int, error: type[Exception]) -> Any:
    """Decode an untrusted UTF-8 JSON upload, or raise ``error`` with one sentence.

    Refuses what ``json.loads`` lets through on its own: a repeated key (the later
    would silently win, so a reviewer reading the file could see another value
    than the one used), NaN and Infinity, and nesting deep enough to exhaust the
    stack.

    Parameters
    ----------
    data : bytes or str
        The upload as received.
    what : str
        What the upload is ("declaration"), for the sentence.
    max_bytes : int
        Largest accepted size, checked before anything is parsed.
    error : type of Exception
        The caller's domain error.

    Returns
    -------
    object
        The decoded JSON value.
    """
    data = data.encode("utf-8") if isinstance(data, str) else data
    data = checked_bytes(data, max_bytes=max_bytes, what=what, error=error)
    try:
        return json.loads(
            data.decode("utf-8-sig"), object_pairs_hook=_unique_pairs, parse_constant=_constant
        )
    except _Repeated as exc:
        raise error(f"The {what} repeats the key(s) {quote_all(exc.args[0])}.") from None
    except _Constant:
        raise error(f"The {what} holds NaN or Infinity, which JSON does not allow.") from None
    except UnicodeDecodeError:
        raise error(f"The {what} is not UTF-8 text.") from None
    except json.JSONDecodeError as exc:
        raise error(
            f"The {what} is not valid JSON (line {exc.lineno}, column {exc.colno})."
        ) from None
    except (ValueError, RecursionError):
        raise error(f"The {what} is not valid JSON.") from None


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict:
    duplicates = repeated(key for key, _ in pairs)
    if duplicates:
        raise _Repeated(duplicates)
    return dict(pairs)


def _constant(name: str) -> Any:
    raise _Constant(name)
