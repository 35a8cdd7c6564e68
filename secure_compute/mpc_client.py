"""The partner's side of secure inference with a dealer, over the service's REST API.

The partner's rows never leave this machine in the clear, and its private key
never leaves it at all: the service signs a certificate request for one session
(:func:`~secure_compute.mpc_transport.csr_create`), and the session runs
between this process, the model owner's host and the dealer
(:func:`~secure_compute.mpc_host.partner_predict`). Only the partner learns
the result.

Typical use::

    from secure_compute import mpc_client
    prediction = mpc_client.predict("https://tre.example", token, 12, rows)
    prediction.predictions, prediction.logits, prediction.error_bounds

HTTP contract (``tre_audit/serving/api.py`` implements it), with ``Authorization:
Token <token>``; 401/404 as every endpoint, 429 with ``Retry-After`` once the
daily budget is spent, 503 when a host is down:

- ``GET  /api/v1/endpoints/<n>/mpc/info``: ``{"architecture", "architecture_sha256",
  "precision_bits", "max_rows"}``.
- ``POST /api/v1/endpoints/<n>/mpc/sessions`` ``{"n_rows", "csr"}``: 201 ``{"session",
  "owner", "dealer", "ca", "certificate", "architecture", "precision_bits"}``.
- ``POST /api/v1/endpoints/<n>/mpc/sessions/<session>/close``: ``{"status", "n_rows",
  "bytes", "rounds", "error"}``; ``"running"`` until the owner has recorded the session.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import requests

from secure_compute import mpc
from secure_compute.exceptions import MPCError, MPCUnavailable, SecureComputeError
from secure_compute.mpc_host import SessionTicket, address_parse, partner_predict
from secure_compute.mpc_transport import Identity, csr_create

#: Seconds for one HTTP call to the service.
HTTP_TIMEOUT = 60
#: Seconds a close waits for the model owner's host to record a session that ran.
CLOSE_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class ModelInfo:
    """What the service says of an MPC endpoint's model: public layers, never weights."""

    architecture: mpc.Architecture
    precision_bits: int
    max_rows: int


def model_info(url: str, token: str, endpoint, *, http=None) -> ModelInfo:
    """GET the endpoint's public model; refuse one whose architecture fails its SHA-256."""
    body = _http_json(http, "get", _url(url, endpoint, "mpc/info"), token)
    architecture = _architecture(body)
    if architecture.sha256() != body.get("architecture_sha256"):
        raise MPCError("The model's architecture does not match the SHA-256 the service gave.")
    try:
        return ModelInfo(architecture, int(body["precision_bits"]), int(body["max_rows"]))
    except (KeyError, TypeError, ValueError):
        raise MPCError("The service's model info is not one secure inference can read.") from None


def rows_select(architecture: mpc.Architecture, X):
    """The model's columns of a DataFrame, in the model's order; other inputs as given."""
    names = architecture.feature_names
    if not names or not hasattr(X, "columns"):
        return X
    columns = {str(c).strip(): c for c in X.columns}
    missing = [name for name in names if name not in columns]
    if missing:
        shown = ", ".join(missing[:5]) + (" and more" if len(missing) > 5 else "")
        raise MPCError(f"The rows lack the model's columns {shown}.")
    return X[[columns[name] for name in names]]


def predict(url: str, token: str, endpoint, X, *, http=None) -> mpc.Prediction:
    """Secure predictions for the partner's rows ``X`` (an array or a DataFrame).

    The session is closed (counted, or refunded if it did not run) also when it fails.

    Raises
    ------
    MPCError
        The rows, the request or the service refused (4xx), in one sentence.
    MPCUnavailable
        The service, the model owner's host or the dealer is down (503).
    """
    info = model_info(url, token, endpoint, http=http)
    X = mpc.rows_check(info.architecture, rows_select(info.architecture, X))
    if len(X) > info.max_rows:
        raise MPCError(f"A session takes at most {info.max_rows} rows, not {len(X)}.")
    key_pem, csr_pem = csr_create()
    body = {"n_rows": int(len(X)), "csr": csr_pem.decode()}
    opened = _http_json(http, "post", _url(url, endpoint, "mpc/sessions"), token, json=body)
    ticket = _ticket(opened, endpoint, key_pem, info)
    try:
        prediction = partner_predict(ticket, X)
    except SecureComputeError:
        with contextlib.suppress(SecureComputeError):
            session_close(url, token, endpoint, ticket.session, http=http)
        raise
    session_close(url, token, endpoint, ticket.session, http=http)
    return prediction


def session_close(url: str, token: str, endpoint, session: str, *, http=None) -> dict:
    """Settle a session, waiting while the owner's host still records it."""
    close = _url(url, endpoint, f"mpc/sessions/{session}/close")
    deadline = time.monotonic() + CLOSE_WAIT_SECONDS
    while True:
        summary = _http_json(http, "post", close, token)
        if summary.get("status") != "running" or time.monotonic() > deadline:
            return summary
        time.sleep(0.1)


def _ticket(opened: dict, endpoint, key_pem: bytes, info: ModelInfo) -> SessionTicket:
    architecture = _architecture(opened)
    if architecture.sha256() != info.architecture.sha256():
        raise MPCError("The session's model is not the one the service described.")
    try:
        return SessionTicket(
            endpoint=str(endpoint),
            session=str(opened["session"]),
            owner=address_parse(str(opened["owner"])),
            dealer=address_parse(str(opened["dealer"])),
            ca_pem=str(opened["ca"]).encode(),
            identity=Identity(str(opened["certificate"]).encode(), key_pem),
            architecture=architecture,
            precision_bits=int(opened["precision_bits"]),
        )
    except (KeyError, TypeError, ValueError):
        raise MPCError(
            "The service's session answer is not one secure inference can read."
        ) from None


def _architecture(body) -> mpc.Architecture:
    if not isinstance(body, dict):
        raise MPCError("The service's answer is not a JSON object.")
    return mpc.Architecture.from_json(body.get("architecture"))


def _url(url: str, endpoint, path: str) -> str:
    return f"{url.rstrip('/')}/api/v1/endpoints/{endpoint}/{path}"


def _http_json(http, method: str, url: str, token: str, **kwargs) -> dict:
    """One authenticated call; its JSON, or one sentence: MPCUnavailable for 503 or no answer."""
    http = http or requests
    headers = {"Authorization": f"Token {token}"}
    try:
        answer = getattr(http, method)(url, headers=headers, timeout=HTTP_TIMEOUT, **kwargs)
    except requests.RequestException as exc:
        raise MPCUnavailable(f"Could not reach {url}: {type(exc).__name__}.") from None
    try:
        body = answer.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if answer.status_code in (502, 503, 504):
        raise MPCUnavailable(str(detail or f"{url} answered {answer.status_code}."))
    if answer.status_code == 429 and detail:  # which budget is spent, and when it renews
        raise MPCError(str(detail))
    if answer.status_code >= 400:
        raise MPCError(f"{url} answered {answer.status_code}: {detail or answer.reason}")
    if not isinstance(body, dict):
        raise MPCError(f"{url} did not answer JSON.")
    return body
