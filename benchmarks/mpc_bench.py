"""Secure inference with a dealer (CrypTen over mutual TLS) beside HE, on breast cancer.

Run ``.venv/bin/python benchmarks/mpc_bench.py [--repeats 5] [--rows 1 188]
[--models lr mlp teaching] [--no-pieces]``.

Data: scikit-learn's breast cancer, the first 381 rows to train and the last 188
to predict (the split of the secure-inference tests). Models:

- ``lr``: StandardScaler + LogisticRegression (one logit);
- ``mlp``: StandardScaler + ``MLPClassifier((16,), max_iter=500, random_state=0)``,
  30-16-1 with ReLU (scikit-learn gives a binary MLP one logistic output);
- ``teaching``: the teaching MLP of :mod:`attacks.nn.teaching` (30-16-2, ReLU),
  exported to ONNX by tre-audit and folded from the ONNX graph. It was trained on
  its own standardised split, so it predicts the first rows of its own test set.

For each model a real dealer host and a real owner host are started once, as the
service starts them (:func:`secure_compute.mpc_host.host_command`: separate
processes, certificates from a fresh endpoint authority, ``ready <port>``), and
``partner_predict`` is called ``--repeats`` times per row count, each call a new
session with its own partner certificate. The first call of each row count is a
warm-up and is left out of the timings (reported apart as ``warm_up_seconds``).
Figures per model and row count:

- ``wall_seconds``: median time of ``partner_predict`` (the partner's fork, TLS to
  both hosts, the session, the answer back), and every measured run;
- bytes and rounds (frames sent) per party: the partner's from ``Prediction.stats``,
  the owner's from its host's session record. The dealer host records nothing, so
  its bytes are *derived*: what the owner received less what the partner sent
  (the owner's links carry only the partner's and the dealer's frames), and what
  the owner sent less what the partner received, each corrected by the two frames
  between the partner and the dealer (the partner's hello, the dealer's seed),
  whose sizes are known: exact, as long as those are the only two;
- ``max_abs_logit_error``: against the folded model run in float64
  (:func:`secure_compute.mpc.plaintext_logits`); ``max_error_bound`` and whether
  every row's error is within its own bound; ``rows_settled``: rows whose margin
  exceeds their bound (their decision provably equals plaintext);
- ``decision_agreement``: with the plaintext model's own ``predict``.

Beside them, the HE path (:mod:`secure_compute.he`, the default "standard"
preset) for the LR on the same rows: encrypt + evaluate + decrypt with no
network (median), request bytes (the ciphertexts, and with the public context),
max logit error, agreement; the context's key generation is timed apart.

Unless ``--no-pieces``, one more MLP session (the last model's, without
``mlp``) at the largest row count runs with the partner's steps timed (TLS
contexts, the two handshakes, CrypTen's init, which waits for the dealer's seed,
the forward pass on shares and, within it, the ReLUs and the products, then the
rest: the session hello, the reveal and the bound; and the fork and the answer's
way back), to say where a session's time goes. Each step's time includes
waiting for the other parties.

The machine is shared: absolute times are noisy; the load average is printed.
The last line printed is one JSON object holding every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402 - after the path is set
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from secure_compute import he, mpc  # noqa: E402
from secure_compute import mpc_host as hosts  # noqa: E402
from secure_compute import mpc_transport as transport  # noqa: E402

N_TRAIN = 381
ROWS = (1, 188)
REPEATS = 5
MODELS = ("lr", "mlp", "teaching")
TITLES = {"lr": "LR", "mlp": "MLP 30-16-1", "teaching": "teaching MLP (ONNX)"}
#: Seconds a host may take to print ``ready`` (it imports CrypTen and torch first).
HOST_START_SECONDS = 120
HE_PRESET = "standard"


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Case:
    """One served model: the plaintext estimator, its fold, and the rows to predict."""

    name: str
    estimator: object
    folded: mpc.FoldedModel
    X: np.ndarray


def breast_cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:]


def case_make(name: str) -> Case:
    """Train (or export) one of :data:`MODELS` and fold it."""
    if name == "teaching":
        return _teaching_case()
    X_train, y_train, X_test = breast_cancer()
    final = (
        LogisticRegression(max_iter=2000)
        if name == "lr"
        else MLPClassifier((16,), max_iter=500, random_state=0)
    )
    estimator = make_pipeline(StandardScaler(), final).fit(X_train, y_train)
    return Case(name, estimator, mpc.model_fold(estimator), X_test)


def _teaching_case() -> Case:
    from attacks.nn.teaching import teaching_case, teaching_model
    from attacks.nn.torch_model import export_onnx
    from safe_model.onnx_model import load_onnx_classifier

    case = teaching_case("breast_cancer_mlp")
    data = export_onnx(teaching_model(case))
    classifier = load_onnx_classifier(data, classes=[0, 1], output="logits", max_bytes=len(data))
    return Case("teaching", classifier, mpc.model_fold(classifier), case.X_test.to_numpy())


# --------------------------------------------------------------------------- the hosts


class Hosts:
    """A real dealer host and owner host for one folded model, in a scratch folder."""

    def __init__(self, folded: mpc.FoldedModel, *, endpoint: str = "bench"):
        self.folded, self.endpoint = folded, endpoint
        self._scratch = tempfile.TemporaryDirectory(prefix="tre-mpc-bench-")
        root = Path(self._scratch.name)
        self.tls_dir, self.model_dir = root / "tls", root / "model"
        self.ca = transport.ca_create(endpoint=endpoint)
        for role in ("owner", "dealer"):
            identity = transport.identity_issue(self.ca, role=role, endpoint=endpoint)
            transport.identity_save(identity, self.tls_dir, role)
        (self.tls_dir / "ca.pem").write_bytes(self.ca.cert_pem)
        hosts.weights_save(folded, self.model_dir)
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> Hosts:
        common = {"tls_dir": self.tls_dir, "endpoint": self.endpoint, "listen_at": "127.0.0.1:0"}
        self.dealer_port = self._start(hosts.host_command("dealer", **common))
        self.owner_port = self._start(
            hosts.host_command(
                "owner", **common, model_dir=self.model_dir, dealer=f"127.0.0.1:{self.dealer_port}"
            )
        )
        return self

    def _start(self, command: list[str]) -> int:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            env=hosts.host_environment(),
            start_new_session=True,
        )
        self.processes.append(process)
        ready = _first_line(process, HOST_START_SECONDS)
        words = ready.split()
        if words[:1] != [b"ready"]:
            raise RuntimeError(
                f"A host did not start: it printed {ready!r} (exit {process.poll()})."
            )
        return int(words[1])

    def ticket(self, n_rows: int) -> hosts.SessionTicket:
        """A new session for ``n_rows`` rows: the partner's key, its signed request."""
        session = uuid.uuid4().hex
        key, csr = transport.csr_create()
        cert = transport.csr_sign(
            self.ca, csr, endpoint=self.endpoint, session=session, rows=n_rows
        )
        return hosts.SessionTicket(
            self.endpoint,
            session,
            ("127.0.0.1", self.owner_port),
            ("127.0.0.1", self.dealer_port),
            self.ca.cert_pem,
            transport.Identity(cert, key),
            self.folded.architecture,
        )

    def record(self, ticket: hosts.SessionTicket) -> dict:
        """The owner host's record of a session, waiting for it to be written (it is
        written after the partner has its answer)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            record = hosts.session_record(self.model_dir, ticket.session)
            if record and record["status"] != "running":
                return record
            time.sleep(0.02)
        raise RuntimeError(f"The owner host wrote no record of session {ticket.session} in 30 s.")

    def __exit__(self, *exc) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                print(f"host {process.pid} ignored SIGTERM for 30 s; killed", file=sys.stderr)
                process.kill()
                process.wait()
        self._scratch.cleanup()


def _first_line(process: subprocess.Popen, timeout: float) -> bytes:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError(f"A host printed nothing in {timeout:g} s (still importing CrypTen?).")
    return process.stdout.readline()


# --------------------------------------------------------------------------- measuring


def mpc_figures(case: Case, mpc_hosts: Hosts, n_rows: int, repeats: int) -> dict:
    """Run ``repeats`` sessions of ``n_rows`` rows (the first a warm-up): the figures."""
    X = case.X[:n_rows]
    seconds, sessions = [], []
    for index in range(repeats):
        ticket = mpc_hosts.ticket(n_rows)
        start = time.perf_counter()
        prediction = hosts.partner_predict(ticket, X)
        elapsed = time.perf_counter() - start
        record = mpc_hosts.record(ticket)
        if index:
            seconds.append(elapsed)
        else:
            warm_up = elapsed
        sessions.append((prediction, record))
    prediction, record = sessions[-1]
    figures = {
        "model": case.name,
        "rows": n_rows,
        "wall_seconds": statistics.median(seconds) if seconds else None,
        "wall_seconds_runs": seconds,
        "warm_up_seconds": warm_up,
        **traffic(prediction.stats, record, record["session"]),
        "traffic_same_every_run": len({_traffic_key(p.stats, r) for p, r in sessions}) == 1,
    }
    return figures | accuracy(case, X, prediction)


def traffic(stats: mpc.SessionStats, record: dict, session: str) -> dict:
    """Bytes and rounds per party; the dealer's derived from the other two (see the module)."""
    partner = {
        "bytes_sent": stats.bytes_sent,
        "bytes_received": stats.bytes_received,
        "rounds": stats.rounds,
    }
    owner = {key: record[key] for key in ("bytes_sent", "bytes_received", "rounds")}
    # The owner's links carry the partner's and the dealer's frames; the partner's
    # carry the owner's and, to the dealer, one hello out and one seed in.
    hello, seed = _partner_dealer_frames(session)
    dealer = {
        "bytes_sent": owner["bytes_received"] - partner["bytes_sent"] + hello + seed,
        "bytes_received": owner["bytes_sent"] - partner["bytes_received"] + seed + hello,
    }
    return {"partner": partner, "owner": owner, "dealer_derived": dealer}


def _partner_dealer_frames(session: str) -> tuple[int, int]:
    """Bytes on the wire of the partner's hello to the dealer and of the dealer's seed to it
    (a rank-0 int64 tensor), as :class:`~secure_compute.mpc_transport.Link` frames them."""
    body = json.dumps(transport._tagged({"session": session}), separators=(",", ":"))
    header = transport._HEADER.size
    return header + len(body.encode()), header + 1 + 8


def _traffic_key(stats: mpc.SessionStats, record: dict) -> tuple:
    return (stats.bytes_sent, stats.bytes_received, stats.rounds, record["bytes_sent"])


def accuracy(case: Case, X: np.ndarray, prediction: mpc.Prediction) -> dict:
    """How the revealed logits compare with plaintext, and with their own bounds."""
    error = np.abs(prediction.logits - mpc.plaintext_logits(case.folded, X)).max(axis=1)
    return {
        "max_abs_logit_error": float(error.max()),
        "max_error_bound": prediction.error_bound,
        "error_within_bound": bool((error <= prediction.error_bounds).all()),
        "rows_settled": int(prediction.settled().sum()),
        "decision_agreement": float(np.mean(prediction.predictions == case.estimator.predict(X))),
    }


def he_figures(case: Case, n_rows: int, repeats: int, preset: str = HE_PRESET) -> dict:
    """The LR under CKKS on the same rows: client and server with no network between."""
    X = case.X[:n_rows]
    weights = he.linear_model_fold(case.estimator)
    start = time.perf_counter()
    context = he.make_context(preset)
    public = he.public_context_bytes(context)
    keygen = time.perf_counter() - start
    seconds = []
    for index in range(repeats):
        start = time.perf_counter()
        request = he.encrypt(context, X)
        logits = he.decrypt(context, he.evaluate(public, request, weights))
        if index:
            seconds.append(time.perf_counter() - start)
    reference = case.estimator.decision_function(X)
    logits = np.asarray(logits).reshape(reference.shape)
    return {
        "model": case.name,
        "rows": n_rows,
        "preset": preset,
        "wall_seconds": statistics.median(seconds) if seconds else None,
        "wall_seconds_runs": seconds,
        "context_seconds": keygen,
        "request_bytes": len(request),
        "public_context_bytes": len(public),
        "request_bytes_with_context": len(request) + len(public),
        "max_abs_logit_error": float(np.max(np.abs(logits - reference))),
        "decision_agreement": float(np.mean((logits > 0) == (reference > 0))),
    }


# --------------------------------------------------------------------------- one session's pieces


def session_pieces(mpc_hosts: Hosts, X: np.ndarray) -> dict:
    """Seconds of each of the partner's steps in one session (run in a forked child)."""
    from secure_compute._crypten_compat import crypten_module

    crypten_module()  # as partner_predict does before it forks
    ticket = mpc_hosts.ticket(len(X))
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    start = time.perf_counter()
    child = context.Process(target=_pieces_child, args=(ticket, X, sender), daemon=True)
    child.start()
    sender.close()
    if not receiver.poll(hosts.SESSION_SECONDS):
        child.kill()
        raise RuntimeError(f"The timed session did not finish in {hosts.SESSION_SECONDS} s.")
    pieces = receiver.recv()
    wall = time.perf_counter() - start
    child.join(5)
    if "error" in pieces:
        raise RuntimeError(f"The timed session failed: {pieces['error']}")
    pieces["fork_and_answer"] = wall - pieces.pop("child_total")
    pieces["wall"] = wall
    return pieces


def _pieces_child(ticket: hosts.SessionTicket, X: np.ndarray, sender) -> None:
    timings: dict[str, float] = {}
    mpc._crypten_session = _timed_as(timings, "crypten_init", mpc._crypten_session)
    mpc._forward = _timed_as(timings, "forward", mpc._forward)
    from crypten.mpc import MPCTensor

    MPCTensor.relu = _timed_as(timings, "forward_relu", MPCTensor.relu)
    MPCTensor.matmul = _timed_as(timings, "forward_matmul", MPCTensor.matmul)
    begin = time.perf_counter()
    try:
        tls = _timed_as(timings, "tls_contexts", transport.tls_context)
        context = tls(ticket.identity, ticket.ca_pem, server=False)
        links = _timed_as(timings, "tls_handshakes", _partner_links)(ticket, context)
        session_start = time.perf_counter()
        mpc.partner_session(ticket.architecture, X, links)
        session = time.perf_counter() - session_start
        timings["hello_reveal_and_bound"] = session - timings["crypten_init"] - timings["forward"]
        timings["child_total"] = time.perf_counter() - begin
        sender.send(timings)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one sentence
        sender.send({"error": str(exc) or type(exc).__name__})
    finally:
        sender.close()


def _partner_links(ticket: hosts.SessionTicket, context) -> dict:
    """Connect to the owner and the dealer as ``partner_predict``'s child does."""
    links = {}
    for rank, address, role in (
        (transport.OWNER, ticket.owner, "owner"),
        (transport.DEALER, ticket.dealer, "dealer"),
    ):
        sock = transport.connect(
            address,
            context,
            timeout=hosts.HANDSHAKE_SECONDS,
            expect=transport.PeerIdentity(role, ticket.endpoint),
            title=f"the {role}",
        )
        links[rank] = transport.Link(sock, rank)
    links[transport.DEALER].send_object({"session": ticket.session})
    return links


def _timed_as(timings: dict, name: str, function):
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - start

    return timed


# --------------------------------------------------------------------------- running


def run(models, rows, repeats: int, *, pieces: bool) -> dict:
    """Every figure of one benchmark run."""
    results = {"parameters": _parameters(rows, repeats), "mpc": [], "he": []}
    for name in models:
        case = case_make(name)
        start = time.perf_counter()
        with Hosts(case.folded) as mpc_hosts:
            results.setdefault("hosts_start_seconds", {})[name] = time.perf_counter() - start
            for n_rows in rows:
                results["mpc"].append(mpc_figures(case, mpc_hosts, n_rows, repeats))
            if pieces and name == _pieces_model(models):
                results["session_pieces"] = session_pieces(mpc_hosts, case.X[: max(rows)])
                results["session_pieces_model"] = name
        if name == "lr":
            results["he"] = [he_figures(case, n_rows, repeats) for n_rows in rows]
    return results


def _pieces_model(models) -> str:
    """The MLP's session is timed in pieces; without it, the last model's."""
    return "mlp" if "mlp" in models else models[-1]


def _parameters(rows, repeats: int) -> dict:
    return {
        "rows": list(rows),
        "repeats": repeats,
        "warm_up_runs_excluded": 1,
        "precision_bits": mpc.PRECISION_BITS,
        "ring_bits": 64,
        "he_preset": HE_PRESET,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d"),
    }


def table(results: dict) -> list[str]:
    """The readable lines printed before the JSON."""
    lines = [
        f"{'path':>22} {'rows':>4} {'median s':>9} {'partner sent/recv B':>21} "
        f"{'owner sent/recv B':>21} {'dealer sent B*':>14} {'rounds p/o':>10} "
        f"{'max err':>8} {'bound':>8} {'agree':>6}"
    ]
    for row in results["mpc"]:
        partner, owner = row["partner"], row["owner"]
        lines.append(
            f"{TITLES[row['model']]:>22} {row['rows']:4d} {_seconds(row['wall_seconds'])} "
            f"{partner['bytes_sent']:>10,}/{partner['bytes_received']:<10,} "
            f"{owner['bytes_sent']:>10,}/{owner['bytes_received']:<10,} "
            f"{row['dealer_derived']['bytes_sent']:>14,} "
            f"{partner['rounds']:>4}/{owner['rounds']:<5} "
            f"{row['max_abs_logit_error']:8.1e} {row['max_error_bound']:8.1e} "
            f"{row['decision_agreement']:6.3f}"
        )
    for row in results["he"]:
        lines.append(
            f"{'HE LR (' + row['preset'] + ')':>22} {row['rows']:4d} "
            f"{_seconds(row['wall_seconds'])} request {row['request_bytes']:,} B "
            f"(+ context {row['public_context_bytes']:,} B)"
            f"{'':>23} {row['max_abs_logit_error']:8.1e} {'':>8} "
            f"{row['decision_agreement']:6.3f}"
        )
    lines.append("* derived: the owner's received less the partner's sent (see the docstring)")
    if "session_pieces" in results:
        parts = ", ".join(f"{k} {v:.3f}" for k, v in results["session_pieces"].items())
        title = TITLES[results["session_pieces_model"]]
        lines.append(f"one {title} session, the partner's seconds: {parts}")
    return lines


def _seconds(value: float | None) -> str:
    return f"{value:9.3f}" if value is not None else f"{'-':>9}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=REPEATS, help="runs per case, 1 warm-up")
    parser.add_argument("--rows", type=int, nargs="+", default=list(ROWS))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--no-pieces", action="store_true", help="skip the timed MLP session")
    args = parser.parse_args(argv)
    if args.repeats < 2:
        parser.error("--repeats must be at least 2: the first run is a warm-up.")
    with contextlib.redirect_stdout(sys.stderr):  # any library chatter stays off the table
        results = run(args.models, args.rows, args.repeats, pieces=not args.no_pieces)
    print("\n".join(table(results)))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
