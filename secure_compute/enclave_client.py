"""Client side of an attested enclave endpoint: verify, seal, send, open.

The client never sends data before it has verified a fresh attestation
document: signature, chain to a root it trusts, the approved model's
measurement, its own nonce and the document's age. It then seals its rows to
the enclave key named in that document, with a one-time key of its own for
the answer, so the web service that relays the bytes reads neither.

HTTP contract (to be implemented by the Django views)
-----------------------------------------------------

``ENDPOINT`` is the URL of one deployed enclave, e.g.
``https://tre.example/api/enclaves/42``. Every call sends
``Authorization: Token <api token>``. Bodies are never logged.

``GET {ENDPOINT}/attestation?nonce=<hex>``
    ``nonce`` is 32 to 1024 hexadecimal characters (16 to 512 bytes) chosen
    by the client. The server passes the decoded bytes to
    ``EnclaveProcess.attest(nonce)`` and answers ``200`` with the document
    as the body, ``Content-Type: application/cbor``, ``Cache-Control:
    no-store``.

``POST {ENDPOINT}/run``
    Body: the sealed request, ``Content-Type: application/octet-stream``, at
    most ``secure_compute.sealing.MAX_SEALED_REQUEST_BYTES``; the server
    refuses larger bodies with ``413`` before reading them (check
    ``Content-Length``). It passes the bytes to ``EnclaveProcess.run`` and
    answers ``200`` with the sealed response as the body,
    ``Content-Type: application/octet-stream``.

Errors are JSON ``{"detail": "<one sentence>"}``: ``400`` for an
:class:`~secure_compute.exceptions.EnclaveError` (bad nonce, malformed or
undecryptable request, wrong number of features), ``401``/``403`` for a
missing token or a user not allowed to use the endpoint, ``404`` for an
unknown or withdrawn endpoint, ``413`` for an oversized body, ``429`` with
``Retry-After`` once the caller's daily query budget (calls, rows) is spent,
and ``503`` for :class:`~secure_compute.exceptions.EnclaveUnavailable`.

A sealed request is answered once, within ten minutes of sealing
(:data:`~secure_compute.sealing.REPLAY_WINDOW_SECONDS`): the same bytes sent
again are refused with ``400``.

The trusted root certificate is never fetched from the endpoint: a client
gets it out of band (from the TRE's operators), otherwise the server could
vouch for itself.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import requests
from cryptography import x509

from secure_compute.attestation import (
    DEFAULT_MAX_AGE_SECONDS,
    MAX_DOCUMENT_BYTES,
    AttestedEnclave,
    attestation_verify,
)
from secure_compute.exceptions import EnclaveError, EnclaveUnavailable
from secure_compute.sealing import (
    MAX_SEALED_RESPONSE_BYTES,
    ClientKeys,
    EnclaveResult,
    enclave_client_keys,
    open_response,
    rows_checked,
    seal_request,
)

#: A 256-bit nonce per attestation: never repeated, never guessable.
NONCE_BYTES = 32

#: Seconds to wait for the endpoint; scoring the largest batch takes a while.
HTTP_TIMEOUT_SECONDS = 120.0

ATTESTATION_CONTENT_TYPE = "application/cbor"
SEALED_CONTENT_TYPE = "application/octet-stream"
_CHUNK_BYTES = 2**16


@dataclass(frozen=True)
class PendingRequest:
    """A sealed request and what the client needs to open its answer.

    Attributes
    ----------
    sealed : bytes
        Body of ``POST {endpoint}/run``.
    client_keys : ClientKeys
        One-time key pair; its private half opens the response.
    nonce : bytes
        The attestation nonce, echoed in the response.
    n_rows : int
    attested : AttestedEnclave
        What the verified document proved.
    """

    sealed: bytes = field(repr=False)
    client_keys: ClientKeys = field(repr=False)
    nonce: bytes
    n_rows: int
    attested: AttestedEnclave


def nonce_new() -> bytes:
    """A fresh random nonce of :data:`NONCE_BYTES` bytes."""
    return secrets.token_bytes(NONCE_BYTES)


def verify_and_seal(
    document: bytes,
    *,
    expected_model_sha256: bytes | str,
    nonce: bytes,
    rows: Any,
    trusted_roots: Iterable[bytes | x509.Certificate],
    accept_simulated: bool = False,
    expected_code_measurement: bytes | None = None,
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
    now: dt.datetime | None = None,
) -> PendingRequest:
    """Verify an attestation document, then seal rows to the enclave it names.

    Parameters
    ----------
    document : bytes
        From ``GET {endpoint}/attestation?nonce=…``.
    expected_model_sha256 : bytes or str
        SHA-256 of the approved model file.
    nonce : bytes
        The nonce sent with that GET.
    rows : array-like of shape (n_rows, n_features)
    trusted_roots : iterable of bytes or Certificate
        Root certificates obtained out of band.
    accept_simulated : bool, default=False
        Accept a SIMULATED enclave (no hardware isolation).
    expected_code_measurement : bytes, optional
        Pin the enclave code (PCR0).
    max_age_seconds : float, default=300
    now : datetime, optional

    Returns
    -------
    PendingRequest

    Raises
    ------
    AttestationError
        If the document is refused; nothing is sealed.
    EnclaveError
        If the rows do not fit the attested model.
    """
    attested = attestation_verify(
        document,
        expected_model_sha256=expected_model_sha256,
        nonce=nonce,
        trusted_roots=trusted_roots,
        accept_simulated=accept_simulated,
        max_age_seconds=max_age_seconds,
        expected_code_measurement=expected_code_measurement,
        now=now,
    )
    matrix = rows_checked(rows, n_features=attested.n_features)
    keys = enclave_client_keys()
    sealed = seal_request(attested.public_key, matrix, keys, nonce=nonce)
    return PendingRequest(
        sealed=sealed, client_keys=keys, nonce=nonce, n_rows=len(matrix), attested=attested
    )


def open_result(sealed_response: bytes, pending: PendingRequest) -> EnclaveResult:
    """Open the sealed response to a pending request.

    Parameters
    ----------
    sealed_response : bytes
        Body of the ``POST {endpoint}/run`` answer.
    pending : PendingRequest

    Returns
    -------
    EnclaveResult

    Raises
    ------
    EnclaveError
        If it does not open with the request's key, is malformed, does not
        echo the nonce, or has another number of predictions than rows.
    """
    return open_response(
        sealed_response, pending.client_keys, nonce=pending.nonce, n_rows=pending.n_rows
    )


def enclave_predict(
    endpoint: str,
    *,
    token: str,
    rows: Any,
    expected_model_sha256: bytes | str,
    trusted_roots: Iterable[bytes | x509.Certificate],
    accept_simulated: bool = False,
    expected_code_measurement: bytes | None = None,
    session: requests.Session | None = None,
    timeout: float = HTTP_TIMEOUT_SECONDS,
) -> EnclaveResult:
    """Score rows on a remote enclave: attest, verify, seal, send, open.

    Parameters
    ----------
    endpoint : str
        Base URL of the enclave endpoint (see the module docstring).
    token : str
        API token of the user.
    rows : array-like of shape (n_rows, n_features)
    expected_model_sha256 : bytes or str
    trusted_roots : iterable of bytes or Certificate
    accept_simulated : bool, default=False
    expected_code_measurement : bytes, optional
    session : requests.Session, optional
    timeout : float, default=120

    Returns
    -------
    EnclaveResult

    Raises
    ------
    AttestationError
        If the enclave's document is refused; no data was sent.
    EnclaveError
        If the endpoint refuses the request or the response is bad.
    EnclaveUnavailable
        If the endpoint cannot be reached or its enclave is down.
    """
    http = session or requests.Session()
    base = endpoint.rstrip("/")
    nonce = nonce_new()
    document = _http_call(
        http,
        "GET",
        f"{base}/attestation",
        token=token,
        timeout=timeout,
        params={"nonce": nonce.hex()},
        limit=MAX_DOCUMENT_BYTES,
    )
    pending = verify_and_seal(
        document,
        expected_model_sha256=expected_model_sha256,
        nonce=nonce,
        rows=rows,
        trusted_roots=trusted_roots,
        accept_simulated=accept_simulated,
        expected_code_measurement=expected_code_measurement,
    )
    sealed_response = _http_call(
        http,
        "POST",
        f"{base}/run",
        token=token,
        timeout=timeout,
        data=pending.sealed,
        limit=MAX_SEALED_RESPONSE_BYTES,
    )
    return open_result(sealed_response, pending)


def _http_call(
    http: requests.Session, method: str, url: str, *, token: str, timeout: float, limit: int, **kw
) -> bytes:
    headers = {"Authorization": f"Token {token}"}
    if method == "POST":
        headers["Content-Type"] = SEALED_CONTENT_TYPE
    try:
        with http.request(
            method, url, headers=headers, timeout=timeout, stream=True, **kw
        ) as response:
            if response.status_code != 200:
                raise _http_error(response)
            return _body_read(response, limit=limit)
    except requests.RequestException:
        raise EnclaveUnavailable(f"The enclave endpoint {url} could not be reached.") from None


def _body_read(response: requests.Response, *, limit: int) -> bytes:
    body = bytearray()
    for chunk in response.iter_content(_CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            raise EnclaveError(f"The enclave endpoint answered more than {limit} bytes.")
    return bytes(body)


def _http_error(response: requests.Response) -> Exception:
    try:
        detail = str(json.loads(_body_read(response, limit=4096)).get("detail", ""))[:300]
    except (ValueError, AttributeError, EnclaveError):
        detail = ""
    message = f"The enclave endpoint answered HTTP {response.status_code}" + (
        f": {detail}" if detail else "."
    )
    if response.status_code == 429 and detail:  # which budget is spent, and when it renews
        return EnclaveError(detail)
    if response.status_code in (502, 503, 504):
        return EnclaveUnavailable(message)
    return EnclaveError(message)
