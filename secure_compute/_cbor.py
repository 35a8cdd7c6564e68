"""Strict CBOR decoding of untrusted bytes, shared by attestation and sealing.

cbor2 already bounds what a hostile length prefix can allocate (it reads
before it allocates) and caps nesting. On top of that this decoder refuses
indefinite-length items, duplicate map keys and trailing bytes, so one byte
string has one meaning.
"""

from __future__ import annotations

import io
from typing import Any

import cbor2


def cbor_loads_strict(data: bytes, *, max_depth: int, what: str, error: type[Exception]) -> Any:
    """Decode exactly one CBOR value from untrusted bytes.

    Parameters
    ----------
    data : bytes
        Encoded value; nothing may follow it.
    max_depth : int
        Deepest nesting of arrays and maps accepted.
    what : str
        Name of the object for the refusal sentence, e.g. ``"sealed request"``.
    error : type of Exception
        Domain error to raise, called with one sentence.

    Returns
    -------
    value : object
        The decoded value; callers check its shape and types.

    Raises
    ------
    error
        If the bytes are not one well-formed, definite-length CBOR value
        without duplicate map keys.
    """
    stream = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(
        stream, max_depth=max_depth, allow_indefinite=False, allow_duplicate_keys=False
    )
    try:
        value = decoder.decode()
    # Hostile input may reach any of cbor2's semantic tag decoders (dates,
    # decimals, MIME, regular expressions), each with its own exceptions; all
    # of them mean "not a value we accept", never a crash.
    except Exception:  # noqa: BLE001
        raise error(f"The {what} is not well-formed CBOR.") from None
    if stream.tell() != len(data):
        raise error(f"The {what} has bytes after its CBOR value.")
    return value
