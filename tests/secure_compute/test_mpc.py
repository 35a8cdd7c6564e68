"""Secure inference's library parts in one process: folding, rows, framing, certificates.

Sessions with three real processes are in ``test_mpc_host.py``.
"""

import io
import socket
import ssl
import struct
import threading
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from safe_model.onnx_model import OnnxClassifier
from secure_compute import mpc
from secure_compute import mpc_transport as transport
from secure_compute.exceptions import MPCError, MPCUnavailable


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return X[:381], y[:381], X[381:]


@pytest.fixture(scope="module")
def mlp(cancer):
    X, y, _ = cancer
    model = MLPClassifier((16,), max_iter=2000, random_state=0)
    return make_pipeline(StandardScaler(), model).fit(X, y)


# --------------------------------------------------------------------------- folding


def test_a_logistic_regression_folds_into_one_dense_layer_with_its_scaler(cancer):
    X, y, rows = cancer
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    folded = mpc.model_fold(model)
    assert [(layer.kind, layer.n_in, layer.n_out) for layer in folded.architecture.layers] == [
        ("dense", 30, 1)
    ]
    assert folded.architecture.output == "logistic"
    np.testing.assert_allclose(
        mpc.plaintext_logits(folded, rows)[:, 0], model.decision_function(rows), atol=1e-9
    )


def test_a_relu_mlp_folds_into_dense_relu_dense_and_predicts_as_scikit_learn(mlp, cancer):
    rows = cancer[2]
    folded = mpc.model_fold(mlp)
    kinds = [(layer.kind, layer.n_in, layer.n_out) for layer in folded.architecture.layers]
    assert kinds == [("dense", 30, 16), ("relu", 16, 16), ("dense", 16, 1)]
    logits = mpc.plaintext_logits(folded, rows)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits[:, 0])), mlp.predict_proba(rows)[:, 1])
    assert (mpc.predictions_of(folded.architecture, logits) == mlp.predict(rows)).all()


def test_a_multiclass_mlp_is_a_softmax_over_its_classes():
    X, y = load_wine(return_X_y=True)
    model = make_pipeline(StandardScaler(), MLPClassifier((8,), max_iter=2000, random_state=0))
    model.fit(X, y)
    folded = mpc.model_fold(model)
    assert folded.architecture.output == "softmax"
    assert folded.architecture.classes == (0, 1, 2)
    logits = mpc.plaintext_logits(folded, X)
    assert (mpc.predictions_of(folded.architecture, logits) == model.predict(X)).all()


def _teaching_table(upload):
    frame = pd.read_csv(io.BytesIO(upload.data))
    return frame.iloc[:, :-1].to_numpy(dtype=np.float32), frame.iloc[:, -1].to_numpy()


def test_the_teaching_onnx_mlp_folds_gemm_and_relu(mlp_files):
    from safe_model.loader import load_model

    features, labels = _teaching_table(mlp_files["train"])
    model = load_model(
        mlp_files["model"].data, filename="model.onnx", labels=labels, output="logits"
    )
    folded = mpc.model_fold(model)
    assert [layer.kind for layer in folded.architecture.layers] == ["dense", "relu", "dense"]
    predicted = mpc.predictions_of(folded.architecture, mpc.plaintext_logits(folded, features))
    assert (predicted == model.predict(features)).all()


def test_the_sandboxed_fold_gives_the_same_model_as_the_in_process_one(mlp_files):
    features, labels = _teaching_table(mlp_files["train"])
    folded = mpc.model_fold_file(
        mlp_files["model"].data, filename="model.onnx", labels=labels, output="logits"
    )
    assert folded.architecture.n_features == 30 and folded.architecture.n_outputs == 2
    assert folded.architecture.classes == tuple(sorted(set(labels.tolist())))
    assert np.isfinite(mpc.plaintext_logits(folded, features)).all()


@pytest.mark.parametrize(
    ("model", "named"),
    [
        (RandomForestClassifier(n_estimators=2, random_state=0), "A RandomForestClassifier"),
        (MLPClassifier((4,), activation="tanh", max_iter=50, random_state=0), "'tanh'"),
    ],
)
def test_a_model_secure_inference_cannot_run_is_refused_by_name(model, named, cancer):
    X, y, _ = cancer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tanh MLP does not converge in 50 steps
        model.fit(X, y)
    with pytest.raises(MPCError, match=named):
        mpc.model_fold(model)


def test_an_onnx_network_with_a_convolution_is_refused_by_its_operator():
    from onnx import TensorProto, helper

    weights = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 3, 3], [0.1] * 9)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1, 6, 6])],
        [weights],
    )
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    classifier = OnnxClassifier(data.SerializeToString(), classes=[0, 1])
    with pytest.raises(MPCError, match="uses Conv, which secure inference cannot evaluate"):
        mpc.model_fold(classifier)


def test_a_file_that_is_no_model_is_one_sentence_from_the_sandbox():
    with pytest.raises(MPCError) as caught:
        mpc.model_fold_file(b"PK\x03\x04 not really a zip", filename="model.skops")
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)


@pytest.mark.parametrize(
    ("data", "sentence"),
    [
        ({"layers": "x", "output": "logistic"}, "secure inference can read"),
        ({"layers": [["dense", 3, 4], ["dense", 5, 1]], "output": "logistic"}, "do not chain"),
        ({"layers": [["conv", 3, 1]], "output": "logistic"}, "from a dense one to a dense one"),
        ({"layers": [["dense", 3, 1]], "output": "probit"}, "output is one of"),
        ({"layers": [["dense", 3, 2]], "output": "softmax", "classes": [1]}, "classes"),
    ],
)
def test_a_malformed_architecture_is_refused(data, sentence):
    with pytest.raises(MPCError, match=sentence):
        mpc.Architecture.from_json(data)


# --------------------------------------------------------------------------- rows and precision


@pytest.mark.parametrize(
    ("rows", "sentence"),
    [
        (np.ones((2, 29)), "have 29 columns; the model reads 30"),
        (np.full((2, 30), np.nan), "missing or infinite"),
        ([["a"] * 30], "not numbers"),
        (np.ones((0, 30)), "1 to 4096 rows, not 0"),
        (np.full((1, 30), 1e5), "too large"),
    ],
)
def test_rows_secure_inference_cannot_take_are_refused(rows, sentence, mlp):
    with pytest.raises(MPCError, match=sentence):
        mpc.rows_check(mpc.model_fold(mlp).architecture, rows)


def test_the_error_bound_covers_fixed_point_evaluation_of_the_mlp(mlp, cancer):
    """Simulate the encodings and truncations the bound assumes, at their worst sign."""
    rows = cancer[2]
    folded = mpc.model_fold(mlp)
    d = 2.0**-mpc.PRECISION_BITS
    encode = lambda a: np.trunc(a / d) * d  # noqa: E731 - CrypTen truncates when it encodes
    out, relu_sums = encode(rows), []
    for index, (W, b) in enumerate(folded.weights):
        out = encode(out @ encode(W)) - 2 * d + encode(b)
        if index < len(folded.weights) - 1:
            out = np.maximum(out, 0)
            relu_sums.append(out.sum(axis=1))
    bounds = mpc.row_error_bounds(mpc.layer_norms(folded), rows, relu_sums)
    error = np.abs(out - mpc.plaintext_logits(folded, rows)).max(axis=1)
    assert (error <= bounds).all()
    assert bounds.max() < 2.0  # useful, not vacuous, on standardised breast cancer


# --------------------------------------------------------------------------- frames


@pytest.fixture()
def pair():
    left, right = socket.socketpair()
    a = transport.Link(left, transport.PARTNER, timeout=5)
    b = transport.Link(right, transport.OWNER, timeout=5)
    yield a, b
    a.close()
    b.close()


def test_tensors_and_messages_cross_a_link_exactly(pair):
    a, b = pair
    tensor = torch.tensor([[1, -2], [2**62, -(2**63)]], dtype=torch.long)
    a.send_tensor(tensor)
    a.send_object({"function": "additive", "args": (torch.Size([2, 3]), "matmul")})
    a.send_tensor(torch.tensor(7))
    assert torch.equal(b.receive_tensor((2, 2)), tensor)
    assert b.receive_object() == {"function": "additive", "args": (torch.Size([2, 3]), "matmul")}
    assert b.receive_tensor(()).item() == 7
    assert b.stats.frames_received == 3 and b.stats.bytes_received == a.stats.bytes_sent


def test_a_replayed_frame_is_refused(pair):
    a, b = pair
    a.send_object("once")
    frame = struct.pack(">4sBQI", b"TRMP", transport.KIND_OBJECT, 0, 6) + b'"once"'
    a.sock.sendall(frame)  # the same frame again, sequence number 0
    assert b.receive_object() == "once"
    with pytest.raises(MPCError, match="out of sequence .*replayed or dropped"):
        b.receive_object()


def test_a_frame_cut_short_is_refused(pair):
    a, b = pair
    a.sock.sendall(struct.pack(">4sBQI", b"TRMP", transport.KIND_TENSOR, 0, 800) + b"\0" * 10)
    a.sock.close()
    with pytest.raises(MPCError, match="cut short: the model owner disconnected inside a message"):
        b.receive_tensor()


@pytest.mark.parametrize(
    ("frame", "sentence"),
    [
        (struct.pack(">4sBQI", b"HTTP", 2, 0, 0), "is not a tre-audit MPC frame"),
        (struct.pack(">4sBQI", b"TRMP", 2, 0, 2**31), "claims 2147483648 bytes"),
        (struct.pack(">4sBQI", b"TRMP", 1, 0, 1) + b"\x01", "where a message was expected"),
        (struct.pack(">4sBQI", b"TRMP", 2, 0, 4) + b"{'a'", "not a valid JSON message"),
        (struct.pack(">4sBQI", b"TRMP", 2, 0, 8) + b'{"x": 1}', "not a valid JSON message"),
    ],
)
def test_a_malformed_frame_is_one_sentence(pair, frame, sentence):
    a, b = pair
    a.sock.sendall(frame)
    with pytest.raises(MPCError, match=sentence):
        b.receive_object()


def test_a_tensor_of_the_wrong_size_is_refused(pair):
    a, b = pair
    a.send_tensor(torch.zeros(3, dtype=torch.long))
    with pytest.raises(MPCError, match=r"holds a \[3\] tensor where \[2, 2\] was due"):
        b.receive_tensor((2, 2))


def test_a_silent_peer_times_out_with_one_sentence():
    left, right = socket.socketpair()
    link = transport.Link(left, transport.DEALER, timeout=0.2)
    with pytest.raises(MPCUnavailable, match="The dealer stopped answering for 0.2 s"):
        link.receive_object()
    right.close()
    left.close()


def test_a_peer_that_stops_says_why_and_whether_it_refused(pair):
    a, b = pair
    a.stop(MPCError("This session has run already: open a new one."))
    with pytest.raises(MPCError, match="The model owner stopped the session: This session has run"):
        b.receive_object()


# --------------------------------------------------------------------------- certificates


@pytest.fixture(scope="module")
def authority():
    return transport.ca_create(endpoint="9")


def _handshake(server_identity, server_ca, client_identity, client_ca):
    """Run a TLS handshake over a socket pair; return (server outcome, client outcome)."""
    left, right = socket.socketpair()
    outcome = {}

    def serve():
        try:
            context = transport.tls_context(server_identity, server_ca, server=True)
            outcome["server"] = transport.handshake_server(left, context, timeout=10)[1]
        except MPCError as exc:
            outcome["server"] = exc

    thread = threading.Thread(target=serve)
    thread.start()
    context = transport.tls_context(client_identity, client_ca, server=False)
    try:
        sock = context.wrap_socket(right)
        outcome["client"] = transport.peer_identity(sock.getpeercert(binary_form=True))
        sock.close()
    except (ssl.SSLError, OSError) as exc:
        outcome["client"] = exc
    thread.join(20)
    return outcome["server"], outcome["client"]


def _partner(ca, *, endpoint="9", session="abc", rows=5):
    key, csr = transport.csr_create()
    cert = transport.csr_sign(ca, csr, endpoint=endpoint, session=session, rows=rows)
    return transport.Identity(cert, key)


def test_parties_of_one_authority_name_each_other_by_role_and_session(authority):
    owner = transport.identity_issue(authority, role="owner", endpoint="9")
    server, client = _handshake(owner, authority.cert_pem, _partner(authority), authority.cert_pem)
    assert server == transport.PeerIdentity("partner", "9", "abc", 5)
    assert client == transport.PeerIdentity("owner", "9")


def test_a_partner_whose_certificate_another_authority_signed_is_refused(authority):
    owner = transport.identity_issue(authority, role="owner", endpoint="9")
    stranger = _partner(transport.ca_create(endpoint="9"))
    server, client = _handshake(owner, authority.cert_pem, stranger, authority.cert_pem)
    # TLS 1.3: the client's handshake ends before the server checks its certificate
    assert isinstance(server, MPCError) and "refused during the TLS handshake" in str(server)


def test_an_owner_whose_certificate_another_authority_signed_is_refused(authority):
    impostor = transport.identity_issue(
        transport.ca_create(endpoint="9"), role="owner", endpoint="9"
    )
    _, client = _handshake(impostor, authority.cert_pem, _partner(authority), authority.cert_pem)
    assert isinstance(client, ssl.SSLCertVerificationError)


def test_a_certificate_request_that_is_not_one_is_refused(authority):
    with pytest.raises(MPCError, match="not a PEM certificate request"):
        transport.csr_sign(
            authority, b"-----BEGIN NONSENSE-----", endpoint="9", session="a", rows=1
        )


def test_host_certificates_are_only_for_the_owner_and_the_dealer(authority):
    with pytest.raises(MPCError, match="not partner"):
        transport.identity_issue(authority, role="partner", endpoint="9")


# --------------------------------------------------------------------------- the dealer's requests


@pytest.mark.parametrize(
    ("message", "sentence"),
    [
        ("hello", "malformed"),
        (
            {"function": "_get_additive_PRSS", "device": None, "args": (), "kwargs": {}},
            "does not make",
        ),
        (
            {
                "function": "square",
                "device": None,
                "args": (torch.Size([2**13, 2**12]),),
                "kwargs": {},
            },
            "too many values",
        ),
        (
            {
                "function": "additive",
                "device": None,
                "args": (torch.Size([2]), torch.Size([2]), "conv2d"),
                "kwargs": {},
            },
            "never uses",
        ),
        (
            {"function": "square", "device": "cuda", "args": (torch.Size([2]),), "kwargs": {}},
            "does not make",
        ),
    ],
)
def test_the_dealer_refuses_requests_it_does_not_serve(message, sentence):
    with pytest.raises(MPCError, match=sentence):
        mpc._dealer_request(message)


def test_the_dealer_takes_what_crypten_asks_for():
    function, args = mpc._dealer_request(
        {
            "function": "additive",
            "device": "cpu",
            "args": (torch.Size([4, 30]), torch.Size([30, 16]), "matmul"),
            "kwargs": {},
        }
    )
    assert function == "additive" and args[2] == "matmul"
