"""HPKE sealing of enclave requests and responses (RFC 9180, base mode).

A client verifies the enclave's attestation document, then seals its rows to
the enclave's HPKE public key taken from that document. The request carries a
fresh client public key, and the enclave seals the predictions back to it, so
only the enclave can read the rows and only the client can read the results.
The host that relays the bytes reads neither.

Wire format of a sealed message::

    b"TREH" | version (1 byte) | enc (32 bytes, X25519) | HPKE ciphertext

The five header bytes are the AEAD's associated data, so the version cannot
be changed in transit. Plaintexts are CBOR maps:

- request ``{"version": 2, "rows": <float64 little-endian, C order>,
  "shape": [n_rows, n_features], "client_public_key": <32 bytes>,
  "request_id": <16 random bytes>, "sealed_at": <Unix seconds>,
  "nonce": <bytes>}`` (``nonce`` optional, echoed in the response);
- response ``{"version": 1, "predictions": [label, ...], "classes": [label,
  ...] | null, "probabilities": {"data": <float64 bytes>, "shape": [n, k]} |
  null, "nonce": <bytes> | null}``.

``request_id`` and ``sealed_at`` sit inside the ciphertext, so the relaying host
can neither read nor change them: the enclave answers a request sealed within
the last :data:`REPLAY_WINDOW_SECONDS` once, and remembers its id for that
window only (:class:`ReplayGuard`), so the same sealed bytes sent twice are
refused the second time.

Everything is size-checked before it is parsed and every refusal raises
:class:`secure_compute.exceptions.EnclaveError` with one sentence.
"""

from __future__ import annotations

import datetime as dt
import heapq
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any

import cbor2
import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey, PyHPKEError

from secure_compute._cbor import cbor_loads_strict
from secure_compute.exceptions import EnclaveError

# --------------------------------------------------------------------------- constants

#: HPKE suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305.
#: X25519 keys are 32 raw bytes, which keeps the attestation document small;
#: ChaCha20-Poly1305 is constant-time without AES hardware.
HPKE_SUITE = CipherSuite.new(
    KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305
)

#: HPKE ``info`` strings. Distinct strings keep a sealed request from being
#: accepted as a sealed response, and bind both to this protocol version.
REQUEST_INFO = b"tre-audit enclave v1 request"
RESPONSE_INFO = b"tre-audit enclave v1 response"

#: Opening bytes and format version of every sealed message.
SEALED_MAGIC = b"TREH"
SEALED_VERSION = 1
SEALED_HEADER = SEALED_MAGIC + bytes([SEALED_VERSION])

#: Versions of the CBOR request and response maps inside the ciphertext.
#: Requests became version 2 when they gained ``request_id`` and ``sealed_at``.
REQUEST_VERSION = 2
RESPONSE_VERSION = 1

#: A sealed request is answered only within this many seconds of being sealed.
#: Clients seal right after verifying a fresh attestation document (itself valid
#: for 300 s); ten minutes also covers a request carried from ``tre-audit enclave
#: encrypt`` to ``enclave run``. The enclave remembers ids this long, no longer.
REPLAY_WINDOW_SECONDS = 600
#: How far ahead of the enclave's clock a client's clock may be.
CLOCK_SKEW_SECONDS = 60
#: Random request id: 128 bits never repeat by chance.
REQUEST_ID_BYTES = 16
#: Most ids one enclave remembers at once (16 bytes each, a few MiB at most);
#: past this it refuses new requests until the oldest leave the window.
MAX_REMEMBERED_REQUESTS = 100_000

#: Raw X25519 public key (and HPKE ``enc``) length, and the AEAD tag length.
X25519_KEY_BYTES = 32
AEAD_TAG_BYTES = 16
SEALED_OVERHEAD = len(SEALED_HEADER) + X25519_KEY_BYTES + AEAD_TAG_BYTES

#: Largest batch one request may score. Bigger batches are split by the
#: client, so one request never holds the enclave for long.
MAX_ROWS = 100_000

#: Largest row matrix in a request, as float64 bytes (32 MiB: 100,000 rows of
#: 40 features). Sealed requests are refused unread above this plus a small
#: allowance for the CBOR map, keys and nonce.
MAX_ROWS_BYTES = 32 * 2**20
MAX_SEALED_REQUEST_BYTES = MAX_ROWS_BYTES + 4096 + SEALED_OVERHEAD

#: Largest response plaintext: labels plus a float64 probability matrix.
MAX_RESPONSE_BYTES = 64 * 2**20
MAX_SEALED_RESPONSE_BYTES = MAX_RESPONSE_BYTES + SEALED_OVERHEAD

#: Nonces echoed through a request are at most this long, as in Nitro.
MAX_NONCE_BYTES = 512

#: Requests and responses are flat maps holding lists of scalars: depth 3.
MAX_CBOR_DEPTH = 4

_REQUEST_KEYS = frozenset(
    {"version", "rows", "shape", "client_public_key", "request_id", "sealed_at", "nonce"}
)
_RESPONSE_KEYS = frozenset({"version", "predictions", "classes", "probabilities", "nonce"})
_LABEL_TYPES = (bool, int, float, str)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class ClientKeys:
    """One-time X25519 key pair a client uses to receive one sealed result.

    Attributes
    ----------
    private_key : X25519PrivateKey
        Stays with the client; never sent.
    public_key : bytes
        32 raw bytes, sent inside the sealed request.
    """

    private_key: X25519PrivateKey = field(repr=False)
    public_key: bytes


@dataclass(frozen=True)
class EnclaveRequest:
    """A request as the enclave reads it after opening and checking it.

    Attributes
    ----------
    rows : ndarray of shape (n_rows, n_features), dtype float64
    client_public_key : bytes
    request_id : bytes
        Random id the enclave refuses to see twice.
    sealed_at : int
        When the client sealed it, in Unix seconds.
    nonce : bytes or None
    """

    rows: np.ndarray
    client_public_key: bytes
    request_id: bytes
    sealed_at: int
    nonce: bytes | None


@dataclass(frozen=True)
class EnclaveResult:
    """Predictions the client opened from a sealed response.

    Attributes
    ----------
    predictions : ndarray of shape (n_rows,)
        Labels, as ``model.predict`` returned them.
    probabilities : ndarray of shape (n_rows, n_classes) or None
        ``model.predict_proba``, when the model has it.
    classes : list or None
        Column labels of ``probabilities``.
    """

    predictions: np.ndarray
    probabilities: np.ndarray | None
    classes: list | None


# --------------------------------------------------------------------------- keys and HPKE


def enclave_client_keys() -> ClientKeys:
    """Generate a fresh client key pair for one request.

    Returns
    -------
    ClientKeys
    """
    private_key = X25519PrivateKey.generate()
    return ClientKeys(
        private_key=private_key, public_key=private_key.public_key().public_bytes_raw()
    )


def hpke_seal(recipient_public_key: bytes, plaintext: bytes, *, info: bytes) -> bytes:
    """Seal bytes to a raw X25519 public key (HPKE base mode, single shot).

    Parameters
    ----------
    recipient_public_key : bytes
        32 raw bytes.
    plaintext : bytes
    info : bytes
        :data:`REQUEST_INFO` or :data:`RESPONSE_INFO`.

    Returns
    -------
    sealed : bytes
        ``SEALED_HEADER + enc + ciphertext``.

    Raises
    ------
    EnclaveError
        If the public key is not a usable X25519 key.
    """
    try:
        recipient = HPKE_SUITE.kem.deserialize_public_key(bytes(recipient_public_key))
        enc, context = HPKE_SUITE.create_sender_context(recipient, info=info)
        ciphertext = context.seal(plaintext, aad=SEALED_HEADER)
    except (PyHPKEError, ValueError, TypeError):
        raise EnclaveError("The recipient public key is not a usable X25519 key.") from None
    return SEALED_HEADER + enc + ciphertext


def hpke_open(
    private_key: X25519PrivateKey, sealed: bytes, *, info: bytes, max_bytes: int
) -> bytes:
    """Open a sealed message with the recipient's private key.

    Parameters
    ----------
    private_key : X25519PrivateKey
    sealed : bytes
        Output of :func:`hpke_seal`.
    info : bytes
        Must equal the ``info`` it was sealed with.
    max_bytes : int
        Longest sealed message accepted; longer ones are refused unread.

    Returns
    -------
    plaintext : bytes

    Raises
    ------
    EnclaveError
        If the message is too short or too long, has another format or
        version, or does not open with this key and ``info``.
    """
    _sealed_header_check(sealed, max_bytes=max_bytes)
    enc_end = len(SEALED_HEADER) + X25519_KEY_BYTES
    try:
        context = HPKE_SUITE.create_recipient_context(
            sealed[len(SEALED_HEADER) : enc_end],
            KEMKey.from_pyca_cryptography_key(private_key),
            info=info,
        )
        return context.open(sealed[enc_end:], aad=SEALED_HEADER)
    except (PyHPKEError, ValueError, TypeError):
        raise EnclaveError(
            "The sealed message does not open with this key: it was sealed to another "
            "key, for another purpose, or altered in transit."
        ) from None


def _sealed_header_check(sealed: Any, *, max_bytes: int) -> None:
    if not isinstance(sealed, bytes | bytearray | memoryview):
        raise EnclaveError("A sealed message must be bytes.")
    if len(sealed) > max_bytes:
        raise EnclaveError(f"The sealed message is larger than the {max_bytes}-byte limit.")
    if len(sealed) < SEALED_OVERHEAD:
        raise EnclaveError("The sealed message is too short to hold a key and a ciphertext.")
    if bytes(sealed[: len(SEALED_MAGIC)]) != SEALED_MAGIC:
        raise EnclaveError("The message is not a tre-audit sealed message.")
    if sealed[len(SEALED_MAGIC)] != SEALED_VERSION:
        raise EnclaveError(
            f"The message uses sealed format version {sealed[len(SEALED_MAGIC)]}; "
            f"this library reads version {SEALED_VERSION}."
        )


# --------------------------------------------------------------------------- requests


def rows_checked(rows: Any, *, n_features: int | None = None) -> np.ndarray:
    """Convert client rows to a finite float64 matrix within the size limits.

    Parameters
    ----------
    rows : array-like of shape (n_rows, n_features)
    n_features : int, optional
        Number of columns the model takes, when known.

    Returns
    -------
    ndarray of shape (n_rows, n_features), dtype float64, C order

    Raises
    ------
    EnclaveError
        If the rows are not numeric, not two-dimensional, empty, too many,
        hold NaN or infinity, or have the wrong number of columns.
    """
    try:
        matrix = np.ascontiguousarray(rows, dtype="<f8")
    except (TypeError, ValueError):
        raise EnclaveError("The rows must be numbers only.") from None
    _shape_check(matrix.shape, n_features=n_features)
    if not np.isfinite(matrix).all():
        raise EnclaveError("The rows hold NaN or infinite values, which the enclave refuses.")
    return matrix


def _shape_check(shape: Any, *, n_features: int | None) -> None:
    if len(shape) != 2:
        raise EnclaveError("The rows must form a two-dimensional table.")
    n_rows, n_columns = shape
    if not 1 <= n_rows <= MAX_ROWS:
        raise EnclaveError(f"A request holds between 1 and {MAX_ROWS} rows.")
    if n_columns < 1:
        raise EnclaveError("The rows must have at least one feature.")
    if n_features is not None and n_columns != n_features:
        raise EnclaveError(f"The model takes {n_features} features; the rows have {n_columns}.")
    if n_rows * n_columns * 8 > MAX_ROWS_BYTES:
        raise EnclaveError(f"The rows exceed the {MAX_ROWS_BYTES}-byte limit of one request.")


def request_encode(
    rows: np.ndarray,
    *,
    client_public_key: bytes,
    nonce: bytes | None,
    request_id: bytes,
    sealed_at: dt.datetime,
) -> bytes:
    """Encode a checked row matrix as the CBOR request plaintext.

    Parameters
    ----------
    rows : ndarray of float64, as returned by :func:`rows_checked`
    client_public_key : bytes
    nonce : bytes or None
    request_id : bytes
        :data:`REQUEST_ID_BYTES` random bytes, fresh for every request.
    sealed_at : datetime
        Now, timezone-aware.

    Returns
    -------
    bytes
    """
    request = {
        "version": REQUEST_VERSION,
        "rows": np.ascontiguousarray(rows, dtype="<f8").tobytes(),
        "shape": list(rows.shape),
        "client_public_key": client_public_key,
        "request_id": request_id,
        "sealed_at": int(sealed_at.timestamp()),
    }
    if nonce is not None:
        request["nonce"] = nonce
    return cbor2.dumps(request)


def request_decode(plaintext: bytes, *, n_features: int) -> EnclaveRequest:
    """Parse and check an opened request inside the enclave.

    Parameters
    ----------
    plaintext : bytes
        Output of :func:`hpke_open` on a sealed request.
    n_features : int
        Number of features the enclave's model takes.

    Returns
    -------
    EnclaveRequest

    Raises
    ------
    EnclaveError
        If the map is malformed, the shape disagrees with the row bytes or
        the model, or a key or nonce has the wrong type or size.
    """
    request = cbor_loads_strict(
        plaintext, max_depth=MAX_CBOR_DEPTH, what="request", error=EnclaveError
    )
    _map_check(
        request,
        required=_REQUEST_KEYS - {"nonce"},
        allowed=_REQUEST_KEYS,
        what="request",
        version=REQUEST_VERSION,
    )
    shape = request["shape"]
    if not (isinstance(shape, list) and all(type(n) is int for n in shape)):
        raise EnclaveError("The request's shape must be a list of integers.")
    _shape_check(shape, n_features=n_features)
    return EnclaveRequest(
        rows=_rows_from_bytes(request["rows"], shape),
        client_public_key=_public_key_checked(request["client_public_key"]),
        request_id=_request_id_checked(request["request_id"]),
        sealed_at=_sealed_at_checked(request["sealed_at"]),
        nonce=_nonce_checked(request.get("nonce")),
    )


def _map_check(
    value: Any, *, required: frozenset, allowed: frozenset, what: str, version: int
) -> None:
    if not isinstance(value, dict):
        raise EnclaveError(f"The {what} must be a CBOR map.")
    if not required <= value.keys() <= allowed:
        raise EnclaveError(f"The {what} must hold exactly the fields {sorted(allowed)}.")
    if type(value["version"]) is not int or value["version"] != version:
        raise EnclaveError(f"The {what} must be version {version}.")


def _request_id_checked(request_id: Any) -> bytes:
    if not isinstance(request_id, bytes) or len(request_id) != REQUEST_ID_BYTES:
        raise EnclaveError(f"The request id must be {REQUEST_ID_BYTES} random bytes.")
    return request_id


def _sealed_at_checked(sealed_at: Any) -> int:
    if type(sealed_at) is not int or not 0 <= sealed_at < 2**40:
        raise EnclaveError("The request's sealing time must be whole Unix seconds.")
    return sealed_at


def _rows_from_bytes(data: Any, shape: list[int]) -> np.ndarray:
    if not isinstance(data, bytes) or len(data) != shape[0] * shape[1] * 8:
        raise EnclaveError("The request's row bytes do not match its shape.")
    rows = np.frombuffer(data, dtype="<f8").reshape(shape)
    if not np.isfinite(rows).all():
        raise EnclaveError("The rows hold NaN or infinite values, which the enclave refuses.")
    return rows


def _public_key_checked(key: Any) -> bytes:
    if not isinstance(key, bytes) or len(key) != X25519_KEY_BYTES:
        raise EnclaveError(f"The client public key must be {X25519_KEY_BYTES} raw bytes.")
    return key


def _nonce_checked(nonce: Any) -> bytes | None:
    if nonce is not None and not (isinstance(nonce, bytes) and len(nonce) <= MAX_NONCE_BYTES):
        raise EnclaveError(f"A nonce must be at most {MAX_NONCE_BYTES} bytes.")
    return nonce


def seal_request(
    enclave_public_key: bytes,
    rows: Any,
    client_keys: ClientKeys,
    *,
    n_features: int | None = None,
    nonce: bytes | None = None,
    now: dt.datetime | None = None,
) -> bytes:
    """Seal rows to an enclave, asking for the result under ``client_keys``.

    Call this only with a public key taken from a verified attestation
    document (:func:`secure_compute.enclave_client.verify_and_seal` does both).

    Parameters
    ----------
    enclave_public_key : bytes
        ``AttestedEnclave.public_key``.
    rows : array-like of shape (n_rows, n_features)
    client_keys : ClientKeys
        From :func:`enclave_client_keys`; use a fresh pair per request.
    n_features : int, optional
        Features the attested model takes, checked before sealing.
    nonce : bytes, optional
        The attestation nonce, echoed back in the response.
    now : datetime, optional
        The sealing time bound into the request; defaults to the clock.

    Returns
    -------
    sealed_request : bytes
        Answered once, within :data:`REPLAY_WINDOW_SECONDS` of ``now``.
    """
    matrix = rows_checked(rows, n_features=n_features)
    plaintext = request_encode(
        matrix,
        client_public_key=client_keys.public_key,
        nonce=nonce,
        request_id=secrets.token_bytes(REQUEST_ID_BYTES),
        sealed_at=now or dt.datetime.now(dt.UTC),
    )
    return hpke_seal(enclave_public_key, plaintext, info=REQUEST_INFO)


# --------------------------------------------------------------------------- replays


class ReplayGuard:
    """The enclave's memory of requests it answered, bounded by time and count.

    A request is accepted once, and only within :data:`REPLAY_WINDOW_SECONDS`
    of its ``sealed_at``; an id is forgotten once its request would be too old
    anyway, so memory never grows past the requests of one window.

    Parameters
    ----------
    window_seconds : int, default=REPLAY_WINDOW_SECONDS
    max_remembered : int, default=MAX_REMEMBERED_REQUESTS
    """

    def __init__(
        self,
        *,
        window_seconds: int = REPLAY_WINDOW_SECONDS,
        max_remembered: int = MAX_REMEMBERED_REQUESTS,
    ):
        self.window_seconds = window_seconds
        self.max_remembered = max_remembered
        self._seen: set[bytes] = set()
        self._by_age: list[tuple[int, bytes]] = []  # heap of (sealed_at, request_id)

    def check(self, request: EnclaveRequest, *, now: dt.datetime | None = None) -> None:
        """Remember ``request``, or refuse it if it is stale, early or seen before.

        Raises
        ------
        EnclaveError
            With one sentence saying which.
        """
        now_seconds = int((now or dt.datetime.now(dt.UTC)).timestamp())
        self._forget_before(now_seconds - self.window_seconds)
        if request.sealed_at < now_seconds - self.window_seconds:
            raise EnclaveError(
                f"The sealed request is more than {self.window_seconds} seconds old: "
                "attest the enclave again and seal a new one."
            )
        if request.sealed_at > now_seconds + CLOCK_SKEW_SECONDS:
            raise EnclaveError("The sealed request is dated in the future: check your clock.")
        if request.request_id in self._seen:
            raise EnclaveError("This sealed request was already answered: a request is used once.")
        if len(self._seen) >= self.max_remembered:
            raise EnclaveError("The enclave is answering too many requests; try again shortly.")
        self._seen.add(request.request_id)
        heapq.heappush(self._by_age, (request.sealed_at, request.request_id))

    def _forget_before(self, oldest: int) -> None:
        while self._by_age and self._by_age[0][0] < oldest:
            self._seen.discard(heapq.heappop(self._by_age)[1])


# --------------------------------------------------------------------------- responses


def response_encode(
    predictions: np.ndarray,
    *,
    probabilities: np.ndarray | None,
    classes: list | None,
    nonce: bytes | None,
) -> bytes:
    """Encode model outputs as the CBOR response plaintext, inside the enclave.

    Parameters
    ----------
    predictions : ndarray of shape (n_rows,)
    probabilities : ndarray of shape (n_rows, n_classes) or None
    classes : list or None
    nonce : bytes or None
        The request's nonce, echoed.

    Returns
    -------
    bytes

    Raises
    ------
    EnclaveError
        If the labels are not plain scalars or the response is too large.
    """
    response = {
        "version": RESPONSE_VERSION,
        "predictions": np.asarray(predictions).tolist(),
        "classes": classes,
        "probabilities": _matrix_encode(probabilities),
        "nonce": nonce,
    }
    try:
        plaintext = cbor2.dumps(response)
    except (cbor2.CBOREncodeError, TypeError, ValueError):
        raise EnclaveError("The model's labels cannot be sent back as plain values.") from None
    if len(plaintext) > MAX_RESPONSE_BYTES:
        raise EnclaveError(
            f"The response would exceed {MAX_RESPONSE_BYTES} bytes; send fewer rows."
        )
    return plaintext


def _matrix_encode(matrix: np.ndarray | None) -> dict | None:
    if matrix is None:
        return None
    matrix = np.ascontiguousarray(matrix, dtype="<f8")
    return {"data": matrix.tobytes(), "shape": list(matrix.shape)}


def response_decode(
    plaintext: bytes, *, n_rows: int | None = None, nonce: bytes | None = None
) -> EnclaveResult:
    """Parse and check an opened response on the client.

    Parameters
    ----------
    plaintext : bytes
    n_rows : int, optional
        Rows the client sent; the response must have as many predictions.
    nonce : bytes, optional
        Nonce the client sent; the response must echo it.

    Returns
    -------
    EnclaveResult

    Raises
    ------
    EnclaveError
        If the map is malformed, its parts disagree in length, or it does
        not echo the nonce.
    """
    response = cbor_loads_strict(
        plaintext, max_depth=MAX_CBOR_DEPTH, what="response", error=EnclaveError
    )
    _map_check(
        response,
        required=_RESPONSE_KEYS,
        allowed=_RESPONSE_KEYS,
        what="response",
        version=RESPONSE_VERSION,
    )
    if nonce is not None and not _same_bytes(response["nonce"], nonce):
        raise EnclaveError("The response does not echo this request's nonce.")
    predictions = _labels_checked(response["predictions"], what="predictions")
    if n_rows is not None and len(predictions) != n_rows:
        raise EnclaveError(f"The response has {len(predictions)} predictions for {n_rows} rows.")
    classes = (
        None if response["classes"] is None else _labels_checked(response["classes"], "classes")
    )
    probabilities = _matrix_decode(response["probabilities"], n_rows=len(predictions))
    return EnclaveResult(
        predictions=np.asarray(predictions), probabilities=probabilities, classes=classes
    )


def _same_bytes(value: Any, expected: bytes) -> bool:
    return isinstance(value, bytes) and hmac.compare_digest(value, expected)


def _labels_checked(labels: Any, what: str) -> list:
    if not (isinstance(labels, list) and all(isinstance(v, _LABEL_TYPES) for v in labels)):
        raise EnclaveError(f"The response's {what} must be a list of plain values.")
    return labels


def _matrix_decode(value: Any, *, n_rows: int) -> np.ndarray | None:
    if value is None:
        return None
    shape = value.get("shape") if isinstance(value, dict) else None
    data = value.get("data") if isinstance(value, dict) else None
    if not (
        isinstance(shape, list)
        and len(shape) == 2
        and all(type(n) is int and n >= 0 for n in shape)
        and shape[0] == n_rows
        and isinstance(data, bytes)
        and len(data) == shape[0] * shape[1] * 8
    ):
        raise EnclaveError("The response's probabilities do not match its predictions.")
    return np.frombuffer(data, dtype="<f8").reshape(shape).copy()


def open_response(
    sealed_response: bytes,
    client_keys: ClientKeys,
    *,
    nonce: bytes | None = None,
    n_rows: int | None = None,
) -> EnclaveResult:
    """Open the enclave's sealed response with the client's private key.

    Parameters
    ----------
    sealed_response : bytes
    client_keys : ClientKeys
        The pair whose public key went into the request.
    nonce : bytes, optional
        The nonce sent in the request; the response must echo it.
    n_rows : int, optional
        Rows sent; the response must have as many predictions.

    Returns
    -------
    EnclaveResult

    Raises
    ------
    EnclaveError
        If the response does not open with this key, is malformed, or does
        not echo the nonce.
    """
    plaintext = hpke_open(
        client_keys.private_key,
        sealed_response,
        info=RESPONSE_INFO,
        max_bytes=MAX_SEALED_RESPONSE_BYTES,
    )
    return response_decode(plaintext, n_rows=n_rows, nonce=nonce)
