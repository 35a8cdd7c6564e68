"""Byte-level checks of HE envelopes, run before TenSEAL sees any byte.

An envelope is::

    b"TREHE" | version (1 byte) | header length (4 bytes, big endian) | header (UTF-8 JSON)
    | then, as many times as the header implies: blob length (4 bytes, big endian) | blob

Every length is checked against the bytes that remain and against a limit
before anything is sliced or parsed. Each blob is a TenSEAL ``CKKSVector``
(a protobuf message holding one SEAL ciphertext); a public context is a TenSEAL
context protobuf. Both are walked here with a strict protobuf reader that
accepts only the exact layout TenSEAL writes, and every embedded SEAL object
must carry a sane SEAL header whose declared size is its true size. So a
truncated, padded, re-framed or garbage blob is refused in Python, and the
native parser only ever sees well-framed input.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

from secure_compute.exceptions import HEError

MAGIC = b"TREHE"

#: Bumped whenever the envelope or header layout changes; old clients are refused.
FORMAT_VERSION = 1

#: A header is a handful of short fields; 4 KiB leaves room for long batch lists.
MAX_HEADER_BYTES = 4096

_PREFIX = struct.Struct(">5sBI")
_LENGTH = struct.Struct(">I")

# SEAL 4 serialization header: magic, header size, version, compression, reserved, size.
_SEAL_HEADER = struct.Struct("<HBBBBHQ")
_SEAL_MAGIC = 0xA15E
_SEAL_HEADER_SIZE = 16
#: TenSEAL 0.3.x bundles SEAL 4.x; another major version has another layout.
_SEAL_VERSION_MAJOR = 4
#: SEAL compression modes: none, zlib, zstd. SEAL inflates lazily and bounds
#: what it reads by the object's own metadata, so a compression bomb is not
#: inflated past the ciphertext's size (checked in the fuzz tests).
_SEAL_COMPRESSION_MODES = frozenset({0, 1, 2})

# Protobuf wire types.
_VARINT, _I64, _LEN = 0, 1, 2
#: A TenSEAL message has at most five fields; more means it is not one.
_MAX_PROTO_FIELDS = 8


def pack_envelope(header: dict[str, Any], blobs: list[bytes]) -> bytes:
    """Frame a header and blobs as one envelope (the inverse of the readers below)."""
    encoded = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    parts = [_PREFIX.pack(MAGIC, FORMAT_VERSION, len(encoded)), encoded]
    for blob in blobs:
        parts += [_LENGTH.pack(len(blob)), blob]
    return b"".join(parts)


def read_header(data: bytes, *, max_bytes: int, what: str) -> tuple[dict[str, Any], int]:
    """Read the envelope prefix and JSON header.

    Returns the header dict and the offset of the first blob.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise HEError(f"The {what} must be bytes.")
    if len(data) > max_bytes:
        raise HEError(f"The {what} is {len(data)} bytes, more than the {max_bytes} allowed.")
    if len(data) < _PREFIX.size:
        raise HEError(f"The {what} is too short to be an HE envelope.")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise HEError(f"The {what} is not an HE envelope (wrong magic bytes).")
    if version != FORMAT_VERSION:
        raise HEError(
            f"The {what} has format version {version}; this server reads {FORMAT_VERSION}."
        )
    if header_len > MAX_HEADER_BYTES or _PREFIX.size + header_len > len(data):
        raise HEError(f"The {what} header length {header_len} does not fit the envelope.")
    raw = bytes(data[_PREFIX.size : _PREFIX.size + header_len])
    return _json_object(raw, what), _PREFIX.size + header_len


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    """Decode a JSON object, refusing NaN, Infinity and duplicate keys."""

    def no_duplicates(pairs):
        keys = [key for key, _ in pairs]
        if len(keys) != len(set(keys)):
            raise ValueError("duplicate key")
        return dict(pairs)

    def no_constants(name):
        raise ValueError(f"{name} is not allowed")

    try:
        value = json.loads(
            raw.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constants
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise HEError(f"The {what} header is not valid JSON.") from None
    if not isinstance(value, dict):
        raise HEError(f"The {what} header is not a JSON object.")
    return value


def read_blobs(data: bytes, offset: int, count: int, *, max_blob: int, what: str) -> list[bytes]:
    """Read exactly ``count`` length-prefixed blobs; nothing may follow them."""
    blobs = []
    for index in range(count):
        if offset + _LENGTH.size > len(data):
            raise HEError(f"The {what} ends before ciphertext {index + 1} of {count}.")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if length == 0 or length > max_blob:
            raise HEError(
                f"Ciphertext {index + 1} of the {what} has a size ({length}) out of range."
            )
        if offset + length > len(data):
            raise HEError(f"Ciphertext {index + 1} of the {what} is truncated.")
        blobs.append(bytes(data[offset : offset + length]))
        offset += length
    if offset != len(data):
        raise HEError(
            f"The {what} has {len(data) - offset} unexpected bytes after its ciphertexts."
        )
    return blobs


def check_int(header: dict[str, Any], key: str, low: int, high: int, what: str) -> int:
    """Return ``header[key]`` if it is an int (not a bool) in [low, high]."""
    value = header.get(key)
    if type(value) is not int or not low <= value <= high:
        raise HEError(f"The {what} header field {key!r} must be an integer from {low} to {high}.")
    return value


def check_keys(header: dict[str, Any], expected: frozenset[str], what: str) -> None:
    """Refuse a header whose field names differ from ``expected``."""
    if set(header) != expected:
        missing = sorted(expected - set(header))
        extra = sorted(set(header) - expected)
        raise HEError(
            f"The {what} header fields differ from the format (missing {missing}, extra {extra})."
        )


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode one protobuf varint (at most 10 bytes) at ``pos``."""
    value = 0
    for shift in range(0, 70, 7):
        if pos >= len(buf):
            raise HEError("A ciphertext or context is truncated inside a length field.")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise HEError("A ciphertext or context has a malformed length field.")


def proto_fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """Split a protobuf message into (field number, wire type, value), strictly.

    Only the wire types TenSEAL uses are accepted; every length must fit.
    """
    fields: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(buf):
        if len(fields) == _MAX_PROTO_FIELDS:
            raise HEError("A ciphertext or context has more fields than TenSEAL writes.")
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire in (_I64, _LEN):
            length, pos = (8, pos) if wire == _I64 else _varint(buf, pos)
            if pos + length > len(buf):
                raise HEError("A ciphertext or context is truncated inside a field.")
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise HEError("A ciphertext or context has a field TenSEAL never writes.")
        fields.append((number, wire, value))
    return fields


def packed_varints(buf: bytes) -> list[int]:
    """Decode a packed repeated varint field."""
    values, pos = [], 0
    while pos < len(buf):
        value, pos = _varint(buf, pos)
        values.append(value)
    return values


def as_double(raw: bytes) -> float:
    """Decode a little-endian protobuf double, refusing NaN and infinities."""
    (value,) = struct.unpack("<d", raw)
    if not math.isfinite(value):
        raise HEError("A ciphertext or context carries a scale that is not a finite number.")
    return value


def check_seal_object(blob: bytes, what: str) -> None:
    """Check the 16-byte SEAL header of one serialized SEAL object."""
    if len(blob) < _SEAL_HEADER_SIZE:
        raise HEError(f"The {what} is too short to hold a SEAL object.")
    magic, header_size, major, _minor, compression, reserved, size = _SEAL_HEADER.unpack_from(blob)
    if magic != _SEAL_MAGIC or header_size != _SEAL_HEADER_SIZE or reserved != 0:
        raise HEError(f"The {what} does not start with a SEAL header.")
    if major != _SEAL_VERSION_MAJOR:
        raise HEError(f"The {what} was written by SEAL {major}.x; this server reads SEAL 4.x.")
    if compression not in _SEAL_COMPRESSION_MODES:
        raise HEError(f"The {what} uses an unknown SEAL compression mode.")
    if size != len(blob):
        raise HEError(f"The {what} declares {size} bytes but holds {len(blob)}.")
