"""A long-lived host for one enclave, reachable by any web process over a Unix socket.

The web app runs several processes; an :class:`~secure_compute.enclave.EnclaveProcess`
belongs to the process that started it. ``python -m secure_compute.enclave_host``
starts the enclave and forwards framed requests from a Unix socket to it, one at
a time. It only moves bytes: requests arrive sealed, answers leave sealed.

Frame (both ways): one byte, a 4-byte big-endian length, the body. Requests:
``A`` + nonce (attest) or ``R`` + row limit (4 bytes) + sealed request (run).
Replies: ``0`` + body (for a run: the row count, 4 bytes, then the sealed
response), ``1`` + sentence (refused: :class:`EnclaveError`), ``2`` + sentence
(unavailable, try again), ``3`` + sentence (the enclave has ended and this host
exits: :class:`EnclaveGone`), ``4`` + sentence (more rows than the limit).

The host is started by :func:`host_command` with :func:`host_environment`: an
isolated interpreter (``python -I``: no ``PYTHON*`` variable, no user site)
and an allowlisted environment, so none of the web service's secrets reach it.
Its command line names its socket, which is how the service tells its own host
from an unrelated process that reused the PID (:func:`host_pid_is_ours`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import struct
import sys
from pathlib import Path

from secure_compute._processes import pid_runs, python_command
from secure_compute.enclave import CHILD_ENVIRONMENT, ROW_COUNT, EnclaveProcess
from secure_compute.exceptions import (
    EnclaveError,
    EnclaveGone,
    EnclaveUnavailable,
    RowLimitExceeded,
    SecureComputeError,
)
from secure_compute.sealing import MAX_SEALED_REQUEST_BYTES, MAX_SEALED_RESPONSE_BYTES

OP_ATTEST, OP_RUN = b"A", b"R"
_OK, _REFUSED, _UNAVAILABLE, _GONE, _ROW_LIMIT = b"0", b"1", b"2", b"3", b"4"
_ERRORS = {
    _REFUSED: EnclaveError,
    _GONE: EnclaveGone,
    _ROW_LIMIT: RowLimitExceeded,
}
#: The host's environment: the enclave child's allowlist and HOME, nothing else.
HOST_ENVIRONMENT = (*CHILD_ENVIRONMENT, "HOME")
_PROGRAM = "secure_compute.enclave_host"
_HEADER = struct.Struct(">cI")
#: Seconds a caller waits for the host; a prediction on the largest request fits well.
CALL_TIMEOUT_SECONDS = 120.0


def host_call(socket_path: str | os.PathLike, op: bytes, body: bytes) -> bytes:
    """Send one request to the host at ``socket_path`` and return the answer's body.

    Raises
    ------
    EnclaveError
        If the enclave refused the request.
    RowLimitExceeded
        If a run request holds more rows than its limit.
    EnclaveGone
        If the host is not listening or its enclave has ended.
    EnclaveUnavailable
        If the host does not answer in time.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(CALL_TIMEOUT_SECONDS)
            sock.connect(os.fspath(socket_path))
            _frame_send(sock, op, body)
            status, reply = _frame_receive(sock, MAX_SEALED_RESPONSE_BYTES + 4096)
    except (FileNotFoundError, ConnectionRefusedError):
        raise EnclaveGone("The enclave host is not running.") from None
    except (OSError, EOFError):
        raise EnclaveUnavailable("The enclave host did not answer.") from None
    if status == _OK:
        return reply
    error = _ERRORS.get(status, EnclaveUnavailable)
    raise error(reply.decode("utf-8", errors="replace"))


def host_run(socket_path: str | os.PathLike, sealed: bytes, *, max_rows: int) -> tuple[bytes, int]:
    """Forward a sealed request under a row limit; returns the sealed answer and its row count.

    Raises
    ------
    RowLimitExceeded, EnclaveError, EnclaveGone, EnclaveUnavailable
        As :func:`host_call`.
    """
    reply = host_call(socket_path, OP_RUN, ROW_COUNT.pack(max_rows) + sealed)
    if len(reply) < ROW_COUNT.size:
        raise EnclaveUnavailable("The enclave host answered without a row count.")
    return reply[ROW_COUNT.size :], ROW_COUNT.unpack(reply[: ROW_COUNT.size])[0]


def host_command(
    *, socket_path: Path, model_path: Path, root_directory: Path, python: str | None = None
) -> list[str]:
    """The command line that starts a host; it imports this project from where it lives."""
    return [
        *python_command(_PROGRAM, python=python),
        *("--socket", os.fspath(socket_path), "--model", os.fspath(model_path)),
        *("--root", os.fspath(root_directory)),
    ]


def host_environment() -> dict[str, str]:
    """The allowlisted environment of a host: no database, secret key, broker or PYTHON*."""
    return {name: os.environ[name] for name in HOST_ENVIRONMENT if name in os.environ}


def host_pid_is_ours(pid: int, socket_path: str | os.PathLike) -> bool:
    """Whether ``pid`` is a live (not zombie) host serving ``socket_path``
    (:func:`secure_compute._processes.pid_runs`)."""
    return pid_runs(pid, _PROGRAM, "--socket", socket_path)


def host_serve(*, socket_path: Path, model_path: Path, root_directory: Path) -> None:
    """Start the enclave for the model at ``model_path`` and serve ``socket_path`` until stopped."""
    enclave = EnclaveProcess.start(
        model_bytes=model_path.read_bytes(), root_directory=root_directory
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(os.fspath(socket_path))
        os.chmod(socket_path, 0o600)  # only the service's own user may call the enclave
        server.listen(16)
        print("ready", flush=True)  # the deployer waits for this line
        while enclave.alive:
            connection, _ = server.accept()
            with connection:
                _answer(connection, enclave)
    finally:
        server.close()
        enclave.stop()
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()


def _answer(connection: socket.socket, enclave: EnclaveProcess) -> None:
    connection.settimeout(CALL_TIMEOUT_SECONDS)
    try:
        op, body = _frame_receive(connection, MAX_SEALED_REQUEST_BYTES + 16 + ROW_COUNT.size)
        reply = enclave.attest(body) if op == OP_ATTEST else _run(enclave, op, body)
        _frame_send(connection, _OK, reply)
    except RowLimitExceeded as exc:
        _send_quietly(connection, _ROW_LIMIT, str(exc))
    except EnclaveUnavailable as exc:
        status = _UNAVAILABLE if enclave.alive else _GONE  # the host exits after this answer
        _send_quietly(connection, status, str(exc))
    except SecureComputeError as exc:
        _send_quietly(connection, _REFUSED, str(exc))
    except (OSError, EOFError, ValueError):
        _send_quietly(connection, _REFUSED, "The request frame was malformed.")


def _run(enclave: EnclaveProcess, op: bytes, body: bytes) -> bytes:
    if op != OP_RUN or len(body) < ROW_COUNT.size:
        raise EnclaveError("Unknown enclave operation.")
    (max_rows,) = ROW_COUNT.unpack(body[: ROW_COUNT.size])
    sealed, n_rows = enclave.run_counted(body[ROW_COUNT.size :], max_rows=max_rows)
    return ROW_COUNT.pack(n_rows) + sealed


def _send_quietly(connection: socket.socket, status: bytes, sentence: str) -> None:
    with contextlib.suppress(OSError):
        _frame_send(connection, status, sentence.encode())


def _frame_send(sock: socket.socket, op: bytes, body: bytes) -> None:
    sock.sendall(_HEADER.pack(op, len(body)) + body)


def _frame_receive(sock: socket.socket, limit: int) -> tuple[bytes, bytes]:
    op, length = _HEADER.unpack(_receive_exactly(sock, _HEADER.size))
    if length > limit:
        raise ValueError("frame too large")
    return op, _receive_exactly(sock, length)


def _receive_exactly(sock: socket.socket, n: int) -> bytes:
    chunks, remaining = [], n
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise EOFError("connection closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m secure_compute.enclave_host")
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="the approved skops file")
    parser.add_argument("--root", type=Path, required=True, help="the simulated root's folder")
    args = parser.parse_args(argv)
    try:
        host_serve(socket_path=args.socket, model_path=args.model, root_directory=args.root)
    except SecureComputeError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
