"""Fuzz ``he.evaluate`` and ``he.decrypt`` with mutated bytes, in a process of its own.

Run as ``python -m tests.secure_compute.he_fuzz N SEED``; the last line printed
is a JSON summary. The test runs it in a subprocess so that a native crash in
TenSEAL or SEAL shows up as a failing exit code, not as a dead test session.
"""

from __future__ import annotations

import json
import random
import struct
import sys
from collections import Counter

import numpy as np
from sklearn.linear_model import LogisticRegression

from secure_compute import he
from secure_compute.exceptions import HEError

N_ROWS, N_FEATURES = 40, 3


def _fixture():
    """A fast-preset context, a fitted model, a valid request and public context."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N_ROWS, N_FEATURES))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    weights = he.linear_model_fold(LogisticRegression().fit(X, y))
    context = he.make_context("fast")
    return context, he.public_context_bytes(context), he.encrypt(context, X), weights


def _positions(data: bytes, rng: random.Random) -> int:
    """Mostly framing bytes (the first 300 and the blob boundaries), sometimes anywhere."""
    if rng.random() < 0.6:
        return rng.randrange(min(len(data), 300))
    return rng.randrange(len(data))


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random mutation of ``data`` and its name."""
    kind = rng.choice(["truncate", "flip", "overwrite", "garbage", "length", "splice"])
    buf = bytearray(data)
    if kind == "truncate":
        return kind, bytes(buf[: rng.randrange(len(buf))])
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            buf[_positions(buf, rng)] ^= 1 << rng.randrange(8)
    elif kind == "overwrite":
        at = _positions(buf, rng)
        buf[at : at + 8] = rng.randbytes(8)
    elif kind == "garbage":
        return kind, rng.randbytes(rng.randrange(1, 4096))
    elif kind == "length":
        at = _positions(buf, rng)
        buf[at : at + 4] = struct.pack(">I", rng.choice([0, 1, 2**31, 2**32 - 1, len(buf)]))
    else:
        at, width = rng.randrange(len(buf)), rng.randrange(1, 64)
        buf[at:at] = buf[at : at + width]
    return kind, bytes(buf)


def run(n_cases: int, seed: int) -> dict:
    """Mutate the request, the public context or the response; count the outcomes."""
    context, public, request, weights = _fixture()
    response = he.evaluate(public, request, weights)
    rng = random.Random(seed)
    outcomes, unexpected = Counter(), []
    for _ in range(n_cases):
        target = rng.choice(["request", "context", "response"])
        kind, data = mutate(
            {"request": request, "context": public, "response": response}[target], rng
        )
        try:
            if target == "response":
                he.decrypt(context, data)
            else:
                he.evaluate(*((data, request) if target == "context" else (public, data)), weights)
            outcomes[f"{target} {kind}: accepted"] += 1
        except HEError:
            outcomes[f"{target} {kind}: refused"] += 1
        except Exception as exc:  # anything else is a bug the test reports
            unexpected.append(f"{target} {kind}: {type(exc).__name__}: {exc}")
    return {"cases": n_cases, "outcomes": dict(outcomes), "unexpected": unexpected}


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]), int(sys.argv[2]))))
