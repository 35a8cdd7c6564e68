"""The simulated enclave: an approved model behind HPKE and an attestation document.

:class:`Enclave` is the enclave side. It holds an X25519 HPKE key pair, the
loaded model, the model file's SHA-256, the measurement of its own code and
a leaf signing key issued by a SIMULATED local root. It answers two calls:

- ``attest(nonce)`` returns a Nitro-shaped attestation document (see
  :mod:`secure_compute.attestation`) binding its HPKE public key, the code
  and model measurements and the client's nonce;
- ``run(sealed_request)`` opens an HPKE-sealed request, refuses one it has
  answered before (:class:`~secure_compute.sealing.ReplayGuard`), scores the
  rows and returns the predictions sealed to the client's key (see
  :mod:`secure_compute.sealing`). Anything malformed raises
  :class:`~secure_compute.exceptions.EnclaveError` with one sentence.
  ``run_counted`` also takes the most rows the caller may still send (its
  query budget, which only the host knows) and returns the row count, which
  only the enclave knows, beside the sealed answer.

:class:`EnclaveProcess` (started by :func:`enclave_serve`) runs an Enclave in
a separate OS process: a fresh interpreter (``python -I``), started with a
minimal environment, so nothing of the parent's memory or secrets is
inherited and the parent's ``__main__`` is never re-run (as multiprocessing's
"spawn" would). The parent sends the model file's bytes and the root
directory; the child loads the model with the project's safe skops loader,
reads the root key and generates the HPKE key itself, so the model, the HPKE
private key and the root key exist only in the child. The parent only
forwards bytes.

Protocol on the child's stdin and stdout: every frame is a 4-byte big-endian
length and a body. The first parent frame is the CBOR configuration; the
child answers with a status frame. After that each parent frame is an opcode
byte (``A`` attest, ``R`` run, ``Q`` quit) and a body, and each child frame
a status byte (0 ok, 1 EnclaveError, 2 AttestationError, 3 failure, 4 row
limit) and a body: the result, or one UTF-8 sentence. A run frame's body is
the row limit (4 bytes, big-endian) and the sealed request; its answer is the
row count (4 bytes) and the sealed response: a count, never data.

No TEE: the host's OS and administrators can read the child's memory. See
``docs/enclave.md`` for the threat model.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.util
import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secure_compute.attestation import (
    MAX_NONCE_BYTES,
    MIN_NONCE_BYTES,
    SimulatedRoot,
    attestation_document_build,
    module_id_new,
    signing_identity_issue,
    simulated_root_load,
)
from secure_compute.exceptions import (
    AttestationError,
    EnclaveError,
    EnclaveUnavailable,
    RowLimitExceeded,
    SecureComputeError,
)
from secure_compute.sealing import (
    MAX_ROWS,
    MAX_SEALED_REQUEST_BYTES,
    MAX_SEALED_RESPONSE_BYTES,
    REQUEST_INFO,
    RESPONSE_INFO,
    ReplayGuard,
    hpke_open,
    hpke_seal,
    request_decode,
    response_encode,
)

# --------------------------------------------------------------------------- constants

#: Modules whose source makes up the enclave's code measurement (PCR0): the
#: enclave, its attestation, sealing and CBOR parsing, its errors, and the
#: safe skops loader it runs on the model file (the allowlist, the structural
#: validation, their wording and errors). A change to any of them is a new
#: enclave version that clients pinning PCR0 will refuse.
ENCLAVE_CODE_MODULES = (
    "secure_compute.enclave",
    "secure_compute.attestation",
    "secure_compute.sealing",
    "secure_compute._cbor",
    "secure_compute.exceptions",
    "safe_model.loader",
    "safe_model.structure",
    "safe_model.refusal",
    "safe_model.redact",
    "safe_model.exceptions",
)

#: A leaf signing certificate is reissued when it has less than this left,
#: so a document never carries a certificate about to expire.
LEAF_RENEW_BEFORE = dt.timedelta(hours=1)

#: Waiting for the child: start-up imports scikit-learn and loads the model
#: (seconds, more on a cold disk); one request scores at most MAX_ROWS rows.
START_TIMEOUT_SECONDS = 120.0
REQUEST_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 5.0

#: Pipe protocol. Frames are capped so neither side can be made to allocate
#: more than one sealed message (or, once, the model file) per frame.
FRAME_HEADER = struct.Struct(">I")
OP_ATTEST = b"A"
OP_RUN = b"R"
OP_QUIT = b"Q"
STATUS_OK = 0
STATUS_ENCLAVE_ERROR = 1
STATUS_ATTESTATION_ERROR = 2
STATUS_FAILED = 3
STATUS_ROW_LIMIT = 4
#: The row limit or count before a sealed run request or response.
ROW_COUNT = struct.Struct(">I")
MAX_REQUEST_FRAME_BYTES = MAX_SEALED_REQUEST_BYTES + 1 + ROW_COUNT.size
MAX_REPLY_FRAME_BYTES = MAX_SEALED_RESPONSE_BYTES + 1 + ROW_COUNT.size
MAX_CONFIG_FRAME_BYTES = 2**31

#: The only environment variables the child inherits: it needs no settings,
#: and must not see the web service's secrets (database URL, secret key).
CHILD_ENVIRONMENT = (
    "PATH",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
)

_STATUS_ERRORS = {
    STATUS_ENCLAVE_ERROR: EnclaveError,
    STATUS_ATTESTATION_ERROR: AttestationError,
    STATUS_ROW_LIMIT: RowLimitExceeded,
}


# --------------------------------------------------------------------------- measurements


def code_measurement_compute(modules: Iterable[str] = ENCLAVE_CODE_MODULES) -> bytes:
    """SHA-384 over the source files of the enclave code (PCR0).

    Each module contributes its dotted name, its length and its bytes, in
    sorted order, so the value does not depend on where the package is
    installed. A client can compute it from the same release and pin it.

    Parameters
    ----------
    modules : iterable of str, default=ENCLAVE_CODE_MODULES

    Returns
    -------
    bytes
        48 bytes.
    """
    digest = hashlib.sha384()
    for name in sorted(modules):
        source = _module_source(name)
        digest.update(name.encode() + b"\0" + len(source).to_bytes(8, "big") + source)
    return digest.digest()


def _module_source(name: str) -> bytes:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise EnclaveError(f"The enclave module {name} cannot be found to measure it.")
    with open(spec.origin, "rb") as handle:
        return handle.read()


# --------------------------------------------------------------------------- enclave


class Enclave:
    """An approved model behind HPKE, able to attest what it runs.

    The enclave never loads files: pass a model the caller loaded with the
    safe skops loader (:func:`attacks.intake.load_model`) and the SHA-256 of
    the file it came from. :class:`EnclaveProcess` does both inside the
    child process.

    Parameters
    ----------
    model : estimator
        Fitted scikit-learn classifier with ``n_features_in_``.
    model_sha256 : bytes
        32-byte SHA-256 of the approved model file.
    root : SimulatedRoot
        Local root that issues the enclave's signing certificates.
    module_id : str, optional
        Defaults to a fresh ``SIMULATED-…`` id.
    code_measurement : bytes, optional
        Defaults to :func:`code_measurement_compute`.

    Attributes
    ----------
    public_key : bytes
        Raw X25519 HPKE public key; the private key never leaves the object.
    n_features : int
    model_sha256 : bytes
    code_measurement : bytes
    module_id : str
    """

    def __init__(
        self,
        model: Any,
        *,
        model_sha256: bytes,
        root: SimulatedRoot,
        module_id: str | None = None,
        code_measurement: bytes | None = None,
    ):
        if not isinstance(model_sha256, bytes) or len(model_sha256) != 32:
            raise EnclaveError("The model's SHA-256 must be 32 bytes.")
        self.n_features = _model_n_features(model)
        self.model_sha256 = model_sha256
        self.code_measurement = code_measurement or code_measurement_compute()
        self.module_id = module_id or module_id_new()
        self._model = model
        self._root = root
        self._identity = signing_identity_issue(root, module_id=self.module_id)
        self._hpke_private = X25519PrivateKey.generate()
        self.public_key = self._hpke_private.public_key().public_bytes_raw()
        self._replays = ReplayGuard()

    def attest(self, nonce: bytes, *, now: dt.datetime | None = None) -> bytes:
        """Sign an attestation document answering the client's nonce.

        Parameters
        ----------
        nonce : bytes
            16 to 512 bytes chosen by the client.
        now : datetime, optional

        Returns
        -------
        bytes
            ``COSE_Sign1`` document.

        Raises
        ------
        EnclaveError
            If the nonce is too short or too long.
        """
        if not isinstance(nonce, bytes) or not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
            raise EnclaveError(f"A nonce is {MIN_NONCE_BYTES} to {MAX_NONCE_BYTES} bytes.")
        if self._identity.expires_within(LEAF_RENEW_BEFORE, now=now):
            self._identity = signing_identity_issue(self._root, module_id=self.module_id, now=now)
        return attestation_document_build(
            identity=self._identity,
            module_id=self.module_id,
            public_key=self.public_key,
            nonce=nonce,
            code_measurement=self.code_measurement,
            model_sha256=self.model_sha256,
            n_features=self.n_features,
            now=now,
        )

    def run(self, sealed_request: bytes, *, now: dt.datetime | None = None) -> bytes:
        """Score a sealed request and seal the predictions to the client.

        Parameters
        ----------
        sealed_request : bytes
            From :func:`secure_compute.sealing.seal_request`.
        now : datetime, optional
            The enclave's clock, for the replay window.

        Returns
        -------
        sealed_response : bytes
            Opens only with the private key matching the request's
            ``client_public_key``.

        Raises
        ------
        EnclaveError
            If the request is too large, does not open with this enclave's
            key, is malformed, stale or answered before, does not fit the
            model, or cannot be scored.
        """
        return self.run_counted(sealed_request, now=now)[0]

    def run_counted(
        self, sealed_request: bytes, *, max_rows: int = MAX_ROWS, now: dt.datetime | None = None
    ) -> tuple[bytes, int]:
        """:meth:`run`, refusing more than ``max_rows`` rows and counting them.

        Parameters
        ----------
        sealed_request : bytes
        max_rows : int, default=MAX_ROWS
            Rows the caller may still send (its query budget).
        now : datetime, optional

        Returns
        -------
        sealed_response : bytes
        n_rows : int
            Rows scored; the host learns this count and nothing else.

        Raises
        ------
        RowLimitExceeded
            If the request holds more than ``max_rows`` rows; nothing is scored.
        EnclaveError
            As :meth:`run`.
        """
        plaintext = hpke_open(
            self._hpke_private,
            sealed_request,
            info=REQUEST_INFO,
            max_bytes=MAX_SEALED_REQUEST_BYTES,
        )
        request = request_decode(plaintext, n_features=self.n_features)
        self._replays.check(request, now=now)
        n_rows = len(request.rows)
        if n_rows > max_rows:
            raise RowLimitExceeded(
                f"The request holds {n_rows} rows, more than the {max_rows} "
                "your query budget still allows today."
            )
        predictions, probabilities, classes = _model_score(self._model, request.rows)
        response = response_encode(
            predictions, probabilities=probabilities, classes=classes, nonce=request.nonce
        )
        return hpke_seal(request.client_public_key, response, info=RESPONSE_INFO), n_rows


def _model_n_features(model: Any) -> int:
    n_features = getattr(model, "n_features_in_", None)
    if not isinstance(n_features, int | np.integer) or n_features < 1:
        raise EnclaveError("The model does not record how many features it takes.")
    return int(n_features)


def _model_score(model: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, list | None]:
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        import pandas as pd  # only models fitted on named columns need it

        rows = pd.DataFrame(rows, columns=names)
    try:
        predictions = np.asarray(model.predict(rows))
        probabilities = None
        if hasattr(model, "predict_proba"):
            probabilities = np.asarray(model.predict_proba(rows), dtype=np.float64)
    # The model is approved but the rows are the client's: whatever a
    # predict call raises on them becomes one sentence, never a crash, and
    # the exception text (which may quote values) is not passed on.
    except Exception:  # noqa: BLE001
        raise EnclaveError("The model could not score these rows.") from None
    classes = getattr(model, "classes_", None)
    return predictions, probabilities, None if classes is None else np.asarray(classes).tolist()


# --------------------------------------------------------------------------- separate process


@dataclass(frozen=True)
class EnclaveFacts:
    """Public facts the enclave process reports once it has started.

    Attributes
    ----------
    pid : int
    module_id : str
    model_sha256 : bytes
    code_measurement : bytes
    n_features : int
    public_key : bytes
        The HPKE public key (public; the private key stays in the child).
    """

    pid: int
    module_id: str
    model_sha256: bytes
    code_measurement: bytes
    n_features: int
    public_key: bytes


class EnclaveProcess:
    """Parent-side handle of an enclave running in its own OS process.

    The handle holds the child's pipes and :class:`EnclaveFacts`; it never
    sees the model, the HPKE private key or the root key. Calls are
    serialised by a lock, so one handle may be shared by threads.

    Use :meth:`start` (or :func:`enclave_serve`) to create one, and
    :meth:`stop` or a ``with`` block to end it.
    """

    def __init__(self, process: subprocess.Popen):
        self._process = process
        self._lock = threading.Lock()
        self.facts: EnclaveFacts | None = None

    @classmethod
    def start(
        cls,
        *,
        model_bytes: bytes,
        root_directory: str | os.PathLike,
        filename: str = "model.skops",
        start_timeout: float = START_TIMEOUT_SECONDS,
        python: str | None = None,
    ) -> EnclaveProcess:
        """Start an enclave process serving one approved model.

        Parameters
        ----------
        model_bytes : bytes
            The approved skops model file; the child loads it with
            :func:`attacks.intake.load_model` and hashes it for PCR16.
        root_directory : path
            Directory written by
            :func:`secure_compute.attestation.simulated_root_save`; read
            by the child only.
        filename : str, default="model.skops"
            Name of the model file (its extension is checked).
        start_timeout : float, default=120
            Seconds to wait for the child to load the model.
        python : str, optional
            Interpreter for the child; defaults to ``sys.executable``.

        Returns
        -------
        EnclaveProcess

        Raises
        ------
        EnclaveError
            If the child refuses the model or the root, with its sentence.
        EnclaveUnavailable
            If the child does not start in time.
        """
        handle = cls(_child_spawn(python or sys.executable))
        config = {
            "model_bytes": bytes(model_bytes),
            "root_directory": os.fspath(Path(root_directory).resolve()),
            "filename": filename,
        }
        try:
            handle._send(cbor2.dumps(config))
            handle.facts = _facts_decode(handle._reply(timeout=start_timeout))
        except SecureComputeError:
            handle.stop()
            raise
        return handle

    @property
    def pid(self) -> int:
        """Process id of the enclave child."""
        return self._process.pid

    @property
    def alive(self) -> bool:
        """Whether the enclave child is running."""
        return self._process.poll() is None

    def attest(self, nonce: bytes, *, timeout: float = REQUEST_TIMEOUT_SECONDS) -> bytes:
        """Ask the enclave for an attestation document answering ``nonce``.

        Parameters
        ----------
        nonce : bytes
        timeout : float, default=120

        Returns
        -------
        bytes

        Raises
        ------
        EnclaveError
            If the nonce is refused.
        EnclaveUnavailable
            If the process is gone or does not answer in time.
        """
        if not isinstance(nonce, bytes) or len(nonce) > MAX_NONCE_BYTES:
            raise EnclaveError(f"A nonce is at most {MAX_NONCE_BYTES} bytes.")
        return self._call(OP_ATTEST + nonce, timeout=timeout)

    def run(self, sealed_request: bytes, *, timeout: float = REQUEST_TIMEOUT_SECONDS) -> bytes:
        """Forward a sealed request and return the sealed response.

        Parameters
        ----------
        sealed_request : bytes
        timeout : float, default=120

        Returns
        -------
        bytes

        Raises
        ------
        EnclaveError
            If the enclave refuses the request, with its sentence.
        EnclaveUnavailable
            If the process is gone or does not answer in time.
        """
        return self.run_counted(sealed_request, timeout=timeout)[0]

    def run_counted(
        self,
        sealed_request: bytes,
        *,
        max_rows: int = MAX_ROWS,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> tuple[bytes, int]:
        """:meth:`run` under a row limit; also returns how many rows were scored.

        Parameters
        ----------
        sealed_request : bytes
        max_rows : int, default=MAX_ROWS
            Rows the caller may still send; the enclave refuses more.
        timeout : float, default=120

        Returns
        -------
        sealed_response : bytes
        n_rows : int

        Raises
        ------
        RowLimitExceeded
            If the request holds more rows than ``max_rows``.
        EnclaveError, EnclaveUnavailable
            As :meth:`run`.
        """
        if not isinstance(sealed_request, bytes):
            raise EnclaveError("A sealed request must be bytes.")
        if len(sealed_request) > MAX_SEALED_REQUEST_BYTES:
            raise EnclaveError(
                f"The sealed request is larger than the {MAX_SEALED_REQUEST_BYTES}-byte limit."
            )
        limit = ROW_COUNT.pack(max(0, min(int(max_rows), MAX_ROWS)))
        reply = self._call(OP_RUN + limit + sealed_request, timeout=timeout)
        return reply[ROW_COUNT.size :], ROW_COUNT.unpack(reply[: ROW_COUNT.size])[0]

    def stop(self, *, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Stop the enclave process; its keys and model die with it.

        Safe to call more than once.
        """
        with self._lock:
            if self.alive:
                with contextlib.suppress(OSError, ValueError):
                    self._send(OP_QUIT)
                    self._process.stdin.close()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(timeout)
            if self.alive:
                self._process.kill()
                self._process.wait(timeout)
            for stream in (self._process.stdin, self._process.stdout):
                with contextlib.suppress(OSError, ValueError):
                    stream.close()

    def __enter__(self) -> EnclaveProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _call(self, frame: bytes, *, timeout: float) -> bytes:
        with self._lock:
            if not self.alive:
                raise EnclaveUnavailable("The enclave process is not running.")
            self._send(frame)
            return self._reply(timeout=timeout)

    def _send(self, frame: bytes) -> None:
        try:
            _frame_write(self._process.stdin, frame)
        except (OSError, ValueError):
            self._wait_ended()
            raise EnclaveUnavailable("The enclave process is not accepting requests.") from None

    def _wait_ended(self) -> None:
        """It closed its pipe: let it finish exiting, so ``alive`` tells the truth."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(STOP_TIMEOUT_SECONDS)

    def _reply(self, *, timeout: float) -> bytes:
        try:
            reply = _frame_read_before(
                self._process.stdout.fileno(), MAX_REPLY_FRAME_BYTES, time.monotonic() + timeout
            )
        except TimeoutError:
            self._process.kill()
            raise EnclaveUnavailable(
                "The enclave process did not answer in time and was stopped."
            ) from None
        except (EOFError, OSError, ValueError):
            self._wait_ended()
            raise EnclaveUnavailable("The enclave process ended without answering.") from None
        if reply[:1] == bytes([STATUS_OK]):
            return reply[1:]
        error = _STATUS_ERRORS.get(reply[0] if reply else None, EnclaveUnavailable)
        raise error(reply[1:].decode("utf-8", errors="replace"))


def enclave_serve(
    *, model_bytes: bytes, root_directory: str | os.PathLike, filename: str = "model.skops"
) -> EnclaveProcess:
    """Start serving an approved model from a separate enclave process.

    Parameters
    ----------
    model_bytes : bytes
        The approved skops model file.
    root_directory : path
        Directory holding the SIMULATED root (see
        :func:`secure_compute.attestation.simulated_root_save`).
    filename : str, default="model.skops"

    Returns
    -------
    EnclaveProcess
        Started; call ``stop()`` when the endpoint is withdrawn.
    """
    return EnclaveProcess.start(
        model_bytes=model_bytes, root_directory=root_directory, filename=filename
    )


def _child_spawn(python: str) -> subprocess.Popen:
    # -I: the child ignores PYTHON* variables, the user site and the current
    # directory; it imports this project from where this file lives.
    project_root = os.fspath(Path(__file__).resolve().parents[1])
    bootstrap = (
        f"import sys; sys.path.insert(0, {project_root!r}); "
        "from secure_compute.enclave import enclave_child_main; enclave_child_main()"
    )
    return subprocess.Popen(
        [python, "-I", "-c", bootstrap],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        bufsize=0,
        env={k: os.environ[k] for k in CHILD_ENVIRONMENT if k in os.environ},
        start_new_session=True,
        close_fds=True,
    )


def _facts_decode(body: bytes) -> EnclaveFacts:
    try:
        return EnclaveFacts(**cbor2.loads(body))
    except (cbor2.CBORError, TypeError):
        raise EnclaveUnavailable("The enclave process started with an unreadable report.") from None


# --------------------------------------------------------------------------- framing


def _frame_write(stream: Any, body: bytes) -> None:
    stream.write(FRAME_HEADER.pack(len(body)) + body)
    stream.flush()


def _frame_read(stream: Any, limit: int) -> bytes:
    header = stream.read(FRAME_HEADER.size)
    if len(header) < FRAME_HEADER.size:
        raise EOFError
    (length,) = FRAME_HEADER.unpack(header)
    if length > limit:
        raise ValueError("frame too large")
    body = stream.read(length)
    if len(body) < length:
        raise EOFError
    return body


def _frame_read_before(fd: int, limit: int, deadline: float) -> bytes:
    (length,) = FRAME_HEADER.unpack(_read_exactly(fd, FRAME_HEADER.size, deadline))
    if length > limit:
        raise ValueError("frame too large")
    return _read_exactly(fd, length, deadline)


def _read_exactly(fd: int, n: int, deadline: float) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise TimeoutError
        chunk = os.read(fd, min(n - len(chunks), 2**20))
        if not chunk:
            raise EOFError
        chunks += chunk
    return bytes(chunks)


# --------------------------------------------------------------------------- child side


def enclave_child_main() -> None:
    """Entry point of the enclave child process; not for direct use.

    Reads one configuration frame, then serves frames until the parent
    quits or goes away. Library output that would go to stdout is sent to
    stderr, so only protocol frames travel on stdout.
    """
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    protocol_in = sys.stdin.buffer
    try:
        config = cbor2.loads(_frame_read(protocol_in, MAX_CONFIG_FRAME_BYTES))
        enclave = _enclave_from_files(**config)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, then exit
        _frame_write(protocol_out, _error_frame(exc))
        return
    del config
    _frame_write(protocol_out, bytes([STATUS_OK]) + cbor2.dumps(_facts(enclave)))
    _serve(protocol_in, protocol_out, enclave)


def _enclave_from_files(*, model_bytes: bytes, root_directory: str, filename: str) -> Enclave:
    # The project's one safe skops loader (pickle refused, every type checked,
    # compiled structures validated, zip sizes counted) lives in safe_model,
    # which imports nothing of attacks: CSV and record intake stay outside
    # the enclave's code measurement.
    root = simulated_root_load(root_directory)  # first: fails fast, before heavy imports
    from safe_model.exceptions import ModelRefused
    from safe_model.loader import load_model

    try:
        model = load_model(model_bytes, filename=filename)
    except ModelRefused as exc:
        raise EnclaveError(str(exc)) from None
    return Enclave(model, model_sha256=hashlib.sha256(model_bytes).digest(), root=root)


def _facts(enclave: Enclave) -> dict:
    return {
        "pid": os.getpid(),
        "module_id": enclave.module_id,
        "model_sha256": enclave.model_sha256,
        "code_measurement": enclave.code_measurement,
        "n_features": enclave.n_features,
        "public_key": enclave.public_key,
    }


def _serve(protocol_in: Any, protocol_out: Any, enclave: Enclave) -> None:
    while True:
        try:
            frame = _frame_read(protocol_in, MAX_REQUEST_FRAME_BYTES)
        except (EOFError, OSError, ValueError):
            return  # parent gone, or a frame too large to be ours
        if not frame or frame[:1] == OP_QUIT:
            return
        _frame_write(protocol_out, _dispatch(enclave, frame[:1], frame[1:]))


def _dispatch(enclave: Enclave, opcode: bytes, body: bytes) -> bytes:
    try:
        if opcode == OP_ATTEST:
            return bytes([STATUS_OK]) + enclave.attest(body)
        if opcode == OP_RUN:
            (max_rows,) = ROW_COUNT.unpack(body[: ROW_COUNT.size])
            sealed, n_rows = enclave.run_counted(body[ROW_COUNT.size :], max_rows=max_rows)
            return bytes([STATUS_OK]) + ROW_COUNT.pack(n_rows) + sealed
        raise EnclaveError("The enclave received an unknown command.")
    except Exception as exc:  # noqa: BLE001 - one bad request must not end the enclave
        return _error_frame(exc)


def _error_frame(exc: Exception) -> bytes:
    if isinstance(exc, RowLimitExceeded):
        return bytes([STATUS_ROW_LIMIT]) + str(exc).encode()
    if isinstance(exc, AttestationError):
        return bytes([STATUS_ATTESTATION_ERROR]) + str(exc).encode()
    if isinstance(exc, SecureComputeError):
        return bytes([STATUS_ENCLAVE_ERROR]) + str(exc).encode()
    if isinstance(exc, FileNotFoundError):
        return bytes([STATUS_ENCLAVE_ERROR]) + b"The enclave's root key or certificate is missing."
    return bytes([STATUS_FAILED]) + b"The enclave failed on this request."
