"""Encrypted linear inference against plaintext, and every refusal of bad bytes.

Tolerance: encrypted outputs must be within 1e-3 of scikit-learn's
``decision_function`` / ``predict`` (measured: ~2e-6 standard, ~2e-5 fast) and
give the same decision on every row.
"""

import json
import os
import stat
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tenseal as ts
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine, make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, PolynomialFeatures, StandardScaler
from sklearn.svm import LinearSVC

from secure_compute import _he_wire as wire
from secure_compute import client, he
from secure_compute.exceptions import HEError, UnsupportedModel
from secure_compute.presets import PRESETS

TOLERANCE = 1e-3
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cancer():
    return load_breast_cancer(return_X_y=True)


@pytest.fixture(scope="module")
def cancer_lr(cancer):
    X, y = cancer
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)


@pytest.fixture(scope="module")
def contexts():
    return {name: he.make_context(name) for name in PRESETS}


@pytest.fixture(scope="module")
def ctx(contexts):
    return contexts["standard"]


@pytest.fixture(scope="module")
def small(ctx):
    """A valid 3-feature request, its public context and the weights it goes with."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 3))
    weights = he.linear_model_fold(LogisticRegression().fit(X, (X[:, 0] > 0).astype(int)))
    return he.public_context_bytes(ctx), he.encrypt(ctx, X), weights


def he_outputs(context, model, X):
    """Encrypt, evaluate and decrypt ``X`` through the three verbs."""
    public = he.public_context_bytes(context)
    response = he.evaluate(public, he.encrypt(context, X), he.linear_model_fold(model))
    return he.decrypt(context, response)


def assert_matches(outputs, model, X):
    """Outputs within tolerance of plaintext and the same prediction on every row."""
    comparison = client.compare_with_plaintext(outputs, (model, X), kind="logistic")
    assert comparison.max_abs_error < TOLERANCE
    assert comparison.decision_agreement == 1.0


# --------------------------------------------------------------------------- folding


@pytest.mark.parametrize(
    "model",
    [
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        make_pipeline(StandardScaler(with_mean=False), MinMaxScaler(), LinearSVC()),
        make_pipeline(MaxAbsScaler(), "passthrough", LogisticRegression(max_iter=1000)),
        make_pipeline(StandardScaler(), LinearRegression()),
        Ridge(),
    ],
    ids=["std-lr", "std-minmax-svm", "maxabs-lr", "std-linreg", "ridge"],
)
def test_folded_weights_reproduce_the_model_in_plaintext(model, cancer):
    X, y = cancer
    model.fit(X, y)
    weights = he.linear_model_fold(model)
    expected = client.plaintext_outputs(model, X)
    np.testing.assert_allclose((X @ weights.coef.T + weights.intercept)[:, 0], expected, atol=1e-9)


@pytest.mark.parametrize(
    "model",
    [
        RandomForestClassifier(n_estimators=2),
        make_pipeline(PolynomialFeatures(), LogisticRegression()),
        make_pipeline(MinMaxScaler(clip=True), LogisticRegression()),
        Lasso(alpha=1e6),
    ],
    ids=["forest", "polynomial", "clipping-scaler", "all-zero-weights"],
)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_unsupported_models_are_refused_with_a_sentence(model, cancer):
    X, y = cancer
    model.fit(X, y)
    with pytest.raises(UnsupportedModel, match=r"\.$"):
        he.linear_model_fold(model)


def test_unfitted_model_is_refused():
    with pytest.raises(UnsupportedModel, match="not fitted"):
        he.linear_model_fold(LogisticRegression())


def test_model_info_names_columns_but_no_weights(cancer_lr):
    info = he.model_info(he.linear_model_fold(cancer_lr), preset="fast")
    assert info["kind"] == "logistic" and info["preset"] == "fast"
    assert info["classes"] == [0, 1] and len(info["feature_names"]) == 30
    assert not {"coef", "intercept", "weights"} & set(info)
    assert client.ModelInfo.from_json(json.loads(json.dumps(info))).n_outputs == 1


# --------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_breast_cancer_every_row_agrees_with_predict(preset, contexts, cancer, cancer_lr):
    X, _ = cancer
    outputs = he_outputs(contexts[preset], cancer_lr, X)
    info = client.ModelInfo.from_json(he.model_info(he.linear_model_fold(cancer_lr)))
    prediction = client.predictions_from_outputs(outputs, info)
    np.testing.assert_array_equal(prediction.labels, cancer_lr.predict(X))
    np.testing.assert_allclose(prediction.probabilities, cancer_lr.predict_proba(X), atol=TOLERANCE)
    assert_matches(outputs, cancer_lr, X)


def test_5000_synthetic_rows_over_two_batches(ctx):
    X, y = make_classification(n_samples=5000, n_features=20, n_informative=8, random_state=0)
    X = X * np.linspace(0.01, 300, 20) + np.linspace(-50, 50, 20)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    request = he.encrypt(ctx, X)
    header, _ = wire.read_header(request, max_bytes=he.MAX_REQUEST_BYTES, what="request")
    assert header["batch_sizes"] == [4096, 904]
    assert_matches(he_outputs(ctx, model, X), model, X)


def test_linear_svm_decision_function(ctx, cancer):
    X, y = cancer
    model = make_pipeline(StandardScaler(), LinearSVC()).fit(X, y)
    assert_matches(he_outputs(ctx, model, X), model, X)


def test_minmax_scaler_pipeline(ctx, cancer):
    X, y = cancer
    model = make_pipeline(MinMaxScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    assert_matches(he_outputs(ctx, model, X), model, X)


def test_linear_regression_predictions(ctx):
    X, y = load_diabetes(return_X_y=True, scaled=False)
    model = make_pipeline(StandardScaler(), LinearRegression()).fit(X, y)
    outputs = he_outputs(ctx, model, X)
    np.testing.assert_allclose(outputs, model.predict(X), atol=TOLERANCE)


def test_multiclass_logistic_one_output_per_class(ctx):
    X, y = load_wine(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    outputs = he_outputs(ctx, model, X)
    assert outputs.shape == (len(X), 3)
    info = client.ModelInfo.from_json(he.model_info(he.linear_model_fold(model)))
    prediction = client.predictions_from_outputs(outputs, info)
    np.testing.assert_array_equal(prediction.labels, model.predict(X))
    np.testing.assert_allclose(prediction.probabilities, model.predict_proba(X), atol=TOLERANCE)


# --------------------------------------------------------------------------- keys


def test_served_context_is_public_and_has_no_evaluation_keys(ctx):
    assert ctx.is_private()
    served = ts.context_from(he.public_context_bytes(ctx))
    assert not served.is_private() and not served.has_secret_key()
    assert not served.has_galois_keys() and not served.has_relin_keys()
    assert served.has_public_key()


def test_evaluate_refuses_a_context_holding_the_secret_key(ctx, small):
    _, request, weights = small
    secret = ctx.serialize(save_secret_key=True, save_galois_keys=False, save_relin_keys=False)
    with pytest.raises(HEError, match="secret key"):
        he.evaluate(secret, request, weights)


def test_evaluate_refuses_galois_keys(small):
    _, _, weights = small
    context = he.make_context("fast")
    context.generate_galois_keys()
    public = context.serialize(save_secret_key=False, save_galois_keys=True, save_relin_keys=False)
    with pytest.raises(HEError, match="Galois"):
        he.evaluate(public, he.encrypt(context, np.ones((2, 3))), weights)


def test_wrong_context_is_refused(contexts, small):
    _, request, weights = small
    other = he.public_context_bytes(he.make_context("standard"))
    with pytest.raises(HEError, match="different HE context"):
        he.evaluate(other, request, weights)
    with pytest.raises(HEError, match="different HE context"):
        he.evaluate(he.public_context_bytes(contexts["fast"]), request, weights)


def test_response_for_another_client_is_refused(ctx, small):
    public, request, weights = small
    response = he.evaluate(public, request, weights)
    with pytest.raises(HEError, match="different HE context"):
        he.decrypt(he.make_context("standard"), response)


def test_ciphertext_of_another_preset_is_refused_even_with_a_matching_fingerprint(contexts, small):
    public, request, weights = small
    fast_blob = ts.ckks_vector(contexts["fast"], [1.0] * 30).serialize()
    header, offset = wire.read_header(request, max_bytes=he.MAX_REQUEST_BYTES, what="request")
    forged = wire.pack_envelope(header, [fast_blob] * 3)
    with pytest.raises(HEError, match="scale|parsed"):
        he.evaluate(public, forged, weights)


# --------------------------------------------------------------------------- bad bytes


def reframe(request: bytes, **changes) -> bytes:
    """The same blobs under a header with some fields changed."""
    header, offset = wire.read_header(request, max_bytes=he.MAX_REQUEST_BYTES, what="request")
    blobs = wire.read_blobs(request, offset, 3, max_blob=10**6, what="request")
    return wire.pack_envelope({**header, **changes}, blobs)


@pytest.mark.parametrize("cut", [0, 4, 9, 20, 200, 1000, 100_000, -1])
def test_truncated_request_is_refused(small, cut):
    public, request, weights = small
    with pytest.raises(HEError):
        he.evaluate(public, request[:cut], weights)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda r: b"garbage" * 100,
        lambda r: b"%PDF-" + r[5:],  # another file type's magic
        lambda r: r[:5] + b"\x09" + r[6:],
        lambda r: r[:11] + b"{" + r[12:],
        lambda r: r + b"\x00",
        lambda r: reframe(r, n_rows=True),
        lambda r: reframe(r, n_rows=31),
        lambda r: reframe(r, n_features=4),
        lambda r: reframe(r, batch_sizes=[15, 15]),
        lambda r: reframe(r, preset="huge"),
        lambda r: reframe(r, extra=1),
    ],
    ids=[
        "garbage",
        "magic",
        "version",
        "header-json",
        "trailing",
        "bool-rows",
        "row-count",
        "feature-count",
        "batches",
        "preset",
        "extra-field",
    ],
)
def test_malformed_request_is_refused(small, mangle):
    public, request, weights = small
    with pytest.raises(HEError, match=r"\.$"):
        he.evaluate(public, mangle(request), weights)


def test_bit_flips_in_framing_are_refused(small):
    public, request, weights = small
    header_end = wire.read_header(request, max_bytes=he.MAX_REQUEST_BYTES, what="request")[1]
    # the blob length, the protobuf tags and lengths, and the SEAL header of the first ciphertext
    for position in range(header_end, header_end + 30):
        flipped = bytearray(request)
        flipped[position] ^= 0x10
        with pytest.raises(HEError):
            he.evaluate(public, bytes(flipped), weights)


def test_size_limits_are_enforced_before_tenseal_parses(small, monkeypatch):
    public, request, weights = small

    def never(*args, **kwargs):
        raise AssertionError("TenSEAL was reached")

    monkeypatch.setattr(ts, "ckks_vector_from", never)
    monkeypatch.setattr(ts, "context_from", never)
    header, offset = wire.read_header(request, max_bytes=he.MAX_REQUEST_BYTES, what="request")
    too_long = request[:offset] + struct.pack(">I", PRESETS["standard"].max_ciphertext_bytes + 1)
    cases = [
        (public, too_long + request[offset + 4 :]),
        (public, reframe(request, n_features=he.MAX_FEATURES + 1)),
        (public, reframe(request, n_rows=he.MAX_ROWS + 1)),
        (public + b"\x00" * PRESETS["standard"].max_context_bytes, request),
    ]
    for context_bytes, request_bytes in cases:
        with pytest.raises(HEError):
            he.evaluate(context_bytes, request_bytes, weights)
    monkeypatch.setattr(he, "MAX_REQUEST_BYTES", len(request) - 1)
    with pytest.raises(HEError, match="more than"):
        he.evaluate(public, request, weights)


def test_fuzzed_inputs_never_crash_the_process():
    """Hundreds of mutated requests, contexts and responses: each is refused or evaluated."""
    run = subprocess.run(
        [sys.executable, "-m", "tests.secure_compute.he_fuzz", "300", "7"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,  # generous: the machine may be loaded; the fuzz is short
    )
    assert run.returncode == 0, (
        f"native crash or error (exit {run.returncode}): {run.stderr[-500:]}"
    )
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["unexpected"] == []
    refused = sum(n for key, n in summary["outcomes"].items() if key.endswith("refused"))
    assert refused > 0.9 * summary["cases"]


def test_body_round_trip_and_limits():
    body = he.join_request_body(b"ctx", b"req")
    assert he.split_request_body(body) == (b"ctx", b"req")
    with pytest.raises(HEError):
        he.split_request_body(struct.pack(">Q", 2**40) + b"x")
    with pytest.raises(HEError):
        he.split_request_body(b"\x00")


# --------------------------------------------------------------------------- client


def test_keys_are_saved_0600_and_not_overwritten(tmp_path):
    path = tmp_path / "partner.key"
    context = client.generate_keys(path, preset="fast")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = client.load_keys(path)
    assert he.public_context_bytes(loaded) == he.public_context_bytes(context)
    with pytest.raises(HEError, match="exists"):
        client.generate_keys(path)
    os.chmod(path, 0o644)
    with pytest.raises(HEError, match="chmod 600"):
        client.load_keys(path)


def test_read_csv_orders_columns_by_the_models_names(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("b,id,a\n2,x,1\n4,y,3\n")
    np.testing.assert_array_equal(client.read_csv(path, ["a", "b"]), [[1, 2], [3, 4]])
    with pytest.raises(HEError, match="lacks"):
        client.read_csv(path, ["a", "c"])
    with pytest.raises(HEError, match="non-numeric"):
        client.read_csv(path, ["id"])


class FakeTRE:
    """Stands in for the Django views of the HTTP contract."""

    def __init__(self, model, token="secret-token"):
        self.weights = he.linear_model_fold(model)
        self.token = token
        self.calls = []

    def _answer(self, status, *, content=b"", data=None):
        class Answer:
            status_code, reason = status, "refused"

            def json(self):
                return data

        answer = Answer()
        answer.content = content
        return answer

    def get(self, url, headers, timeout):
        self.calls.append(("GET", url, headers))
        if headers["Authorization"] != f"Token {self.token}":
            return self._answer(401, data={"detail": "Invalid token."})
        return self._answer(200, data=he.model_info(self.weights, preset="fast"))

    def post(self, url, headers, data, timeout):
        self.calls.append(("POST", url, headers))
        try:
            context, request = he.split_request_body(data)
            return self._answer(200, content=he.evaluate(context, request, self.weights))
        except HEError as exc:
            return self._answer(400, data={"detail": str(exc)})


def test_client_predicts_a_csv_through_the_http_contract(tmp_path, cancer, cancer_lr):
    X, _ = cancer
    names = [f"f{j}" for j in range(X.shape[1])]
    csv_path = tmp_path / "cohort.csv"
    rows = "\n".join(",".join(repr(v) for v in row.tolist()) for row in X[:, ::-1])
    csv_path.write_text(",".join(names[::-1]) + "\n" + rows + "\n")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    import pandas as pd

    model.fit(pd.DataFrame(X, columns=names), cancer[1])
    tre = FakeTRE(model)
    client.generate_keys(tmp_path / "k", preset="fast")
    handle = client.HEClient(
        "https://tre/info", "https://tre/eval", tre.token, tmp_path / "k", session=tre
    )
    result = handle.predict_csv(csv_path)
    np.testing.assert_array_equal(result.labels, model.predict(pd.DataFrame(X, columns=names)))
    assert {call[2]["Authorization"] for call in tre.calls} == {"Token secret-token"}
    assert tre.calls[-1][2]["Content-Type"] == "application/octet-stream"


def test_client_reports_the_servers_refusal(tmp_path, cancer_lr):
    tre = FakeTRE(cancer_lr)
    client.generate_keys(tmp_path / "k", preset="fast")
    wrong = client.HEClient(
        "https://tre/info", "https://tre/eval", "bad", tmp_path / "k", session=tre
    )
    with pytest.raises(HEError, match="401: Invalid token"):
        wrong.predict(np.ones((2, 30)))
    narrow = client.HEClient(
        "https://tre/info", "https://tre/eval", tre.token, tmp_path / "k", session=tre
    )
    with pytest.raises(HEError, match="400: The model takes 30 features"):
        client.evaluate_remote(
            "https://tre/eval", tre.token, narrow.context, np.ones((2, 29)), session=tre
        )


def test_cli_keygen_writes_a_private_key(tmp_path):
    assert client.main(["keygen", str(tmp_path / "cli.key"), "--preset", "fast"]) == 0
    assert stat.S_IMODE(os.stat(tmp_path / "cli.key").st_mode) == 0o600
    assert client.main(["keygen", str(tmp_path / "cli.key")]) == 2
