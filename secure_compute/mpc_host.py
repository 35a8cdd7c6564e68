"""The model owner's and the dealer's processes for secure inference, and the partner's call.

``python -m secure_compute.mpc_host owner|dealer ...`` (built by :func:`host_command`)
is a long-lived host that listens on a TCP port with mutual TLS
(:mod:`secure_compute.mpc_transport`) and prints ``ready <port>`` once it does.
Each session runs in a child process of its own, forked for it, so that
CrypTen's process-wide state starts clean and a session that fails or hangs
ends alone (a session longer than :data:`SESSION_SECONDS` is killed).

- The **owner** host holds one endpoint's folded model (written by the service
  with :func:`weights_save`: ``architecture.json`` and ``weights.npz``, no
  pickle). For each partner that connects with a session certificate of this
  endpoint, its child claims the session (``sessions/<id>.json``, created
  exclusively: a session runs once), connects to the dealer, runs
  :func:`~secure_compute.mpc.owner_session` and records how it went there
  (rows, bytes, rounds, the sentence if it failed): a count, never data.
- The **dealer** host pairs the owner's and the partner's connections of one
  session (each first says which session it is; the partner's certificate names
  it) and runs :func:`~secure_compute.mpc.dealer_session` in a child. It can run
  on a host of its own; its certificate names the endpoint it serves.

:func:`partner_predict` is the partner's side: it runs the session in a forked
child too, so a caller (the CLI, the partner's local app) may run many.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from secure_compute import mpc
from secure_compute._processes import pid_runs, python_command
from secure_compute.exceptions import MPCError, MPCUnavailable, SecureComputeError
from secure_compute.mpc_transport import (
    DEALER,
    DEFAULT_TIMEOUT_SECONDS,
    OWNER,
    PARTNER,
    Identity,
    Link,
    PeerIdentity,
    connect,
    handshake_server,
    identity_load,
    listen,
    tls_context,
    transcript_write,
)

_PROGRAM = "secure_compute.mpc_host"
#: The host's environment: nothing of the web service's (no database, key or broker).
HOST_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "TMPDIR", "HOME", "OMP_NUM_THREADS")
#: Longest a session may run before its child is killed.
SESSION_SECONDS = 300
#: Seconds for a peer's TLS handshake and first message.
HANDSHAKE_SECONDS = 10.0
#: Seconds a dealer keeps one side of a session waiting for the other.
PAIRING_SECONDS = 30.0
#: Sessions one host runs at once; more wait in the listen queue.
MAX_SESSIONS = 4

ARCHITECTURE_FILE, WEIGHTS_FILE = "architecture.json", "weights.npz"


# --------------------------------------------------------------------------- the model on disk


def weights_save(model: mpc.FoldedModel, directory: Path) -> None:
    """Write the folded model for the owner host (0600 files in a 0700 directory)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    arrays = {}
    for index, (W, b) in enumerate(model.weights):
        arrays[f"W{index}"], arrays[f"b{index}"] = W, b
    for name, write in (
        (ARCHITECTURE_FILE, lambda f: f.write(json.dumps(model.architecture.to_json()).encode())),
        (WEIGHTS_FILE, lambda f: np.savez(f, **arrays)),
    ):
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            write(file)


def weights_load(directory: Path) -> mpc.FoldedModel:
    architecture = mpc.Architecture.from_json(
        json.loads((directory / ARCHITECTURE_FILE).read_text())
    )
    with np.load(directory / WEIGHTS_FILE, allow_pickle=False) as arrays:
        n = sum(layer.kind == "dense" for layer in architecture.layers)
        weights = [(arrays[f"W{i}"].astype(float), arrays[f"b{i}"].astype(float)) for i in range(n)]
    return mpc._folded(list(architecture.layers), weights, **mpc._public(architecture))


# --------------------------------------------------------------------------- starting a host


def host_command(
    role: str,
    *,
    tls_dir: Path,
    endpoint: str,
    listen_at: str,
    python: str | None = None,
    model_dir: Path | None = None,
    dealer: str | None = None,
    transcript: Path | None = None,
    session_seconds: int = SESSION_SECONDS,
) -> list[str]:
    """The command line that starts an owner or dealer host (see :func:`main`)."""
    command = [*python_command(_PROGRAM, python=python), role]
    command += ["--tls", os.fspath(tls_dir), "--endpoint", endpoint, "--listen", listen_at]
    command += ["--session-seconds", str(session_seconds)]
    if role == "owner":
        command += ["--model", os.fspath(model_dir), "--dealer", dealer]
    if transcript is not None:
        command += ["--transcript", os.fspath(transcript)]
    return command


def host_environment() -> dict[str, str]:
    return {name: os.environ[name] for name in HOST_ENVIRONMENT if name in os.environ}


def host_pid_is_ours(pid: int, tls_dir: str | os.PathLike) -> bool:
    """Whether ``pid`` is a live host of this program using ``tls_dir``
    (:func:`secure_compute._processes.pid_runs`)."""
    return pid_runs(pid, _PROGRAM, "--tls", tls_dir)


def address_parse(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise MPCError(f"{text!r} is not a host:port address.")
    return host.strip("[]"), int(port)


# --------------------------------------------------------------------------- the hosts


@dataclass
class _Host:
    role: str
    identity: Identity
    ca_pem: bytes
    endpoint: str
    children: dict[int, float]
    session_seconds: int = SESSION_SECONDS

    def reap(self) -> None:
        """Collect ended session children; kill one that outlived SESSION_SECONDS."""
        now = time.monotonic()
        for pid, started in list(self.children.items()):
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    del self.children[pid]
                    continue
            if now - started > self.session_seconds + 5:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def fork(self, run) -> None:
        """Run ``run()`` in a child with a deadline; the parent only keeps its PID."""
        pid = os.fork()
        if pid:
            self.children[pid] = time.monotonic()
            return
        status = 1
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _session_deadline(self.session_seconds)
            run()
            status = 0
        except BaseException:  # noqa: BLE001 - a child reports through its record, then ends
            status = 2
        finally:
            os._exit(status)


def _session_deadline(seconds: int = SESSION_SECONDS) -> None:
    """End this session's process with one sentence once it has run ``seconds``."""

    def expired(*_):
        raise MPCUnavailable(f"The session ran longer than {seconds} s and was stopped.")

    signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)


def owner_serve(
    *,
    tls_dir: Path,
    endpoint: str,
    listen_at: tuple[str, int],
    model_dir: Path,
    dealer: tuple[str, int],
    transcript: Path | None = None,
    session_seconds: int = SESSION_SECONDS,
) -> None:
    """Serve sessions of one endpoint's model until SIGTERM (see the module's docstring).

    With ``transcript`` (a folder), each session also keeps what this host received
    from the partner and the dealer in ``<id>.owner.frames`` there: what the owner saw.
    """
    model = weights_load(model_dir)
    sessions = model_dir / "sessions"
    sessions.mkdir(exist_ok=True, mode=0o700)
    host = _Host("owner", *_credentials(tls_dir, "owner"), endpoint, {}, session_seconds)
    server_context = tls_context(host.identity, host.ca_pem, server=True)
    client_context = tls_context(host.identity, host.ca_pem, server=False)

    def session(raw: socket.socket) -> None:
        sock, peer = handshake_server(raw, server_context, timeout=HANDSHAKE_SECONDS)
        partner = Link(sock, PARTNER, record=transcript is not None)
        try:
            if peer.role != "partner" or peer.endpoint != endpoint or not peer.session:
                raise MPCError(
                    "Only a partner's session certificate for this endpoint is taken here."
                )
            record = _claim(sessions, peer.session)
        except SecureComputeError as exc:
            partner.stop(exc)
            return
        outcome: dict = {"session": peer.session, "status": "failed"}
        links = {PARTNER: partner}
        try:
            dealer_sock = connect(
                dealer,
                client_context,
                timeout=HANDSHAKE_SECONDS,
                expect=PeerIdentity("dealer", endpoint),
                title="the dealer",
            )
            links[DEALER] = Link(dealer_sock, DEALER, record=partner.record)
            links[DEALER].send_object({"session": peer.session})
            n_rows, stats = mpc.owner_session(model, links, max_rows=peer.rows or 0)
            outcome |= {
                "status": "done",
                "n_rows": n_rows,
                "bytes_sent": stats.bytes_sent,
                "bytes_received": stats.bytes_received,
                "rounds": stats.rounds,
            }
        except SecureComputeError as exc:
            outcome["error"] = str(exc)
            partner.stop(exc)
        except Exception:  # noqa: BLE001 - CrypTen's own errors: one sentence, no traceback
            failure = MPCUnavailable("The model owner's side of the session failed.")
            outcome["error"] = str(failure)
            partner.stop(failure)
        finally:
            _record(record, outcome)
            if transcript is not None:
                seen = [frame for link in links.values() for frame in link.received]
                transcript_write(transcript / f"{peer.session}.owner.frames", seen)

    _serve(host, listen_at, session)


def _credentials(tls_dir: Path, role: str) -> tuple[Identity, bytes]:
    return identity_load(tls_dir, role), (tls_dir / "ca.pem").read_bytes()


def _claim(sessions: Path, session: str, outcome: dict | None = None) -> Path:
    """Create ``session``'s record, exclusively: a session runs (or is voided) once."""
    if not session.isalnum() or len(session) > 64:
        raise MPCError("The session certificate names no valid session.")
    record = sessions / f"{session}.json"
    try:
        fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise MPCError("This session has run already: open a new one.") from None
    with os.fdopen(fd, "w") as file:
        json.dump(outcome or {"session": session, "status": "running"}, file)
    return record


def session_void(model_dir: Path, session: str) -> dict:
    """Make sure a session that has not started never can; return its record.

    The service calls this when a partner closes a session the owner host never
    saw: the record is claimed as failed, so that certificate cannot run it later.
    A session that started meanwhile keeps its own record.
    """
    sessions = model_dir / "sessions"
    sessions.mkdir(exist_ok=True, mode=0o700)
    outcome = {"session": session, "status": "failed", "error": "The session never ran."}
    try:
        _claim(sessions, session, outcome)
    except MPCError:
        return session_record(model_dir, session) or {"status": "running"}
    return outcome


def _record(path: Path, outcome: dict) -> None:
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(outcome))
    os.replace(scratch, path)


def session_record(model_dir: Path, session: str) -> dict | None:
    """What the owner host recorded of ``session``: None before it started."""
    if not session.isalnum():
        return None
    try:
        return json.loads((model_dir / "sessions" / f"{session}.json").read_text())
    except (OSError, ValueError):
        return None


def dealer_serve(
    *,
    tls_dir: Path,
    endpoint: str,
    listen_at: tuple[str, int],
    transcript: Path | None = None,
    session_seconds: int = SESSION_SECONDS,
) -> None:
    """Pair each session's owner and partner and deal for it, until SIGTERM.

    With ``transcript`` (a folder), each session keeps what the dealer received in
    ``<id>.dealer.frames`` there.
    """
    host = _Host("dealer", *_credentials(tls_dir, "dealer"), endpoint, {}, session_seconds)
    context = tls_context(host.identity, host.ca_pem, server=True)
    waiting: dict[str, tuple[float, dict[int, Link]]] = {}

    def arrive(raw: socket.socket) -> None:
        try:
            sock, peer = handshake_server(raw, context, timeout=HANDSHAKE_SECONDS)
        except SecureComputeError:
            return
        rank = {"owner": OWNER, "partner": PARTNER}.get(peer.role)
        link = Link(
            sock,
            rank if rank is not None else PARTNER,
            timeout=HANDSHAKE_SECONDS,
            record=transcript is not None,
        )
        try:
            if rank is None or peer.endpoint != endpoint:
                raise MPCError("Only this endpoint's model owner and partners are dealt for here.")
            hello = link.receive_object()
            session = hello.get("session") if isinstance(hello, dict) else None
            if not isinstance(session, str) or (rank == PARTNER and session != peer.session):
                raise MPCError("The first message to the dealer must name the session.")
        except SecureComputeError as exc:
            link.stop(exc)
            return
        link.sock.settimeout(DEFAULT_TIMEOUT_SECONDS)
        link.timeout = DEFAULT_TIMEOUT_SECONDS
        _, links = waiting.setdefault(session, (time.monotonic(), {}))
        if rank in links:
            link.stop(MPCError("This session already has that party."))
            return
        links[rank] = link
        if len(links) == 2:
            del waiting[session]
            where = None if transcript is None else transcript / f"{session}.dealer.frames"
            host.fork(lambda: _deal(links, where))
            for each in links.values():
                each.close()

    def expire() -> None:
        now = time.monotonic()
        for session, (since, links) in list(waiting.items()):
            if now - since > PAIRING_SECONDS:
                del waiting[session]
                missing = "the partner" if OWNER in links else "the model owner"
                for link in links.values():
                    link.stop(
                        MPCUnavailable(f"The dealer waited {PAIRING_SECONDS:g} s for {missing}.")
                    )

    _serve(host, listen_at, arrive, tick=expire, in_child=False)


def _deal(links: dict[int, Link], transcript: Path | None) -> None:
    try:
        mpc.dealer_session(links)
    except SecureComputeError as exc:
        for link in links.values():
            link.stop(exc)
    finally:
        if transcript is not None:
            seen = [frame for link in links.values() for frame in link.received]
            transcript_write(transcript, seen)


def _serve(host: _Host, listen_at: tuple[str, int], handle, *, tick=None, in_child=True) -> None:
    """Accept connections until SIGTERM; each is handled in a forked child (or here)."""
    from secure_compute._crypten_compat import crypten_module

    crypten_module()  # imported once here, not in every session's child
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    listener = listen(listen_at)
    print(f"ready {listener.getsockname()[1]}", flush=True)  # the deployer waits for this line
    try:
        while not stopping:
            host.reap()
            if tick:
                tick()
            if len(host.children) >= MAX_SESSIONS:
                time.sleep(0.05)
                continue
            with contextlib.suppress(InterruptedError):
                ready, _, _ = select.select([listener], [], [], 0.5)
            if not ready:
                continue
            raw, _ = listener.accept()
            if in_child:
                host.fork(lambda raw=raw: (listener.close(), handle(raw)))
                raw.close()
            else:
                handle(raw)
    finally:
        listener.close()
        for pid in host.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


# --------------------------------------------------------------------------- the partner


@dataclass(frozen=True)
class SessionTicket:
    """What the service gives a partner for one session (the key is the partner's own)."""

    endpoint: str
    session: str
    owner: tuple[str, int]
    dealer: tuple[str, int]
    ca_pem: bytes
    identity: Identity
    architecture: mpc.Architecture
    precision_bits: int = mpc.PRECISION_BITS


def partner_predict(
    ticket: SessionTicket, X, *, timeout: float = SESSION_SECONDS, record: bool = False
) -> mpc.Prediction | tuple[mpc.Prediction, list[tuple[int, bytes]]]:
    """Run one session as the partner, in a forked child; return what the partner learns.

    With ``record``, also every frame (kind, body) the partner's process received.

    Raises
    ------
    MPCError
        If the rows are refused, or a peer refused this party or sent a bad message.
    MPCUnavailable
        If the owner or the dealer is down, disconnected or stopped answering.
    """
    from secure_compute._crypten_compat import crypten_module

    X = mpc.rows_check(ticket.architecture, X)
    crypten_module()  # once per caller process, before the fork
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_partner_child, args=(ticket, X, sender, record), daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            raise MPCUnavailable(f"The session did not finish in {timeout:g} s.")
        kind, payload = _received(receiver)
    finally:
        receiver.close()
        child.join(5)
        if child.is_alive():
            child.kill()
            child.join()
    if kind == "error":
        raise payload
    return payload


def _received(receiver):
    try:
        return receiver.recv()
    except EOFError:
        raise MPCUnavailable("The partner's session process ended without an answer.") from None


def _partner_child(ticket: SessionTicket, X, sender, record: bool) -> None:
    _session_deadline()
    try:
        context = tls_context(ticket.identity, ticket.ca_pem, server=False)
        links = {}
        for rank, address, role, title in (
            (OWNER, ticket.owner, "owner", "the model owner"),
            (DEALER, ticket.dealer, "dealer", "the dealer"),
        ):
            sock = connect(
                address,
                context,
                timeout=HANDSHAKE_SECONDS,
                expect=PeerIdentity(role, ticket.endpoint),
                title=title,
            )
            links[rank] = Link(sock, rank, record=record)
        links[DEALER].send_object({"session": ticket.session})
        prediction = mpc.partner_session(
            ticket.architecture, X, links, precision_bits=ticket.precision_bits
        )
        received = [frame for link in links.values() for frame in link.received]
        sender.send(("ok", (prediction, received) if record else prediction))
    except SecureComputeError as exc:
        sender.send(("error", type(exc)(str(exc))))
    except Exception:  # noqa: BLE001 - CrypTen's own errors: one sentence
        sender.send(("error", MPCUnavailable("The partner's side of the session failed.")))
    finally:
        sender.close()


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m secure_compute.mpc_host")
    parser.add_argument("role", choices=("owner", "dealer"))
    parser.add_argument("--tls", type=Path, required=True, help="ca.pem and this host's pem/key")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0: any free)")
    parser.add_argument("--model", type=Path, help="the folded model's folder (owner)")
    parser.add_argument("--dealer", help="the dealer's host:port (owner)")
    parser.add_argument("--session-seconds", type=int, default=SESSION_SECONDS)
    parser.add_argument(
        "--transcript", type=Path, help="keep what each session received here (for audits, tests)"
    )
    args = parser.parse_args(argv)
    try:
        listen_at = address_parse(args.listen)
        if args.role == "owner":
            if args.model is None or args.dealer is None:
                raise MPCError("An owner host needs --model and --dealer.")
            owner_serve(
                tls_dir=args.tls,
                endpoint=args.endpoint,
                listen_at=listen_at,
                model_dir=args.model,
                dealer=address_parse(args.dealer),
                transcript=args.transcript,
                session_seconds=args.session_seconds,
            )
        else:
            dealer_serve(
                tls_dir=args.tls,
                endpoint=args.endpoint,
                listen_at=listen_at,
                transcript=args.transcript,
                session_seconds=args.session_seconds,
            )
    except (SecureComputeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
