"""Data-only encoding of what crosses the sandbox boundary (private to ``safe_model.sandbox``).

Values are CBOR: ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``,
lists, tuples (read back as lists), dicts with ``str`` or ``int`` keys, and
numpy arrays of a numeric, boolean or fixed-width string dtype, sent as
(dtype, shape, bytes) under one private tag. A sandboxed child may be running
attacker-influenced native code, so what it sends is read as data only: every
other CBOR tag is refused (no dates, regular expressions, MIME messages or
shared references are built from it), the decoded tree is checked for types,
depth and repeated containers, and each array's byte count must match its
shape and item size. Nothing here ever unpickles.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import cbor2
import numpy as np

#: A private tag (unassigned by IANA); only this module writes or reads it.
ARRAY_TAG = 0x73616E64  # "sand"

#: Array dtypes that may cross: numbers, booleans and fixed-width strings
#: (class labels), all plain bytes without pointers. Little-endian on the wire.
_DTYPES = frozenset(
    ["|b1", "|i1", "|u1"]
    + [f"<{kind}{size}" for kind in "iu" for size in (2, 4, 8)]
    + ["<f2", "<f4", "<f8", "<c8", "<c16"]
)
_STRING_DTYPE = re.compile(r"^(<U|\|S)[1-9][0-9]{0,5}$")
MAX_DIMENSIONS = 32
MAX_DEPTH = 64  # containers within containers; cbor2 stops at 400 before we look


class WireError(ValueError):
    """What was received is not a value this module writes."""


def encode(value: Any) -> bytes:
    """Encode ``value`` as CBOR, numpy arrays and scalars included (``WireError`` if it can't)."""
    try:
        return cbor2.dumps(value, default=_encode_other)
    except WireError:
        raise
    except (cbor2.CBOREncodeError, TypeError, ValueError, RecursionError) as exc:
        raise WireError(f"cannot encode a {type(exc).__name__}") from None


def decode(data: bytes | bytearray) -> Any:
    """Decode what :func:`encode` wrote; anything else raises ``WireError``."""
    try:
        value = cbor2.loads(data, semantic_decoders=_OnlyArrays(), max_depth=MAX_DEPTH + 1)
    except (cbor2.CBORDecodeError, ValueError, TypeError, MemoryError, RecursionError):
        raise WireError("not a value this sandbox writes") from None
    _check_tree(value)
    return value


def _encode_other(encoder: cbor2.CBOREncoder, value: Any) -> None:
    if isinstance(value, np.ndarray):
        encoder.encode(cbor2.CBORTag(ARRAY_TAG, _array_parts(value)))
    elif isinstance(value, np.generic) and value.dtype.kind in "biufcUS":
        encoder.encode(value.item())
    else:
        raise WireError(f"cannot encode a {type(value).__name__}")


def _array_parts(array: np.ndarray) -> list:
    little = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    array = np.ascontiguousarray(array, dtype=little)
    if array.dtype.str not in _DTYPES and not _STRING_DTYPE.match(array.dtype.str):
        raise WireError(f"cannot encode an array of dtype {array.dtype.str}")
    return [array.dtype.str, list(array.shape), array.tobytes()]


class _OnlyArrays(Mapping):
    """cbor2's semantic decoders: our array tag, and a refusal for every other tag."""

    def __getitem__(self, tag: int):
        return _decode_array if tag == ARRAY_TAG else _refuse_tag

    def __iter__(self):
        return iter((ARRAY_TAG,))

    def __len__(self) -> int:
        return 1


def _refuse_tag(*_args) -> None:
    raise WireError("a CBOR tag this sandbox never writes")


def _decode_array(parts: Any, *_args) -> np.ndarray:
    if not (isinstance(parts, list) and len(parts) == 3):
        raise WireError("an array is not (dtype, shape, bytes)")
    dtype, shape, data = parts
    if not isinstance(dtype, str) or not (dtype in _DTYPES or _STRING_DTYPE.match(dtype)):
        raise WireError("an array dtype this sandbox never writes")
    if not (isinstance(shape, list) and len(shape) <= MAX_DIMENSIONS) or not all(
        type(n) is int and n >= 0 for n in shape
    ):
        raise WireError("an array shape is not a list of sizes")
    itemsize = np.dtype(dtype).itemsize
    if not isinstance(data, bytes) or len(data) != math.prod(shape) * itemsize:
        raise WireError("an array's bytes do not match its shape and dtype")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _check_tree(value: Any) -> None:
    """Plain data only, at most ``MAX_DEPTH`` deep, and no container reached twice."""
    seen: set[int] = set()
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if item is None or type(item) in (bool, int, float, str, bytes, np.ndarray):
            continue
        if type(item) not in (list, dict) or depth >= MAX_DEPTH or id(item) in seen:
            raise WireError("not plain data")
        seen.add(id(item))
        if type(item) is dict:
            if not all(type(key) in (str, int) for key in item):
                raise WireError("a mapping key is not a string or an integer")
            item = item.values()
        stack.extend((child, depth + 1) for child in item)
