"""Functions run inside the sandbox by tests/safe_model/test_sandbox.py.

Each misbehaves in one way a crafted model can; they are imported by name in
the sandbox's child, so they live in a module of their own.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import time

import numpy as np

from safe_model.exceptions import ModelRefused
from safe_model.sandbox import sandbox_emit


def echo(*, value):
    return value


def arrays(*, n_rows: int):
    return {
        "floats": np.linspace(0.0, 1.0, n_rows).reshape(-1, 1),
        "ints": np.arange(n_rows, dtype=np.int64),
        "flags": np.arange(n_rows) % 2 == 0,
        "labels": np.array(["yes", "no"] * (n_rows // 2)),
        "nested": [{"bytes": b"\x00\xff", "none": None, "pair": (1, 2.5)}],
    }


def chatter():
    """Print as libraries do, on every standard stream."""
    import sys

    print("progress: 50% of patient rows")
    print("warning: convergence", file=sys.stderr)
    os.write(1, b"R\x00\x00\x00\x00\x00\x00\x00\x10raw bytes on fd 1")
    return "quiet"


def emit_events(*, n_events: int):
    for i in range(n_events):
        sandbox_emit({"stage": "step", "done": i / n_events})
    return n_events


def segfault():
    ctypes.string_at(0)


def loop_forever():
    while True:
        time.sleep(0.1)


def spin_cpu():
    x = 0
    while True:
        x += 1


def allocate(*, n_bytes: int):
    return int(np.ones(n_bytes, dtype=np.uint8).sum())


def huge_result(*, n_bytes: int):
    return b"\x00" * n_bytes


def garbage_on_channel():
    """Write bytes that are no frame straight onto the sandbox's channel, then stop."""
    from safe_model import sandbox

    sandbox._CHILD_CHANNEL.sendall(b"\xffnot a frame at all" * 10)
    time.sleep(60)


def events_forever():
    while True:
        sandbox_emit({"stage": "chatter", "padding": "x" * 1000})


def raise_refused(*, message: str):
    raise ModelRefused(message)


def raise_intake_error(*, message: str):
    from attacks.exceptions import IntakeError

    raise IntakeError(message)


def raise_other():
    raise KeyError("PATIENT-Jane-Doe-1961-03-02")


def exit_quietly(*, code: int):
    os._exit(code)


def connect(*, port: int):
    """Connect to a localhost port: "connected", or the error's errno name."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return "connected"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, "timed out")


def close_channel_and_linger(*, seconds: float):
    """Close the sandbox's channel without a result, then keep running."""
    from safe_model import sandbox

    sandbox._CHILD_CHANNEL.close()
    time.sleep(seconds)


def write_file(*, path: str, n_bytes: int):
    with open(path, "wb") as file:
        file.write(b"\x00" * n_bytes)
    return os.path.getsize(path)


def where_am_i():
    import tempfile

    return {"cwd": os.getcwd(), "tmp": tempfile.gettempdir(), "env": sorted(os.environ)}


def fork_grandchild(*, pid_file: str):
    """Leave a grandchild behind that would sleep for an hour, and report its pid."""
    pid = os.fork()
    if pid == 0:
        time.sleep(3600)
        os._exit(0)
    with open(pid_file, "w") as file:
        file.write(str(pid))
    return pid


def segfault_leaving_grandchild(*, pid_file: str):
    """Crash while a grandchild still holds the channel open."""
    fork_grandchild(pid_file=pid_file)
    ctypes.string_at(0)


def parallel_fit(*, n_jobs: int):
    """Train a small forest with joblib's loky workers, as the audit does."""
    from joblib import Parallel, delayed
    from sklearn.datasets import make_classification
    from sklearn.tree import DecisionTreeClassifier

    X, y = make_classification(n_samples=300, random_state=0)
    fits = Parallel(n_jobs=n_jobs, backend="loky")(
        delayed(DecisionTreeClassifier(random_state=seed).fit)(X, y) for seed in range(4)
    )
    return [float(model.score(X, y)) for model in fits]


def send_frame(*, kind: bytes, body: bytes):
    """Send one well-framed message whose body is whatever the test made, then wait."""
    from safe_model import sandbox

    sandbox._CHILD_CHANNEL.sendall(sandbox._HEADER.pack(kind, len(body)) + body)
    time.sleep(60)
