"""A long-lived host for one enclave, reachable by any web process over a Unix socket.

The web app runs several processes; an :class:`~secure_compute.enclave.EnclaveProcess`
belongs to the process that started it. ``python -m secure_compute.enclave_host``
starts the enclave and forwards framed requests from a Unix socket to it, one at
a time. It only moves bytes: requests arrive sealed, answers leave sealed.

Frame (both ways): one byte, a 4-byte big-endian length, the body. Requests:
``A`` + nonce (attest) or ``R`` + sealed request (run). Replies: ``0`` + body,
``1`` + sentence (refused: :class:`EnclaveError`), ``2`` + sentence (unavailable).
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

from secure_compute.enclave import EnclaveProcess
from secure_compute.exceptions import EnclaveError, EnclaveUnavailable, SecureComputeError
from secure_compute.sealing import MAX_SEALED_REQUEST_BYTES, MAX_SEALED_RESPONSE_BYTES

OP_ATTEST, OP_RUN = b"A", b"R"
_OK, _REFUSED, _UNAVAILABLE = b"0", b"1", b"2"
_HEADER = struct.Struct(">cI")
#: Seconds a caller waits for the host; a prediction on the largest request fits well.
CALL_TIMEOUT_SECONDS = 120.0


def host_call(socket_path: str | os.PathLike, op: bytes, body: bytes) -> bytes:
    """Send one request to the host at ``socket_path`` and return the answer's body.

    Raises
    ------
    EnclaveError
        If the enclave refused the request.
    EnclaveUnavailable
        If the host is not running or does not answer.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(CALL_TIMEOUT_SECONDS)
            sock.connect(os.fspath(socket_path))
            _frame_send(sock, op, body)
            status, reply = _frame_receive(sock, MAX_SEALED_RESPONSE_BYTES + 4096)
    except (OSError, EOFError):
        raise EnclaveUnavailable("The enclave endpoint is not running.") from None
    if status == _OK:
        return reply
    error = EnclaveError if status == _REFUSED else EnclaveUnavailable
    raise error(reply.decode("utf-8", errors="replace"))


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
        op, body = _frame_receive(connection, MAX_SEALED_REQUEST_BYTES + 16)
        reply = enclave.attest(body) if op == OP_ATTEST else _run(enclave, op, body)
        _frame_send(connection, _OK, reply)
    except EnclaveUnavailable as exc:
        _send_quietly(connection, _UNAVAILABLE, str(exc))
    except SecureComputeError as exc:
        _send_quietly(connection, _REFUSED, str(exc))
    except (OSError, EOFError, ValueError):
        _send_quietly(connection, _REFUSED, "The request frame was malformed.")


def _run(enclave: EnclaveProcess, op: bytes, body: bytes) -> bytes:
    if op != OP_RUN:
        raise EnclaveError("Unknown enclave operation.")
    return enclave.run(body)


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
