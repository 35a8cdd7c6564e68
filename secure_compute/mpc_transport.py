"""The parties' channels for secure inference: mutual TLS, framed, and CrypTen's communicator.

Three parties take part in a session: the model owner (rank 0, the TRE's
server), the partner (rank 1, who holds the rows) and the dealer (rank 2,
CrypTen's trusted third party, who supplies correlated randomness and sees
neither). Each pair talks over its own TLS 1.3 connection on which both sides
show a certificate from the endpoint's certificate authority
(:func:`ca_create`); a peer whose certificate another authority signed, that
has expired, or that names another role, endpoint or session is refused
during the handshake or right after it (:func:`peer_identity`). The partner
only connects out: the owner and the dealer listen.

A certificate names its holder in one URI (subject alternative name)::

    tre-audit://mpc/<role>?endpoint=<id>[&session=<id>&rows=<n>]

A partner's certificate is issued per session (:func:`csr_sign`, from a key
the partner made and kept, :func:`csr_create`), for at most ``rows`` rows;
the owner's host refuses a session it has already seen.

Frame (each way, inside TLS): ``b"TRMP"``, a kind byte, a sequence number
(8 bytes, counting from 0 in each direction) and a 4-byte length, then the
body. A tensor body is a rank byte, 4 bytes per dimension and the int64
values; an object body is JSON (sizes and tuples tagged), never a pickle. A
frame out of sequence (replayed, dropped or reordered), of the wrong kind,
shape or size, a connection that closes inside a frame, or a peer silent for
longer than the link's timeout ends the session with one sentence.

:class:`TlsCommunicator` is CrypTen's communicator over these links, in place
of its ``torch.distributed`` one; :func:`crypten_setup` installs it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import socket
import ssl
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from secure_compute.exceptions import MPCError, MPCUnavailable

OWNER, PARTNER, DEALER = 0, 1, 2
ROLE_NAMES = {OWNER: "owner", PARTNER: "partner", DEALER: "dealer"}
#: How each party is called in a sentence.
ROLE_TITLES = {OWNER: "the model owner", PARTNER: "the partner", DEALER: "the dealer"}

MAGIC = b"TRMP"
_HEADER = struct.Struct(">4sBQI")
KIND_TENSOR, KIND_OBJECT, KIND_STOP = 1, 2, 3
_KIND_NAMES = {KIND_TENSOR: "a tensor", KIND_OBJECT: "a message", KIND_STOP: "a stop"}

#: Largest frame body: 188 rows through a 30-16-2 MLP send under 100 kB a frame.
MAX_FRAME_BYTES = 64 * 2**20
#: Largest tensor rank and element count in a frame.
MAX_TENSOR_RANK = 8
#: Seconds a party waits for a peer's next frame before it gives the session up.
DEFAULT_TIMEOUT_SECONDS = 60.0
#: A partner's session certificate is valid this long after it is issued.
SESSION_CERT_SECONDS = 600
#: The endpoint authority's and the hosts' certificates.
ENDPOINT_CERT_DAYS = 365

_URI_PREFIX = "tre-audit://mpc/"


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Identity:
    """A party's certificate chain and private key, PEM; the key never leaves its party."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class PeerIdentity:
    """Who a certificate says its holder is."""

    role: str
    endpoint: str
    session: str | None = None
    rows: int | None = None


def ca_create(*, endpoint: str, now: dt.datetime | None = None) -> Identity:
    """A new certificate authority for one endpoint's parties (its key stays with the service)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"tre-audit MPC endpoint {endpoint}")]
    )
    now = now or dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=ENDPOINT_CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Identity(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def identity_issue(
    ca: Identity, *, role: str, endpoint: str, now: dt.datetime | None = None
) -> Identity:
    """A key and certificate for the owner's or the dealer's host of ``endpoint``."""
    if role not in ("owner", "dealer"):
        raise MPCError(f"Host certificates are for the owner and the dealer, not {role}.")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(
        ca,
        key.public_key(),
        PeerIdentity(role, endpoint),
        now=now,
        valid=dt.timedelta(days=ENDPOINT_CERT_DAYS),
    )
    return Identity(cert, _key_pem(key))


def csr_create() -> tuple[bytes, bytes]:
    """A partner's new private key and its certificate request, both PEM; send only the request."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "partner")]))
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def csr_sign(
    ca: Identity,
    csr_pem: bytes,
    *,
    endpoint: str,
    session: str,
    rows: int,
    now: dt.datetime | None = None,
) -> bytes:
    """The partner's certificate for one session of at most ``rows`` rows (PEM).

    Raises
    ------
    MPCError
        If ``csr_pem`` is not a certificate request signed by its own key.
    """
    try:
        csr = x509.load_pem_x509_csr(bytes(csr_pem))
        signed = csr.is_signature_valid
        public_key = csr.public_key()
    except (ValueError, TypeError):
        raise MPCError("The certificate request is not a PEM certificate request.") from None
    if not signed or not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise MPCError("The certificate request must be an EC key's, signed by that key.")
    return _certificate(
        ca,
        public_key,
        PeerIdentity("partner", endpoint, session, rows),
        now=now,
        valid=dt.timedelta(seconds=SESSION_CERT_SECONDS),
    )


def peer_identity(cert_der: bytes | None) -> PeerIdentity:
    """Read who a (chain-verified) peer certificate names; refuse one without our URI."""
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    except (ValueError, TypeError, x509.ExtensionNotFound):
        raise MPCError("The peer's certificate names no tre-audit party.") from None
    for uri in uris:
        if uri.startswith(_URI_PREFIX):
            parts = urlsplit(uri)
            query = {key: values[0] for key, values in parse_qs(parts.query).items()}
            rows = query.get("rows")
            return PeerIdentity(
                role=parts.path.strip("/"),
                endpoint=query.get("endpoint", ""),
                session=query.get("session"),
                rows=int(rows) if rows and rows.isdigit() else None,
            )
    raise MPCError("The peer's certificate names no tre-audit party.")


def _certificate(
    ca: Identity, public_key, peer: PeerIdentity, *, now: dt.datetime | None, valid: dt.timedelta
) -> bytes:
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    query = {"endpoint": peer.endpoint}
    if peer.session is not None:
        query |= {"session": peer.session, "rows": str(peer.rows)}
    uri = f"{_URI_PREFIX}{peer.role}?{urlencode(query)}"
    now = now or dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, peer.role)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + valid)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def identity_save(identity: Identity, directory: Path, name: str) -> None:
    """Write ``name.pem`` and ``name.key`` (0600) into ``directory`` (0700)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    (directory / f"{name}.pem").write_bytes(identity.cert_pem)
    key_path = directory / f"{name}.key"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(identity.key_pem)


def identity_load(directory: Path, name: str) -> Identity:
    return Identity(
        (directory / f"{name}.pem").read_bytes(), (directory / f"{name}.key").read_bytes()
    )


def tls_context(identity: Identity, ca_pem: bytes, *, server: bool) -> ssl.SSLContext:
    """TLS 1.3 that shows ``identity`` and accepts only peers the endpoint's authority signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False  # peers are named by role in the certificate's URI
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=ca_pem.decode("ascii"))
    with tempfile.TemporaryDirectory(prefix="tre-mpc-") as scratch:  # ssl loads keys from files
        cert, key = Path(scratch) / "cert.pem", Path(scratch) / "key.pem"
        cert.write_bytes(identity.cert_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(identity.key_pem)
        context.load_cert_chain(cert, key)
    return context


# --------------------------------------------------------------------------- links


@dataclass
class LinkStats:
    """What crossed one link, counted on the wire (frame headers and bodies, not TLS records)."""

    bytes_sent: int = 0
    bytes_received: int = 0
    frames_sent: int = 0
    frames_received: int = 0


@dataclass
class Link:
    """One party's end of a framed, TLS-protected connection to one peer.

    ``received`` keeps every frame (kind, body) that arrived when ``record`` is
    set: what this party saw (:func:`transcript_values` reads it), for the tests
    that check neither side sees the other's data.
    """

    sock: socket.socket
    peer: int
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    record: bool = False
    stats: LinkStats = field(default_factory=LinkStats)
    received: list[tuple[int, bytes]] = field(default_factory=list)
    _sent_seq: int = 0
    _received_seq: int = 0

    def __post_init__(self):
        self.sock.settimeout(self.timeout)

    @property
    def peer_title(self) -> str:
        return ROLE_TITLES[self.peer]

    def send(self, kind: int, body: bytes) -> None:
        frame = _HEADER.pack(MAGIC, kind, self._sent_seq, len(body)) + body
        try:
            self.sock.sendall(frame)
        except (OSError, ssl.SSLError):
            raise self._why_closed() from None
        self._sent_seq += 1
        self.stats.bytes_sent += len(frame)
        self.stats.frames_sent += 1

    def receive(self, kind: int) -> bytes:
        header = self._read(_HEADER.size, inside=False)
        magic, got_kind, seq, length = _HEADER.unpack(header)
        if magic != MAGIC:
            raise MPCError(f"{self._from()} is not a tre-audit MPC frame.")
        if seq != self._received_seq:
            raise MPCError(
                f"{self._from()} is out of sequence (number {seq}, expected "
                f"{self._received_seq}): a replayed or dropped message; the session stops."
            )
        if length > MAX_FRAME_BYTES:
            raise MPCError(f"{self._from()} claims {length} bytes, over {MAX_FRAME_BYTES}.")
        body = self._read(length, inside=True)
        self._received_seq += 1
        self.stats.bytes_received += _HEADER.size + length
        self.stats.frames_received += 1
        if got_kind == KIND_STOP:  # b"R" + sentence: refused; b"U" + sentence: gave up
            error = MPCError if body[:1] == b"R" else MPCUnavailable
            raise error(_stop_sentence(self.peer_title, body[1:]))
        if got_kind != kind:
            raise MPCError(
                f"{self._from()} is {_KIND_NAMES.get(got_kind, 'of no known kind')}, "
                f"where {_KIND_NAMES[kind]} was expected."
            )
        if self.record:
            self.received.append((got_kind, bytes(body)))
        return body

    def stop(self, error: Exception) -> None:
        """Tell the peer why this party ends the session (best effort), then close.

        The peer raises the same kind: MPCError for a refusal, MPCUnavailable otherwise.
        """
        kind = b"R" if isinstance(error, MPCError) else b"U"
        with contextlib.suppress(Exception):
            self.send(KIND_STOP, kind + str(error).encode()[:500])
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def _read(self, size: int, *, inside: bool) -> bytes:
        chunks, left = [], size
        while left:
            try:
                chunk = self.sock.recv(min(left, 1 << 20))
            except TimeoutError:
                raise MPCUnavailable(
                    f"{self.peer_title.capitalize()} stopped answering for "
                    f"{self.timeout:g} s; the session was stopped."
                ) from None
            except (OSError, ssl.SSLError):
                raise self._gone() from None
            if not chunk:
                if inside or chunks:
                    raise MPCError(
                        f"{self._from()} was cut short: {self.peer_title} disconnected "
                        "inside a message."
                    )
                raise self._gone()
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _why_closed(self) -> Exception:
        """After a failed send: the peer's stop frame if it left one, else 'disconnected'."""
        self.sock.settimeout(1.0)
        try:
            self.receive(KIND_STOP)
        except (MPCError, MPCUnavailable) as exc:
            return exc
        return self._gone()

    def _from(self) -> str:
        return f"A message from {self.peer_title}"

    def _gone(self) -> MPCUnavailable:
        return MPCUnavailable(f"{self.peer_title.capitalize()} disconnected mid-protocol.")

    # ------------------------------------------------------------ typed frames

    def send_tensor(self, tensor) -> None:
        array = np.asarray(tensor.detach().cpu().numpy(), dtype="<i8")  # keeps rank 0
        shape = struct.pack(f">B{array.ndim}I", array.ndim, *array.shape)
        self.send(KIND_TENSOR, shape + array.tobytes(order="C"))

    def receive_tensor(self, shape: tuple[int, ...] | None = None):
        """The next tensor (int64); if ``shape`` is given, it must be that shape."""
        import torch

        body = self.receive(KIND_TENSOR)
        if not body or body[0] > MAX_TENSOR_RANK:
            raise MPCError(f"{self._from()} holds a tensor of no valid rank.")
        rank = body[0]
        if len(body) < 1 + 4 * rank:
            raise MPCError(f"{self._from()} holds a truncated tensor header.")
        got = struct.unpack(f">{rank}I", body[1 : 1 + 4 * rank])
        data = body[1 + 4 * rank :]
        if len(data) != 8 * int(np.prod(got, dtype=np.int64)):
            raise MPCError(f"{self._from()} holds {len(data)} bytes for a {list(got)} tensor.")
        if shape is not None and math.prod(got) != math.prod(shape):  # as gloo: sizes must agree
            raise MPCError(
                f"{self._from()} holds a {list(got)} tensor where {list(shape)} was due."
            )
        array = np.frombuffer(data, dtype="<i8").reshape(got if shape is None else shape)
        return torch.from_numpy(array.astype(np.int64))

    def send_object(self, obj) -> None:
        self.send(KIND_OBJECT, json.dumps(_tagged(obj), separators=(",", ":")).encode())

    def receive_object(self):
        body = self.receive(KIND_OBJECT)
        try:
            return _untagged(json.loads(body))
        except (ValueError, TypeError, RecursionError):
            raise MPCError(f"{self._from()} is not a valid JSON message.") from None


def transcript_write(path: Path, frames: list[tuple[int, bytes]]) -> None:
    """Keep what a party received in a session (0600): shares and messages, never data."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        for kind, body in frames:
            file.write(struct.pack(">BI", kind, len(body)) + body)


def transcript_read(path: Path) -> list[tuple[int, bytes]]:
    data, frames, at = path.read_bytes(), [], 0
    while at < len(data):
        kind, length = struct.unpack_from(">BI", data, at)
        frames.append((kind, data[at + 5 : at + 5 + length]))
        at += 5 + length
    return frames


def transcript_values(frames: list[tuple[int, bytes]]) -> tuple[np.ndarray, list]:
    """Every int64 a party received, flattened, and every message (JSON, untagged)."""
    values, messages = [np.zeros(0, dtype=np.int64)], []
    for kind, body in frames:
        if kind == KIND_TENSOR:
            rank = body[0]
            values.append(np.frombuffer(body[1 + 4 * rank :], dtype="<i8").astype(np.int64))
        elif kind == KIND_OBJECT:
            messages.append(_untagged(json.loads(body)))
    return np.concatenate(values), messages


def _stop_sentence(title: str, body: bytes) -> str:
    reason = body.decode("utf-8", errors="replace").strip()
    return (
        f"{title.capitalize()} stopped the session: {reason}"
        if reason
        else (f"{title.capitalize()} stopped the session.")
    )


def _tagged(obj):
    """JSON form of what CrypTen sends as objects: sizes, tuples, dicts, scalars, strings."""
    import torch

    if isinstance(obj, torch.Size):
        return {"size": [int(n) for n in obj]}
    if isinstance(obj, tuple):
        return {"tuple": [_tagged(item) for item in obj]}
    if isinstance(obj, list):
        return [_tagged(item) for item in obj]
    if isinstance(obj, dict):
        return {"dict": {str(key): _tagged(value) for key, value in obj.items()}}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise MPCError(f"A {type(obj).__name__} cannot be sent between the parties.")


def _untagged(obj):
    import torch

    if isinstance(obj, list):
        return [_untagged(item) for item in obj]
    if isinstance(obj, dict):
        if set(obj) == {"size"} and all(isinstance(n, int) and n >= 0 for n in obj["size"]):
            return torch.Size(obj["size"])
        if set(obj) == {"tuple"} and isinstance(obj["tuple"], list):
            return tuple(_untagged(item) for item in obj["tuple"])
        if set(obj) == {"dict"} and isinstance(obj["dict"], dict):
            return {key: _untagged(value) for key, value in obj["dict"].items()}
        raise ValueError("untagged object")
    return obj


def listen(address: tuple[str, int], *, backlog: int = 16) -> socket.socket:
    """A TCP socket listening on ``address`` (port 0 picks a free one)."""
    listener = socket.create_server(address, backlog=backlog, reuse_port=False)
    return listener


def accept(
    listener: socket.socket, context: ssl.SSLContext, *, timeout: float
) -> tuple[ssl.SSLSocket, PeerIdentity]:
    """Accept one connection and finish its TLS handshake; name the peer."""
    raw, _ = listener.accept()
    return handshake_server(raw, context, timeout=timeout)


def handshake_server(
    raw: socket.socket, context: ssl.SSLContext, *, timeout: float
) -> tuple[ssl.SSLSocket, PeerIdentity]:
    raw.settimeout(timeout)
    _no_delay(raw)
    try:
        sock = context.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError) as exc:
        raw.close()
        raise MPCError(
            f"A peer was refused during the TLS handshake ({_ssl_reason(exc)})."
        ) from None
    return sock, peer_identity(sock.getpeercert(binary_form=True))


def connect(
    address: tuple[str, int],
    context: ssl.SSLContext,
    *,
    timeout: float,
    expect: PeerIdentity,
    title: str,
) -> ssl.SSLSocket:
    """Connect to ``address`` over TLS; the server must be ``expect`` (role and endpoint)."""
    try:
        raw = socket.create_connection(address, timeout=timeout)
    except OSError:
        raise MPCUnavailable(
            f"{title.capitalize()} is not reachable at {address[0]}:{address[1]}."
        ) from None
    _no_delay(raw)
    try:
        sock = context.wrap_socket(raw)
    except (ssl.SSLError, OSError) as exc:
        raw.close()
        raise MPCError(
            f"{title.capitalize()} was refused during the TLS handshake ({_ssl_reason(exc)})."
        ) from None
    peer = peer_identity(sock.getpeercert(binary_form=True))
    if (peer.role, peer.endpoint) != (expect.role, expect.endpoint):
        sock.close()
        raise MPCError(
            f"{title.capitalize()}'s certificate names {peer.role} of endpoint {peer.endpoint}, "
            f"not {expect.role} of endpoint {expect.endpoint}."
        )
    return sock


def _no_delay(sock: socket.socket) -> None:
    """Send each frame at once: the protocol is many small request-answer rounds, which
    Nagle's algorithm would hold back for the peer's delayed ACK (40 ms a round)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or type(exc).__name__
    return str(reason).replace("_", " ").lower()


# --------------------------------------------------------------------------- CrypTen's communicator


class _Done:
    def wait(self):
        return None


class _Pending:
    def __init__(self, finish):
        self._finish = finish

    def wait(self):
        return self._finish()


class TlsCommunicator:
    """CrypTen's communicator for two computing parties and a dealer over :class:`Link` s.

    Rank 0 and 1 compute (``main_group``); rank 2 is the dealer, which talks to
    both to set up shared seeds and to rank 0 for each correlated value
    (``ttp_comm_group``). Collectives between the two computing parties are a
    pairwise exchange in a fixed order (the lower rank sends first), so no
    exchange can deadlock on full socket buffers.
    """

    BYTES_PER_ELEMENT = 8
    instance: TlsCommunicator | None = None
    _pending: tuple[int, dict[int, Link]] | None = None

    main_group = (OWNER, PARTNER)
    ttp_group = (OWNER, PARTNER, DEALER)
    ttp_comm_group = (OWNER, DEALER)
    ttp_initialized = True

    def __init__(self, rank: int, links: dict[int, Link]):
        self.rank, self.links = rank, links
        self._name = ROLE_NAMES[rank]

    # --------------------------------------------------- CrypTen's class interface

    @classmethod
    def configure(cls, rank: int, links: dict[int, Link]) -> None:
        """Say which links the next ``crypten.init()`` in this process uses."""
        cls._pending = (rank, links)

    @classmethod
    def is_initialized(cls):
        return cls.instance is not None

    @classmethod
    def get(cls):
        return cls.instance

    @classmethod
    def initialize(cls, rank=None, world_size=None, init_ttp=False):
        if cls._pending is None:
            raise MPCError("The secure-inference links were not set up before CrypTen.")
        cls.instance = cls(*cls._pending)
        cls._pending = None

    @classmethod
    def shutdown(cls):
        cls.instance = None

    def get_world_size(self):
        return 2

    def get_rank(self):
        return self.rank

    def get_ttp_rank(self):
        return DEALER

    def set_name(self, name):
        self._name = name

    def get_name(self):
        return self._name

    def reset_communication_stats(self):
        for link in self.links.values():
            link.stats = LinkStats()

    def get_communication_stats(self):
        return {
            "rounds": sum(link.stats.frames_sent for link in self.links.values()),
            "bytes": sum(link.stats.bytes_sent for link in self.links.values()),
            "time": 0.0,
        }

    # --------------------------------------------------- point to point

    def send(self, tensor, dst, group=None):
        self.links[dst].send_tensor(tensor)

    def recv(self, tensor, src=None, group=None):
        return self.links[src].receive_tensor(tuple(tensor.size()))

    def isend(self, tensor, dst, group=None):
        self.send(tensor, dst)
        return _Done()

    def irecv(self, tensor, src=None, group=None):
        return _Pending(lambda: tensor.copy_(self.recv(tensor, src)))

    def send_obj(self, obj, dst, group=None):
        self.links[dst].send_object(obj)

    def recv_obj(self, src, group=None):
        return self.links[src].receive_object()

    # --------------------------------------------------- collectives

    def _others(self, group) -> list[int]:
        return [rank for rank in (group or self.main_group) if rank != self.rank]

    def _exchange(self, tensor, peer):
        """Send ours, receive theirs, lower rank first."""
        if self.rank < peer:
            self.send(tensor, peer)
            return self.recv(tensor, peer)
        theirs = self.recv(tensor, peer)
        self.send(tensor, peer)
        return theirs

    def broadcast(self, input, src, group=None, batched=False):
        tensors = input if batched else [input]
        for tensor in tensors:
            if self.rank == src:
                for peer in self._others(group):
                    self.send(tensor, peer)
            else:
                tensor.data.copy_(self.recv(tensor, src))
        return input

    def broadcast_obj(self, obj, src, group=None):
        if self.rank == src:
            for peer in self._others(group):
                self.send_obj(obj, peer)
            return obj
        return self.recv_obj(src)

    def all_reduce(self, input, op=None, batched=False):
        (peer,) = self._others(None)
        tensors = input if batched else [input]
        result = [_combine(t, self._exchange(t, peer), op) for t in tensors]
        return result if batched else result[0]

    def reduce(self, input, dst, op=None, batched=False):
        tensors = input if batched else [input]
        if self.rank != dst:
            for tensor in tensors:
                self.send(tensor, dst)
            return None
        (peer,) = self._others(None)
        result = [_combine(t, self.recv(t, peer), op) for t in tensors]
        return result if batched else result[0]

    def gather(self, tensor, dst):
        if self.rank != dst:
            self.send(tensor, dst)
            return [None]
        (peer,) = self._others(None)
        theirs = self.recv(tensor, peer)
        return [tensor, theirs] if self.rank == OWNER else [theirs, tensor]

    def all_gather(self, tensor):
        (peer,) = self._others(None)
        theirs = self._exchange(tensor, peer)
        return [tensor, theirs] if self.rank == OWNER else [theirs, tensor]

    def scatter(self, scatter_list, src, size=None, device=None):
        if self.rank == src:
            for peer in self._others(None):
                self.send(scatter_list[peer], peer)
            return scatter_list[self.rank]
        import torch

        shape = size if size is not None else scatter_list[self.rank].size()
        return self.recv(torch.empty(shape, dtype=torch.long), src)

    def barrier(self):
        (peer,) = self._others(None)
        if self.rank < peer:
            self.send_obj("barrier", peer)
            reply = self.recv_obj(peer)
        else:
            reply = self.recv_obj(peer)
            self.send_obj("barrier", peer)
        if reply != "barrier":
            raise MPCError(f"A message from {ROLE_TITLES[peer]} is not the barrier it should be.")


def _combine(ours, theirs, op):
    import torch.distributed as dist

    if op is None or op == dist.ReduceOp.SUM:
        return ours + theirs
    if op == dist.ReduceOp.BXOR:
        return ours ^ theirs
    raise MPCError(f"The reduction {op} is not one secure inference uses.")


def crypten_setup(rank: int, links: dict[int, Link], *, precision_bits: int):
    """Import CrypTen, point it at ``links`` and its dealer, and return the module.

    Call once per process (each session runs in a process of its own).
    """
    from secure_compute._crypten_compat import crypten_module

    crypten = crypten_module()
    import crypten.communicator as comm
    from crypten.mpc.provider import ttp_provider

    comm.DistributedCommunicator = TlsCommunicator  # what comm.get() and crypten.init() use
    ttp_provider.TTPClient._TTPClient__TTPClient._setup_generators = _client_generators
    crypten.cfg.mpc.provider = "TTP"
    crypten.cfg.encoder.precision_bits = precision_bits
    crypten.cfg.communicator.verbose = False
    TlsCommunicator.configure(rank, links)
    return crypten


def _client_generators(self):
    """The dealer's seed for this party's correlated randomness, over this party's link."""
    import torch

    seed = TlsCommunicator.instance.recv(torch.empty((), dtype=torch.long), DEALER)
    self.generator = torch.Generator(device="cpu")
    self.generator.manual_seed(int(seed.item()))
    self.generator_cuda = None
