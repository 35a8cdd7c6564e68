"""Run code that touches an uploaded model in a fresh, resource-limited child process.

scikit-learn's compiled estimators trust their arrays, so a crafted model can
crash, hang or exhaust whatever process loads it. :func:`sandbox_call` runs
``module:function(**kwargs)`` in a short-lived child instead and returns its
result; a crash, hang or overrun becomes one :class:`SandboxFailed` sentence
(a :class:`~safe_model.exceptions.ModelRefused`), and the caller's process
lives on. The intake check, for instance, is meant to run as::

    from attacks.exceptions import IntakeError
    from safe_model.exceptions import ModelRefused
    from safe_model.sandbox import INTAKE_LIMITS, sandbox_call

    summary = sandbox_call(
        "attacks.audit:target_from_uploads_summary",  # load, validate, trial-predict
        kwargs={"model": {"name": name, "data": data}, "train": ..., "test": ..., "label": label},
        limits=INTAKE_LIMITS,
        reraise=(IntakeError, ModelRefused),
    )

where the target function (the caller's, not this module's) takes and
returns plain data: kwargs and the result cross as data only (see
``safe_model._wire``: plain values and numeric or string arrays, never
pickle), so not estimators or DataFrames. ``IntakeError`` and
``ModelRefused`` are both ``ValueError``: a form error, HTTP 400 or exit 2,
with their sentence as it is. The audit runs the same way under
:data:`AUDIT_LIMITS`, reporting progress with :func:`sandbox_emit` from the
child, which the parent hands to ``on_event``.

How a child is made: one *zygote* per process, a clean interpreter started
with ``subprocess`` that has imported numpy, scipy, pandas, scikit-learn and
skops once (and each target's module on first use), forks a child per call.
A call costs a fork, not the 2 s of imports, and the child never inherits the
caller's database connections, sockets, threads or locks. The zygote starts
on the first call, restarts if it dies, and exits when its parent does; a
child dies with its zygote.

What the child gets, before the target runs:

- its own session and process group, which the parent kills on a timeout, on
  any error and after every call (so grandchildren such as joblib's loky
  workers go too, unless they start a session of their own);
- ``RLIMIT_AS`` (``memory_bytes``), ``RLIMIT_CPU`` (``cpu_seconds``),
  ``RLIMIT_FSIZE`` (``file_bytes``), no core dumps and at most
  ``MAX_OPEN_FILES`` descriptors. These are limits *per process*: each
  grandchild has its own;
- the wall clock (``wall_seconds``) enforced by the parent, for the whole group;
- a private scratch directory (0700) as working and temporary directory,
  removed by the parent afterwards. It is a default, not a jail: the child can
  still read and write, within ``file_bytes`` per file, wherever its user may;
- no network: a network namespace of its own (``unshare(CLONE_NEWNET)``, or
  with a user namespace when not root), in which not even loopback is up.
  This needs kernel support, and containers often refuse it (Docker's default
  seccomp profile allows ``unshare`` only with ``CAP_SYS_ADMIN``); where it is
  refused the call still runs,
  :func:`sandbox_capabilities` reports ``network_isolated=False`` and a
  warning is logged once. Unix sockets named by a path are not network and
  stay reachable to a child whose user may open them;
- stdin, stdout and stderr on ``/dev/null`` (library chatter and tracebacks,
  which may quote data values, go nowhere), and an environment reduced to
  ``_ENVIRONMENT_KEPT`` (no secrets of the caller's).

What it does not do: the child runs as the caller's user, so code that takes
over the child can read whatever that user can read (files, and ``/proc`` of
that user's processes) and put it in its result or in the message of an
exception the caller re-raises. Keep secrets unreadable to the service user
(or run the service's workers as a user of their own). Nor is there a limit
on the number of processes (``RLIMIT_NPROC`` counts every process of the
user); the wall clock stops a fork bomb's group.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib
import logging
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from safe_model import _wire
from safe_model.exceptions import ModelRefused

log = logging.getLogger(__name__)

MiB = 2**20
GiB = 2**30


@dataclass(frozen=True)
class SandboxLimits:
    """What one sandboxed call may use.

    Parameters
    ----------
    memory_bytes : int
        Address space of the child and of each process it starts (``RLIMIT_AS``,
        virtual memory: it counts the preloaded libraries' reservations too).
    cpu_seconds : int
        CPU seconds of the child, and of each process it starts (``RLIMIT_CPU``).
    wall_seconds : float
        Wall-clock seconds for the whole call; the parent kills the child's group.
    file_bytes : int
        Largest file the child may write (``RLIMIT_FSIZE``).
    max_result_bytes : int
        Most bytes the parent reads back (result and events together).
    """

    memory_bytes: int
    cpu_seconds: int
    wall_seconds: float
    file_bytes: int
    max_result_bytes: int


#: Load an upload and predict a few rows, inside a web request. A child starts
#: at 0.46 GiB of address space (the preloaded libraries); the famous-patient
#: example, its model trained and then taken in, peaked at 1.5 GiB
#: (benchmarks/sandbox_bench.py). 4 GiB leaves 2.5 GiB for a 200 MiB upload
#: and the copies decoding makes; a minute of CPU is far more than a valid model
#: needs, and 90 s is as long as a request should wait.
INTAKE_LIMITS = SandboxLimits(
    memory_bytes=4 * GiB,
    cpu_seconds=60,
    wall_seconds=90,
    file_bytes=256 * MiB,
    max_result_bytes=16 * MiB,
)

#: A whole audit in the worker: shadow models trained by loky workers, each a
#: process of its own under the same per-process limits. Real audits (16
#: shadows, sweep, n_jobs=2) peaked at 2.0 GiB (breast cancer) and 2.2 GiB
#: (10,000 rows) of address space in the child and 0.43 GiB in a worker
#: (glibc reserves 64 MiB per thread arena), so 8 GiB leaves a margin of 3.6.
#: The 10,000-row audit took 272 s on a loaded 2-core machine. 50 minutes of
#: wall clock stays under the broker's default 3600 s visibility timeout (after
#: which an unacknowledged audit is delivered again); CPU: two cores' worth.
AUDIT_LIMITS = SandboxLimits(
    memory_bytes=8 * GiB,
    cpu_seconds=2 * 3000,
    wall_seconds=3000,
    file_bytes=2 * GiB,
    max_result_bytes=256 * MiB,
)

#: Modules the zygote imports once, so children start warm. None starts a thread
#: at import with the environment the zygote gets (``_ZYGOTE_ENVIRONMENT``).
PRELOAD = (
    "numpy",
    "scipy.sparse",
    "scipy.stats",
    "pandas",
    "pyarrow.parquet",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.pipeline",
    "safe_model.skops_io",  # skops without torch
    "joblib",
    "threadpoolctl",
    "ctypes",
)

MAX_OPEN_FILES = 512
MAX_EVENT_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 1000
#: How long the parent waits for the zygote to report a child's pid or exit.
ZYGOTE_TIMEOUT_SECONDS = 120.0

#: Environment variables a child keeps; ``LC_*`` too.
_ENVIRONMENT_KEPT = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "VIRTUAL_ENV",
        "OPENBLAS_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "LOKY_MAX_CPU_COUNT",
    }
)
#: The zygote imports with one BLAS thread and no jemalloc background thread
#: (pyarrow), so it is single-threaded when it forks; each child restores the
#: caller's BLAS thread count with threadpoolctl.
_ZYGOTE_ENVIRONMENT = {
    "OPENBLAS_NUM_THREADS": "1",
    "JE_ARROW_MALLOC_CONF": "background_thread:false",
}

_FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_HEADER = struct.Struct("!cQ")  # kind, body length
_STATUS = struct.Struct("!qd")  # wait status, CPU seconds of the child
_PID = struct.Struct("!q")
_START, _EVENT, _RESULT, _RAISED = b"S", b"E", b"R", b"X"
_EXIT_UNREPORTED, _EXIT_UNREPORTED_MEMORY = 3, 4
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000
_PR_SET_PDEATHSIG = 1
_CRASH_REASONS = {
    signal.SIGSEGV: "its arrays are inconsistent or corrupt",
    signal.SIGBUS: "its arrays are inconsistent or corrupt",
    signal.SIGFPE: "it hit an arithmetic fault",
    signal.SIGABRT: "it aborted on an internal error",
    signal.SIGILL: "it ran an illegal instruction",
}


class SandboxFailed(ModelRefused):
    """Sandboxed code failed, or sent back something the parent would not read."""


class SandboxCrashed(SandboxFailed):
    """The child was killed by a signal (segmentation fault and the like)."""


class SandboxTimedOut(SandboxFailed):
    """The child ran past its wall-clock limit and was stopped."""


class SandboxOutOfMemory(SandboxFailed):
    """The child needed more memory than its limit."""


class SandboxOutOfCpu(SandboxFailed):
    """The child used more CPU seconds than its limit."""


@dataclass(frozen=True)
class SandboxCapabilities:
    """What this machine's sandbox enforces beyond the resource limits."""

    network_isolated: bool


# --------------------------------------------------------------------- parent


def sandbox_call(
    function: str,
    /,
    *,
    kwargs: dict,
    limits: SandboxLimits,
    on_event: Callable[[dict], None] | None = None,
    what: str = "the model",
    reraise: tuple[type[Exception], ...] = (),
    preload: tuple[str, ...] = (),
) -> Any:
    """Run ``module:function(**kwargs)`` in a fresh resource-limited child; return its result.

    Parameters
    ----------
    function : str
        ``"package.module:function"``. The zygote imports the module once, before
        it forks, so importing it must not start threads.
    kwargs : dict
        Keyword arguments, plain data (see ``safe_model._wire``).
    limits : SandboxLimits
        What the child may use, e.g. :data:`INTAKE_LIMITS` or :data:`AUDIT_LIMITS`.
    on_event : callable, optional
        Called in the caller's thread with each dict the child passes to
        :func:`sandbox_emit`.
    what : str, default="the model"
        What the failure sentences name ("the model crashed the sandbox ...").
    reraise : tuple of exception classes
        An exception raised in the child that is an instance of one of these is
        raised here as the same class with the same message (these classes
        carry user-safe sentences by contract). Any other becomes
        :class:`SandboxFailed` naming only its type.
    preload : tuple of str
        More modules the zygote imports before it forks (once; it skips one it
        cannot import), beside :data:`PRELOAD`: what only some calls need, such as
        torch for a neural network's shadow (a second of imports in every child
        otherwise), so other calls and processes do not pay for it.

    Raises
    ------
    ValueError
        ``function`` is not a ``module:function`` name, or ``kwargs`` is not plain data.
    SandboxFailed
        Or a subclass: the child crashed, hung, ran out of memory or CPU time,
        or sent back too much or something unreadable.
    """
    if not _FUNCTION.match(function):
        raise ValueError(f"not a module:function name: {function!r}")
    request = _wire.encode({"function": function, "kwargs": kwargs, "limits": _limit_list(limits)})
    scratch = tempfile.mkdtemp(prefix="safe-model-")
    try:
        modules = ",".join([function.partition(":")[0], *preload])
        channel, status_fd = _ZYGOTE.spawn(module=modules)
        with channel:
            try:
                frame = _run_child(channel, status_fd, request, scratch, limits, on_event)
            finally:
                os.close(status_fd)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return _outcome(frame, limits=limits, what=what, reraise=reraise)


def sandbox_emit(event: dict) -> None:
    """Send a small progress event to the parent (``on_event(event)`` there).

    Called by code running inside the sandbox; a no-op outside one. ``event``
    is plain data of at most ``MAX_EVENT_BYTES`` encoded.
    """
    if _CHILD_CHANNEL is None:
        return
    body = _wire.encode(event)
    if len(body) > MAX_EVENT_BYTES:
        raise ValueError(f"a sandbox event is limited to {MAX_EVENT_BYTES} bytes")
    with _CHILD_SEND_LOCK:
        _CHILD_CHANNEL.sendall(_HEADER.pack(_EVENT, len(body)) + body)


def sandbox_capabilities() -> SandboxCapabilities:
    """What the sandbox enforces here, found by running one child (cached)."""
    global _CAPABILITIES
    if _CAPABILITIES is None:
        isolated = sandbox_call(
            "safe_model.sandbox:_network_isolated",
            kwargs={},
            limits=_PROBE_LIMITS,
            what="the sandbox probe",
        )
        _CAPABILITIES = SandboxCapabilities(network_isolated=isolated is True)
    return _CAPABILITIES


_CAPABILITIES: SandboxCapabilities | None = None
_PROBE_LIMITS = SandboxLimits(
    memory_bytes=4 * GiB, cpu_seconds=30, wall_seconds=60, file_bytes=MiB, max_result_bytes=MiB
)
_WARNED = threading.Event()


def _limit_list(limits: SandboxLimits) -> list:
    return [limits.memory_bytes, limits.cpu_seconds, limits.file_bytes]


@dataclass(frozen=True)
class _Frame:
    """How a child's call ended: a frame it sent, or why there is none."""

    kind: str  # "result", "raised", "timeout", "too_large", "garbage", "exited"
    body: Any = None
    status: int | None = None  # the child's wait status, when it ended on its own
    cpu_seconds: float = 0.0


def _run_child(channel, status_fd, request, scratch, limits, on_event) -> _Frame:
    """Start, talk to and always kill the child; report how it ended."""
    (pid,) = _PID.unpack(_from_zygote(status_fd, _PID.size))
    deadline = time.monotonic() + limits.wall_seconds  # the zygote's start-up is not the child's
    start = _wire.encode({"scratch": scratch})
    talk = _Conversation(channel, status_fd, limits.max_result_bytes, on_event)
    talk.queue(
        _HEADER.pack(_START, len(start)) + start, _HEADER.pack(_START, len(request)), request
    )
    try:
        frame = talk.until(deadline)
    finally:
        if talk.status is None:  # once reaped (the zygote killed its group) the pid is free
            _kill_group(pid)
    if talk.status is None:  # wait until it is gone, so its scratch dir can go too
        talk.status = _STATUS.unpack(_from_zygote(status_fd, _STATUS.size))
    if frame.kind == "exited":
        return _Frame("exited", status=talk.status[0], cpu_seconds=talk.status[1])
    return frame


def _from_zygote(status_fd: int, size: int) -> bytes:
    """A child's pid or exit status, which the zygote sends at once; if not, it is lost."""
    data = _read_exact(status_fd, size, time.monotonic() + ZYGOTE_TIMEOUT_SECONDS)
    if data is None:
        _ZYGOTE.stop()
        raise SandboxFailed("The sandbox lost track of its process.")
    return data


class _Conversation:
    """The parent's side of one child: its channel, and the zygote's pipe reporting its exit."""

    def __init__(self, channel, status_fd, max_bytes, on_event) -> None:
        self.channel, self.status_fd, self.on_event = channel, status_fd, on_event
        self.reader = _FrameReader(max_bytes)
        self.outgoing: list[memoryview] = []
        self.status: tuple[int, float] | None = None

    def queue(self, *chunks: bytes) -> None:
        self.outgoing += [memoryview(chunk) for chunk in chunks]

    def until(self, deadline: float) -> _Frame:
        """Send what is queued; read until a result, an exception, the exit or the deadline."""
        self.channel.setblocking(False)
        with selectors.DefaultSelector() as selector:
            selector.register(self.channel, selectors.EVENT_READ | selectors.EVENT_WRITE)
            selector.register(self.status_fd, selectors.EVENT_READ)
            while (remaining := deadline - time.monotonic()) > 0:
                for key, mask in selector.select(timeout=min(remaining, 1.0)):
                    frame = self._on_ready(key.fileobj, mask, selector)
                    if frame is not None:
                        return frame
        return _Frame("timeout")

    def _on_ready(self, source, mask, selector) -> _Frame | None:
        if source == self.status_fd:
            self.status = _STATUS.unpack(_from_zygote(self.status_fd, _STATUS.size))
            return self._drain() or _Frame("exited")
        if mask & selectors.EVENT_WRITE:
            self._send_some(selector)
        if mask & selectors.EVENT_READ:
            chunk = _receive_some(self.channel)
            if chunk == b"":  # closed, but it may still run: wait for its exit or the deadline
                selector.unregister(self.channel)
            elif chunk:
                return self._frames(chunk)
        return None

    def _send_some(self, selector) -> None:
        try:
            sent = self.channel.send(self.outgoing[0][: 4 * MiB])
        except BlockingIOError:
            return
        except OSError:  # the child closed its end; what it sent before still counts
            sent = len(self.outgoing[0])
        self.outgoing[0] = self.outgoing[0][sent:]
        if not self.outgoing[0]:
            self.outgoing.pop(0)
        if not self.outgoing:
            selector.modify(self.channel, selectors.EVENT_READ)

    def _drain(self) -> _Frame | None:
        """What the child sent before it exited (all of it is buffered by now)."""
        while chunk := _receive_some(self.channel):
            frame = self._frames(chunk)
            if frame is not None:
                return frame
        return None

    def _frames(self, chunk: bytes) -> _Frame | None:
        for kind, body in self.reader.feed(chunk):
            if kind in ("too_large", "garbage", _RESULT, _RAISED):
                return _decoded(kind, body)
            event = _decode_or_none(body)
            if not isinstance(event, dict):
                return _Frame("garbage")
            if self.on_event is not None:
                self.on_event(event)
        return None


def _receive_some(channel: socket.socket) -> bytes | None:
    """What the child sent; b"" once it closed its end, None if nothing is waiting."""
    try:
        return channel.recv(MiB, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def _decoded(kind, body) -> _Frame:
    if kind in ("too_large", "garbage"):
        return _Frame(kind)
    value = _decode_or_none(body)
    if not isinstance(value, dict) or "network_isolated" not in value:
        return _Frame("garbage")
    return _Frame("result" if kind == _RESULT else "raised", body=value)


def _decode_or_none(body: bytes) -> Any:
    try:
        return _wire.decode(body)
    except _wire.WireError:
        return None


class _FrameReader:
    """Splits the child's byte stream into (kind, body) frames, within a byte budget."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = self.budget = max_bytes
        self.buffer = bytearray()

    def feed(self, chunk: bytes):
        self.budget -= len(chunk)
        if self.budget < 0:
            yield "too_large", None
            return
        self.buffer += chunk
        while len(self.buffer) >= _HEADER.size:
            kind, length = _HEADER.unpack_from(self.buffer)
            if kind not in (_EVENT, _RESULT, _RAISED) or (
                kind != _RESULT and length > MAX_EVENT_BYTES
            ):
                yield "garbage", None
                return
            if length > self.max_bytes:
                yield "too_large", None
                return
            if len(self.buffer) < _HEADER.size + length:
                return
            with memoryview(self.buffer) as view:  # one copy, not two
                body = bytes(view[_HEADER.size : _HEADER.size + length])
            del self.buffer[: _HEADER.size + length]
            yield kind, body


def _outcome(frame: _Frame, *, limits, what, reraise) -> Any:
    """The child's result, or the exception that says how it failed."""
    if frame.kind in ("result", "raised") and frame.body["network_isolated"] is not True:
        _warn_not_isolated()
    if frame.kind == "result":
        return frame.body.get("value")
    subject = what[:1].upper() + what[1:]
    if frame.kind == "raised":
        raise _raised(frame.body, limits=limits, subject=subject, reraise=reraise) from None
    if frame.kind == "timeout":
        raise SandboxTimedOut(
            f"{subject} did not finish within {limits.wall_seconds:g} s and was stopped."
        )
    if frame.kind == "too_large":
        raise SandboxFailed(
            f"{subject} sent back more than {_mib(limits.max_result_bytes)} MiB, "
            "over the sandbox's limit."
        )
    if frame.kind == "garbage":
        raise SandboxFailed(f"{subject} sent back data the sandbox could not read.")
    raise _ended(frame, limits=limits, subject=subject)


def _raised(body: dict, *, limits, subject, reraise) -> Exception:
    """The exception for one the child raised: ours by class, or a sentence naming its type."""
    kind, types, message = body.get("kind"), body.get("types"), body.get("message")
    if kind == "memory":
        return _out_of_memory(limits, subject)
    if kind == "file_size":
        return SandboxFailed(
            f"{subject} wrote more than {_mib(limits.file_bytes)} MiB to a file, "
            "over the sandbox's limit."
        )
    if not (isinstance(types, list) and types and all(isinstance(t, str) for t in types)):
        return SandboxFailed(f"{subject} sent back data the sandbox could not read.")
    allowed = {f"{cls.__module__}.{cls.__qualname__}": cls for cls in reraise}
    for name in types:
        if name in allowed and isinstance(message, str):
            try:
                return allowed[name](_one_line(message))
            except Exception:
                break
    type_name = re.sub(r"[^\w]", "", types[0].rpartition(".")[2])[:80] or "an unknown error"
    return SandboxFailed(f"{subject} failed in the sandbox ({type_name}).")


def _one_line(message: str) -> str:
    """The child's sentence on one line: no control characters, no line breaks, capped."""
    return " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", message).split())[:MAX_MESSAGE_CHARS]


def _ended(frame: _Frame, *, limits, subject) -> Exception:
    """The exception for a child that stopped without a word: a signal or an exit code."""
    status = frame.status
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number == signal.SIGXCPU or (
            number == signal.SIGKILL and frame.cpu_seconds >= limits.cpu_seconds
        ):
            return SandboxOutOfCpu(
                f"{subject} used more than {limits.cpu_seconds} CPU seconds and was stopped."
            )
        if number == signal.SIGKILL:
            return SandboxCrashed(
                f"{subject} was killed by the system (SIGKILL), most likely for lack of memory."
            )
        return SandboxCrashed(_crash_sentence(subject, number))
    code = os.WEXITSTATUS(status)
    if code == _EXIT_UNREPORTED_MEMORY:
        return _out_of_memory(limits, subject)
    if code in (0, _EXIT_UNREPORTED):
        return SandboxFailed(f"{subject} stopped without sending a result.")
    return SandboxFailed(f"{subject} exited unexpectedly (exit code {code}).")


def _crash_sentence(subject: str, number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"{subject} crashed the sandbox (signal {number})."
    words = f"{name}, {(signal.strsignal(number) or name).lower()}"
    reason = _CRASH_REASONS.get(number)
    return f"{subject} crashed the sandbox ({words})" + (f": {reason}." if reason else ".")


def _out_of_memory(limits: SandboxLimits, subject: str) -> SandboxOutOfMemory:
    return SandboxOutOfMemory(
        f"{subject} needed more than {limits.memory_bytes / GiB:.3g} GiB of memory."
    )


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / MiB:.3g}"


def _warn_not_isolated() -> None:
    if not _WARNED.is_set():
        _WARNED.set()
        log.warning(
            "The model sandbox runs without network isolation: this kernel refuses new "
            "network namespaces (unshare CLONE_NEWNET), as root and with a user namespace."
        )


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _read_exact(fd: int, size: int, deadline: float) -> bytes | None:
    """``size`` bytes from a blocking pipe, or None at EOF or the deadline."""
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while len(data) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(timeout=remaining):
                return None
            chunk = os.read(fd, size - len(data))
            if not chunk:
                return None
            data += chunk
    return data


# --------------------------------------------------------------------- zygote


class _Zygote:
    """The caller's side of the zygote: start it once, ask it for children, restart it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._control: socket.socket | None = None

    def spawn(self, *, module: str) -> tuple[socket.socket, int]:
        """A new child: our end of its channel, and the pipe that gives its pid then its exit."""
        ours, theirs = socket.socketpair()
        status_r, status_w = os.pipe()
        try:
            with self._lock:
                self._send(module, [theirs.fileno(), status_w])
        except BaseException:
            ours.close()
            os.close(status_r)
            raise
        finally:
            theirs.close()
            os.close(status_w)
        return ours, status_r

    def _send(self, module: str, fds: list[int]) -> None:
        for attempt in range(2):
            if self._process is None or self._process.poll() is not None:
                self._start()
            try:
                socket.send_fds(self._control, [module.encode()], fds)
                return
            except OSError:
                self._stop_locked()
                if attempt:
                    raise SandboxFailed("The sandbox could not start a process.") from None

    def _start(self) -> None:
        self._stop_locked()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import sys; from safe_model.sandbox import _zygote_main; "
                    "_zygote_main(int(sys.argv[1]))",
                    str(theirs.fileno()),
                ],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=_zygote_environment(),
                cwd="/",
            )
        self._control = ours

    def stop(self) -> None:
        """Stop the zygote (the next call starts a new one); its children are killed."""
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        if self._control is not None:
            self._control.close()  # the zygote sees EOF, kills its children and exits
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = self._control = None

    def _forget_after_fork(self) -> None:
        """In a forked copy of the caller: leave the parent's zygote to the parent."""
        self._lock = threading.Lock()
        if self._control is not None:
            self._control.close()
        self._process = self._control = None


def _zygote_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _ENVIRONMENT_KEPT or k.startswith("LC_")}
    env["SAFE_MODEL_BLAS_THREADS"] = os.environ.get("OPENBLAS_NUM_THREADS", "")
    env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in sys.path if p)
    env.update(_ZYGOTE_ENVIRONMENT)
    return env


_ZYGOTE = _Zygote()
os.register_at_fork(after_in_child=_ZYGOTE._forget_after_fork)


def _zygote_main(control_fd: int) -> None:
    """The zygote's loop: fork a child per request, reap children and report their exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # it ends when its parent closes the socket
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # and its children die with it
    control = socket.socket(fileno=control_fd)
    for name in PRELOAD:
        _try_import(name)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: dict[int, int] = {}  # pid -> status pipe
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    try:
        while True:
            for key, _mask in selector.select(timeout=5.0):
                if key.fileobj is control and not _zygote_fork(control, children):
                    return
                if key.fileobj == wake_r:
                    _drain(wake_r)
            _zygote_reap(children)
    finally:
        for pid in children:
            _kill_group(pid)


def _zygote_fork(control: socket.socket, children: dict[int, int]) -> bool:
    """Fork one child for a request; False once the parent has gone."""
    try:
        message, fds, _flags, _address = socket.recv_fds(control, 1024, 2)
    except OSError:
        return False
    if not message or len(fds) != 2:
        for fd in fds:
            os.close(fd)
        return bool(message)
    channel_fd, status_fd = fds
    for name in message.decode("ascii", "replace").split(","):  # the call's module, and more
        _try_import(name)
    zygote = os.getpid()
    try:
        pid = os.fork()
    except OSError:  # the parent reads EOF for a pid and says so
        os.close(channel_fd)
        os.close(status_fd)
        return True
    if pid == 0:
        _child_main(channel_fd, zygote=zygote)
    os.close(channel_fd)
    with contextlib.suppress(OSError):
        os.write(status_fd, _PID.pack(pid))
    children[pid] = status_fd
    return True


def _zygote_reap(children: dict[int, int]) -> None:
    while children:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _kill_group(pid)  # what it left behind
        status_fd = children.pop(pid, None)
        if status_fd is not None:
            with contextlib.suppress(OSError):
                os.write(status_fd, _STATUS.pack(status, usage.ru_utime + usage.ru_stime))
            os.close(status_fd)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def _try_import(name: str) -> None:
    if re.fullmatch(r"[A-Za-z_][\w.]*", name):
        with contextlib.suppress(Exception):  # the child imports it again and reports it
            importlib.import_module(name)


# ---------------------------------------------------------------------- child

_CHILD_CHANNEL: socket.socket | None = None
_CHILD_SEND_LOCK = threading.Lock()
_NETWORK_ISOLATED = False


def _child_main(channel_fd: int, *, zygote: int) -> NoReturn:
    """In the forked child: serve the one call, then exit, whatever happens (never return)."""
    code = _EXIT_UNREPORTED
    try:
        code = _child_serve(channel_fd, zygote=zygote)
    except BaseException as exc:  # noqa: BLE001 - not even reporting worked
        code = _EXIT_UNREPORTED_MEMORY if isinstance(exc, MemoryError) else _EXIT_UNREPORTED
    finally:
        os._exit(code)


def _child_serve(channel_fd: int, *, zygote: int) -> int:
    """Confine this process, run the function and send the parent what happened."""
    global _CHILD_CHANNEL
    os.setsid()
    _die_with(zygote)
    _reset_process(channel_fd)
    _CHILD_CHANNEL = channel = socket.socket(fileno=channel_fd)
    try:
        scratch = _wire.decode(_receive(channel))["scratch"]
        request = _wire.decode(_receive(channel))
        _confine(scratch=scratch, limits=request["limits"])
        value = _resolve(request["function"])(**request["kwargs"])
        kind, body = _RESULT, _wire.encode({"value": value, "network_isolated": _NETWORK_ISOLATED})
    except BaseException as exc:  # noqa: BLE001 - everything is reported to the parent
        kind, body = _RAISED, _exception_body(exc)
    with _CHILD_SEND_LOCK:
        channel.sendall(_HEADER.pack(kind, len(body)) + body)
    return 0


def _die_with(zygote: int) -> None:
    """SIGKILL when the zygote dies, so no child outlives the zygote or its wall clock."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != zygote:  # it died before we asked
        os._exit(_EXIT_UNREPORTED)


def _reset_process(channel_fd: int) -> None:
    """Default signals, stdio on /dev/null, and no descriptor of the zygote's but the channel."""
    signal.set_wakeup_fd(-1)
    for number in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, channel_fd)
    os.closerange(channel_fd + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def _receive(channel: socket.socket) -> bytearray:
    """One frame from the parent (blocking: the parent writes at once and kills on timeout)."""
    kind, length = _HEADER.unpack(_receive_exact(channel, _HEADER.size))
    if kind != _START:
        raise ValueError("unexpected frame from the parent")
    return _receive_exact(channel, length)


def _receive_exact(channel: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = channel.recv_into(view[got:], min(size - got, 16 * MiB))
        if not n:
            raise EOFError("the parent closed the channel")
        got += n
    return buffer  # not copied: a request can be a few hundred MiB


def _confine(*, scratch: str, limits: list) -> None:
    """Scratch directory, network namespace and resource limits, in that order."""
    global _NETWORK_ISOLATED
    memory_bytes, cpu_seconds, file_bytes = limits
    os.chdir(scratch)
    for name in ("TMPDIR", "JOBLIB_TEMP_FOLDER", "HOME"):
        os.environ[name] = scratch
    tempfile.tempdir = scratch
    _NETWORK_ISOLATED = _unshare_network()
    _restore_blas_threads()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def _unshare_network() -> bool:
    """A network namespace of our own: as root directly, else inside a new user namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) == 0:
        return True
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
        return False
    for path, line in (
        ("setgroups", "deny"),
        ("uid_map", f"{uid} {uid} 1"),
        ("gid_map", f"{gid} {gid} 1"),
    ):
        try:
            with open(f"/proc/self/{path}", "w") as file:
                file.write(line)
        except OSError:
            pass
    return True


def _restore_blas_threads() -> None:
    """The zygote imported with one BLAS thread; give the child the caller's count back."""
    wanted = os.environ.pop("SAFE_MODEL_BLAS_THREADS", "")
    if wanted:
        os.environ["OPENBLAS_NUM_THREADS"] = wanted
    else:
        os.environ.pop("OPENBLAS_NUM_THREADS", None)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(
            limits=int(wanted) if wanted.isdigit() else os.cpu_count(), user_api="blas"
        )
    except Exception:  # noqa: BLE001 - fewer threads is slower, not wrong
        pass


def _resolve(function: str) -> Callable:
    module, _, name = function.partition(":")
    return getattr(importlib.import_module(module), name)


def _exception_body(exc: BaseException) -> bytes:
    kind = "memory" if isinstance(exc, MemoryError) else None
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        kind = "file_size"
    try:
        message = str(exc)[:MAX_MESSAGE_CHARS]
    except Exception:  # noqa: BLE001
        message = ""
    types = [f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__]
    return _wire.encode(
        {"kind": kind, "types": types, "message": message, "network_isolated": _NETWORK_ISOLATED}
    )


def _network_isolated() -> bool:
    """Run in a child by :func:`sandbox_capabilities`."""
    return _NETWORK_ISOLATED
