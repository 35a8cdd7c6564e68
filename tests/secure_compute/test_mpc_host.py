"""Secure inference with three real processes: the owner's and the dealer's hosts, the partner.

Each host is started as the service starts it (``host_command``), keeps a transcript
of what each session received, and each test's partner runs in a forked child.
"""

import os
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from secure_compute import mpc, mpc_host
from secure_compute import mpc_transport as transport
from secure_compute.exceptions import MPCError, MPCUnavailable

#: Seconds a host may take to say it is ready (it imports torch and CrypTen first).
START_SECONDS = 180
ENDPOINT = "7"
DEALER_REQUEST = {"function", "device", "args", "kwargs"}


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return X[:381], y[:381], X[381:]


@dataclass
class Hosts:
    ca: transport.Identity
    model: mpc.FoldedModel
    owner: subprocess.Popen
    dealer: subprocess.Popen
    owner_port: int
    dealer_port: int
    model_dir: Path
    transcripts: Path
    sessions: int = 0

    def ticket(self, rows: int, *, ca=None, endpoint=ENDPOINT, session=None):
        self.sessions += 1
        session = session or f"s{self.sessions}"
        key, csr = transport.csr_create()
        cert = transport.csr_sign(ca or self.ca, csr, endpoint=endpoint, session=session, rows=rows)
        return mpc_host.SessionTicket(
            endpoint=ENDPOINT,
            session=session,
            owner=("127.0.0.1", self.owner_port),
            dealer=("127.0.0.1", self.dealer_port),
            ca_pem=self.ca.cert_pem,
            identity=transport.Identity(cert, key),
            architecture=self.model.architecture,
        )

    def seen(self, session: str, role: str):
        path = self.transcripts / f"{session}.{role}.frames"
        return transport.transcript_values(transport.transcript_read(path))


def _start(command) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=mpc_host.host_environment(),
        start_new_session=True,
    )
    line = process.stdout.readline().split()  # the host exits with a sentence if it fails
    if line[:1] != [b"ready"]:
        process.kill()
        raise AssertionError(f"the host did not start: {process.stderr.read()[-2000:]!r}")
    return process, int(line[1])


@contextmanager
def hosts_for(model: mpc.FoldedModel, root: Path, *, session_seconds=mpc_host.SESSION_SECONDS):
    ca = transport.ca_create(endpoint=ENDPOINT)
    tls, model_dir, transcripts = root / "tls", root / "model", root / "transcripts"
    for role in ("owner", "dealer"):
        identity = transport.identity_issue(ca, role=role, endpoint=ENDPOINT)
        transport.identity_save(identity, tls, role)
    (tls / "ca.pem").write_bytes(ca.cert_pem)
    mpc_host.weights_save(model, model_dir)
    transcripts.mkdir()
    common = {
        "tls_dir": tls,
        "endpoint": ENDPOINT,
        "listen_at": "127.0.0.1:0",
        "session_seconds": session_seconds,
    }
    dealer, dealer_port = _start(mpc_host.host_command("dealer", transcript=transcripts, **common))
    owner, owner_port = _start(
        mpc_host.host_command(
            "owner",
            model_dir=model_dir,
            dealer=f"127.0.0.1:{dealer_port}",
            transcript=transcripts,
            **common,
        )
    )
    hosts = Hosts(ca, model, owner, dealer, owner_port, dealer_port, model_dir, transcripts)
    try:
        yield hosts
    finally:
        for process in (owner, dealer):
            _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        print(f"host {process.pid} ignored SIGTERM for 60 s; killing it")
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _record(hosts: Hosts, session: str) -> dict:
    """The owner host's record of a finished session (its child writes it as it ends)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        record = mpc_host.session_record(hosts.model_dir, session)
        if record and record["status"] != "running":
            return record
        time.sleep(0.1)
    raise AssertionError(f"the owner host never finished session {session} in 120 s")


def _encoded(values: np.ndarray) -> np.ndarray:
    """Values as CrypTen encodes them, without the zeros any tensor may hold."""
    encoded = np.trunc(np.asarray(values, dtype=float).ravel() * 2**mpc.PRECISION_BITS)
    return encoded[encoded != 0].astype(np.int64)


@pytest.fixture(scope="module")
def lr_hosts(cancer, tmp_path_factory):
    X, y, _ = cancer
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    with hosts_for(mpc.model_fold(model), tmp_path_factory.mktemp("lr")) as hosts:
        hosts.estimator = model
        yield hosts


@pytest.fixture(scope="module")
def mlp_hosts(cancer, tmp_path_factory):
    X, y, _ = cancer
    model = make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=2000, random_state=0))
    model.fit(X, y)
    with hosts_for(mpc.model_fold(model), tmp_path_factory.mktemp("mlp")) as hosts:
        hosts.estimator = model
        yield hosts


@pytest.mark.parametrize("which", ["lr_hosts", "mlp_hosts"])
def test_every_decision_equals_plaintext_and_logits_are_within_their_bound(which, cancer, request):
    hosts = request.getfixturevalue(which)
    rows = cancer[2]
    ticket = hosts.ticket(len(rows))
    prediction, partner_saw = mpc_host.partner_predict(ticket, rows, record=True)
    plain = mpc.plaintext_logits(hosts.model, rows)
    assert (prediction.predictions == hosts.estimator.predict(rows)).all()
    error = np.abs(prediction.logits - plain).max(axis=1)
    assert (error <= prediction.error_bounds).all(), (error.max(), prediction.error_bound)
    record = _record(hosts, ticket.session)
    assert record["status"] == "done" and record["n_rows"] == len(rows)
    assert record["bytes_received"] > 0 and record["rounds"] > 0

    # The partner never received a weight, the owner never a row, the dealer neither.
    weights = np.concatenate([_encoded(W) for W, _ in hosts.model.weights])
    rows_encoded = _encoded(rows)
    partner_values, partner_messages = transport.transcript_values(partner_saw)
    owner_values, owner_messages = hosts.seen(ticket.session, "owner")
    dealer_values, dealer_messages = hosts.seen(ticket.session, "dealer")
    assert partner_values.size > 1_000 and owner_values.size > 1_000  # they did talk
    assert np.isin(weights, partner_values).mean() < 0.01
    assert np.isin(rows_encoded, owner_values).mean() < 0.01
    assert dealer_values.size == 0  # the dealer gets messages only: sizes and names
    assert {m["function"] for m in dealer_messages if isinstance(m, dict) and "function" in m}
    for message in dealer_messages:
        assert message == "terminate" or set(message) <= {"session", *DEALER_REQUEST}
    n_dense = len(hosts.model.weights)
    assert [set(m) for m in partner_messages if isinstance(m, dict)] == [{"layer_norms"}]
    assert len(partner_messages[0]["layer_norms"]) == n_dense
    hello = {"n_rows": len(rows), "architecture": hosts.model.architecture.sha256()}
    assert owner_messages[0] == hello


def test_one_row_is_served_as_well(lr_hosts, cancer):
    row = cancer[2][:1]
    prediction = mpc_host.partner_predict(lr_hosts.ticket(1), row)
    assert prediction.logits.shape == (1, 1)
    assert prediction.predictions[0] == lr_hosts.estimator.predict(row)[0]


def test_a_session_runs_once(lr_hosts, cancer):
    ticket = lr_hosts.ticket(2)
    mpc_host.partner_predict(ticket, cancer[2][:2])
    with pytest.raises(MPCError, match="This session has run already: open a new one."):
        mpc_host.partner_predict(ticket, cancer[2][:2])


def test_more_rows_than_the_certificate_allows_are_refused(lr_hosts, cancer):
    with pytest.raises(MPCError, match="The partner may send 1 to 2 rows in this session."):
        mpc_host.partner_predict(lr_hosts.ticket(2), cancer[2][:3])


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        ({"ca": "other"}, "refused|disconnected"),
        ({"endpoint": "8"}, "Only a partner's session certificate for this endpoint"),
    ],
)
def test_a_partner_with_the_wrong_certificate_is_refused(lr_hosts, cancer, change, sentence):
    if change.get("ca") == "other":
        change = {"ca": transport.ca_create(endpoint=ENDPOINT)}
    ticket = lr_hosts.ticket(2, **change)
    with pytest.raises((MPCError, MPCUnavailable), match=sentence):
        mpc_host.partner_predict(ticket, cancer[2][:2])
    prediction = mpc_host.partner_predict(lr_hosts.ticket(2), cancer[2][:2])  # still serving
    assert prediction.logits.shape == (2, 1)


def test_a_partner_that_leaves_mid_protocol_fails_only_its_session(lr_hosts, cancer):
    ticket = lr_hosts.ticket(4)
    link = _connected_partner(ticket)
    link.send_object({"n_rows": 4, "architecture": ticket.architecture.sha256()})
    link.receive_object()  # the layer norms; then the partner leaves before CrypTen starts
    link.close()
    record = _record(lr_hosts, ticket.session)
    assert record["status"] == "failed"
    assert "disconnected" in record["error"] or "waited" in record["error"], record
    prediction = mpc_host.partner_predict(lr_hosts.ticket(4), cancer[2][:4])
    assert prediction.logits.shape == (4, 1)


def _connected_partner(ticket) -> transport.Link:
    context = transport.tls_context(ticket.identity, ticket.ca_pem, server=False)
    sock = transport.connect(
        ticket.owner,
        context,
        timeout=10,
        expect=transport.PeerIdentity("owner", ENDPOINT),
        title="the model owner",
    )
    return transport.Link(sock, transport.OWNER)


def test_a_silent_partner_is_cut_off_and_a_killed_dealer_fails_calls_cleanly(cancer, tmp_path):
    X, y, rows = cancer
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    # A session may run 5 s here, so the silent partner below is cut off soon.
    with hosts_for(mpc.model_fold(model), tmp_path, session_seconds=5) as hosts:
        silent = _connected_partner(hosts.ticket(3))
        silent.send_object({"n_rows": 3, "architecture": model_architecture(hosts)})
        silent.receive_object()  # the owner now waits for the dealer and for CrypTen's seeds
        record = _record(hosts, f"s{hosts.sessions}")
        assert record["status"] == "failed", record
        assert record["error"] == "The session ran longer than 5 s and was stopped.", record
        silent.close()

        os.killpg(hosts.dealer.pid, signal.SIGKILL)
        hosts.dealer.wait(timeout=60)
        ticket = hosts.ticket(3)
        with pytest.raises(MPCUnavailable, match="dealer"):
            mpc_host.partner_predict(ticket, rows[:3])
        record = _record(hosts, ticket.session)
        assert record["status"] == "failed" and "dealer" in record["error"]
        assert _children(hosts.owner.pid) == []  # the session's child has ended
    assert hosts.owner.poll() is not None


def model_architecture(hosts: Hosts) -> str:
    return hosts.model.architecture.sha256()


def _children(pid: int) -> list[int]:
    deadline = time.monotonic() + 60
    while True:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if not children or time.monotonic() > deadline:
            return [int(child) for child in children]
        time.sleep(0.1)
