import datetime as dt
import os
import pickle
from pathlib import Path

import cbor2
import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sklearn.ensemble import RandomForestClassifier

from secure_compute.attestation import attestation_verify
from secure_compute.enclave import (
    ENCLAVE_CODE_MODULES,
    Enclave,
    EnclaveProcess,
    _enclave_from_files,
    code_measurement_compute,
    enclave_serve,
)
from secure_compute.enclave_client import nonce_new, open_result, verify_and_seal
from secure_compute.exceptions import (
    AttestationError,
    EnclaveError,
    EnclaveUnavailable,
    RowLimitExceeded,
)
from secure_compute.sealing import (
    MAX_ROWS,
    MAX_SEALED_REQUEST_BYTES,
    REQUEST_INFO,
    RESPONSE_INFO,
    SEALED_HEADER,
    enclave_client_keys,
    hpke_open,
    hpke_seal,
    open_response,
    seal_request,
)

SECRET_VARIABLE = "TRE_AUDIT_TEST_PARENT_SECRET"


@pytest.fixture(scope="module")
def enclave(model, model_sha256, root):
    return Enclave(model, model_sha256=model_sha256, root=root)


@pytest.fixture
def rows(breast_cancer):
    return breast_cancer[0][400:460]


def sealed_for(enclave, rows, keys=None, nonce=None):
    return seal_request(enclave.public_key, rows, keys or enclave_client_keys(), nonce=nonce)


def request_plaintext(**overrides):
    request = {
        "version": 2,
        "rows": np.zeros((2, 30)).tobytes(),
        "shape": [2, 30],
        "client_public_key": enclave_client_keys().public_key,
        "request_id": os.urandom(16),
        "sealed_at": int(dt.datetime.now(dt.UTC).timestamp()),
    }
    return cbor2.dumps({k: v for k, v in (request | overrides).items() if v is not ...})


# --------------------------------------------------------------------------- in process


def test_predictions_equal_plaintext_predict(enclave, model, rows):
    keys = enclave_client_keys()
    result = open_response(enclave.run(sealed_for(enclave, rows, keys)), keys, n_rows=len(rows))
    np.testing.assert_array_equal(result.predictions, model.predict(rows))
    np.testing.assert_allclose(result.probabilities, model.predict_proba(rows), rtol=0, atol=0)
    assert result.classes == [0, 1]


def test_random_forest_on_named_columns_equals_plaintext(breast_cancer, model_sha256, root):
    X, y = breast_cancer
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(frame[:400], y[:400])
    enclave = Enclave(forest, model_sha256=model_sha256, root=root)
    keys = enclave_client_keys()
    result = open_response(enclave.run(sealed_for(enclave, X[400:], keys)), keys)
    np.testing.assert_array_equal(result.predictions, forest.predict(frame[400:]))


def test_sealed_input_cannot_be_opened_with_another_key(enclave, rows):
    sealed = sealed_for(enclave, rows)
    with pytest.raises(EnclaveError, match="does not open with this key"):
        hpke_open(X25519PrivateKey.generate(), sealed, info=REQUEST_INFO, max_bytes=len(sealed))


def test_sealed_input_cannot_be_opened_by_another_enclave(enclave, model, model_sha256, root, rows):
    other = Enclave(model, model_sha256=model_sha256, root=root)
    with pytest.raises(EnclaveError, match="does not open with this key"):
        other.run(sealed_for(enclave, rows))
    assert enclave.run(sealed_for(enclave, rows))  # the addressed enclave opens it


def test_sealed_response_opens_only_with_the_client_key(enclave, rows):
    sealed_response = enclave.run(sealed_for(enclave, rows, enclave_client_keys()))
    with pytest.raises(EnclaveError, match="does not open with this key"):
        open_response(sealed_response, enclave_client_keys())


def test_sealed_response_cannot_be_replayed_as_a_request(enclave, rows):
    as_response = hpke_seal(enclave.public_key, request_plaintext(), info=RESPONSE_INFO)
    with pytest.raises(EnclaveError, match="does not open with this key"):
        enclave.run(as_response)


def test_response_echoes_the_nonce(enclave, rows):
    keys, nonce = enclave_client_keys(), nonce_new()
    sealed_response = enclave.run(sealed_for(enclave, rows, keys, nonce=nonce))
    assert open_response(sealed_response, keys, nonce=nonce).predictions.shape == (len(rows),)
    with pytest.raises(EnclaveError, match="nonce"):
        open_response(sealed_response, keys, nonce=nonce_new())


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: b"",
        lambda s: b"junk",
        lambda s: SEALED_HEADER,
        lambda s: s[:40],
        lambda s: s[:-1],
        lambda s: s[:-17],
        lambda s: s[:60] + bytes([s[60] ^ 1]) + s[61:],
        lambda s: s[:-1] + bytes([s[-1] ^ 1]),
        lambda s: b"PK\x03\x04" + s[4:],  # a zip file's magic
        lambda s: s[:4] + b"\x02" + s[5:],
        lambda s: s + b"\x00",
        lambda s: s[:5] + bytes(32) + s[37:],
        lambda s: bytes(MAX_SEALED_REQUEST_BYTES + 1),
        lambda s: None,
        lambda s: "text",
    ],
    ids=[
        "empty", "junk", "header-only", "truncated-key", "truncated-1", "truncated-tag",
        "flipped-ciphertext", "flipped-tag", "magic", "version", "trailing", "zero-key",
        "oversized", "none", "str",
    ],
)  # fmt: skip
def test_malformed_sealed_requests_raise_enclave_error(enclave, rows, mangle):
    with pytest.raises(EnclaveError):
        enclave.run(mangle(sealed_for(enclave, rows)))


@pytest.mark.parametrize(
    ("plaintext", "match"),
    [
        (lambda: b"\xff\xfe", "well-formed"),
        (lambda: cbor2.dumps([1, 2, 3]), "CBOR map"),
        (lambda: request_plaintext() + b"\x00", "after its CBOR value"),
        (lambda: cbor2.dumps({"rows": b"\x81" * 100}) + b"\x81" * 100, "after its CBOR value"),
        (lambda: b"\xa1\x61a" + b"\x81" * 50 + b"\x00", "well-formed"),
        (lambda: request_plaintext(version=1), "version 2"),
        (lambda: request_plaintext(version=True), "version 2"),
        (lambda: request_plaintext(request_id=...), "exactly the fields"),
        (lambda: request_plaintext(request_id=b"short"), "16 random bytes"),
        (lambda: request_plaintext(sealed_at=1.5), "whole Unix seconds"),
        (lambda: request_plaintext(sealed_at=0), "seconds old"),
        (lambda: request_plaintext(rows=...), "exactly the fields"),
        (lambda: request_plaintext(extra=1), "exactly the fields"),
        (lambda: request_plaintext(shape=[2, 29]), "takes 30 features"),
        (lambda: request_plaintext(shape=[3, 30]), "do not match its shape"),
        (lambda: request_plaintext(shape=[0, 30], rows=b""), "between 1 and"),
        (lambda: request_plaintext(shape=[MAX_ROWS + 1, 30]), "between 1 and"),
        (lambda: request_plaintext(shape=[2**64, 30]), "between 1 and"),
        (lambda: request_plaintext(shape=[2]), "two-dimensional"),
        (lambda: request_plaintext(shape="2x30"), "list of integers"),
        (lambda: request_plaintext(rows="text"), "do not match its shape"),
        (lambda: request_plaintext(rows=np.full((2, 30), np.nan).tobytes()), "NaN"),
        (lambda: request_plaintext(client_public_key=b"short"), "32 raw bytes"),
        (lambda: request_plaintext(client_public_key=bytes(32)), "usable X25519"),
        (lambda: request_plaintext(nonce=bytes(600)), "at most 512"),
    ],
    ids=lambda value: value if isinstance(value, str) else "plaintext",  # no random bytes: xdist
)
def test_malformed_request_plaintexts_raise_enclave_error(enclave, plaintext, match):
    """Each plaintext is made when its case runs, not at collection: a request sealed
    when the tests were collected may be older than the enclave allows by now."""
    with pytest.raises(EnclaveError, match=match):
        enclave.run(hpke_seal(enclave.public_key, plaintext(), info=REQUEST_INFO))


def test_client_refuses_rows_that_do_not_fit(enclave):
    keys = enclave_client_keys()
    with pytest.raises(EnclaveError, match="takes 30 features"):
        seal_request(enclave.public_key, np.zeros((2, 5)), keys, n_features=30)
    with pytest.raises(EnclaveError, match="numbers only"):
        seal_request(enclave.public_key, [["a", "b"]], keys)
    with pytest.raises(EnclaveError, match="NaN"):
        seal_request(enclave.public_key, [[np.inf]], keys)


def test_enclave_refuses_a_model_without_feature_count(model_sha256, root):
    with pytest.raises(EnclaveError, match="how many features"):
        Enclave(object(), model_sha256=model_sha256, root=root)


def test_attest_refuses_bad_nonces(enclave):
    for nonce in (b"", b"short", bytes(513), "text"):
        with pytest.raises(EnclaveError, match="nonce"):
            enclave.attest(nonce)


def test_enclave_reissues_its_leaf_before_it_expires(enclave, root, model_sha256):
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=23, minutes=30)
    nonce = nonce_new()
    attested = attestation_verify(
        enclave.attest(nonce, now=later),
        expected_model_sha256=model_sha256,
        nonce=nonce,
        trusted_roots=[root.certificate_der],
        accept_simulated=True,
        now=later,
    )
    assert attested.public_key == enclave.public_key


def test_code_measurement_covers_the_enclave_and_its_loader():
    assert {"secure_compute.enclave", "safe_model.loader"} <= set(ENCLAVE_CODE_MODULES)
    measurement = code_measurement_compute()
    assert len(measurement) == 48 and measurement == code_measurement_compute()
    assert code_measurement_compute(ENCLAVE_CODE_MODULES[:-1]) != measurement


# --------------------------------------------------------------------------- separate process


@pytest.fixture(scope="module")
def served(model_bytes, root_directory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SECRET_VARIABLE, "database-password")
        process = enclave_serve(model_bytes=model_bytes, root_directory=root_directory)
    yield process
    process.stop()


def test_predictions_through_the_enclave_process_equal_plaintext(
    served, model, model_sha256, root, rows
):
    nonce = nonce_new()
    pending = verify_and_seal(
        served.attest(nonce),
        expected_model_sha256=model_sha256,
        nonce=nonce,
        rows=rows,
        trusted_roots=[root.certificate_der],
        accept_simulated=True,
    )
    result = open_result(served.run(pending.sealed), pending)
    np.testing.assert_array_equal(result.predictions, model.predict(rows))
    np.testing.assert_allclose(result.probabilities, model.predict_proba(rows), rtol=0, atol=0)
    assert pending.attested.code_measurement == code_measurement_compute()


def test_enclave_process_is_another_pid_and_the_parent_holds_no_private_key(served):
    assert served.alive
    assert served.pid == served.facts.pid != os.getpid()
    held = [*vars(served).values(), *vars(served.facts).values()]
    private = (X25519PrivateKey, EllipticCurvePrivateKey, Enclave)
    assert not [value for value in held if isinstance(value, private)]
    assert not any("private" in name for name in [*vars(served), *vars(served.facts)])


def test_enclave_process_does_not_inherit_the_parents_environment(served):
    environ = Path(f"/proc/{served.pid}/environ")
    if not environ.exists():
        pytest.skip("needs /proc")
    assert SECRET_VARIABLE.encode() not in environ.read_bytes()


def test_simulated_enclave_process_is_refused_by_default(served, model_sha256, root):
    nonce = nonce_new()
    with pytest.raises(AttestationError, match="SIMULATED"):
        verify_and_seal(
            served.attest(nonce),
            expected_model_sha256=model_sha256,
            nonce=nonce,
            rows=[[0.0] * 30],
            trusted_roots=[root.certificate_der],
        )


def test_enclave_process_survives_malformed_requests(served, model, rows):
    for junk in (b"", b"junk", bytes(200), SEALED_HEADER + bytes(100)):
        with pytest.raises(EnclaveError):
            served.run(junk)
    with pytest.raises(EnclaveError, match="nonce"):
        served.attest(b"short")
    keys = enclave_client_keys()
    sealed = seal_request(served.facts.public_key, rows, keys)
    assert served.alive
    np.testing.assert_array_equal(
        open_response(served.run(sealed), keys).predictions, model.predict(rows)
    )


def test_oversized_request_is_refused_before_it_reaches_the_process(served):
    with pytest.raises(EnclaveError, match="limit"):
        served.run(bytes(MAX_SEALED_REQUEST_BYTES + 1))
    assert served.alive


def test_stopped_enclave_process_is_unavailable(model_bytes, root_directory):
    process = EnclaveProcess.start(model_bytes=model_bytes, root_directory=root_directory)
    pid = process.pid
    process.stop()
    process.stop()
    assert not process.alive
    with pytest.raises(EnclaveUnavailable):
        process.attest(nonce_new())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_enclave_start_up_refuses_a_pickle_model(model, root_directory):
    # The child's start-up code, run here: the same refusal then travels to
    # the parent as in test_enclave_process_refuses_a_missing_root.
    with pytest.raises(EnclaveError, match="[Pp]ickle"):
        _enclave_from_files(
            model_bytes=pickle.dumps(model), root_directory=root_directory, filename="model.skops"
        )


def test_enclave_process_refuses_a_missing_root(model_bytes, tmp_path):
    with pytest.raises(EnclaveError, match="root"):
        enclave_serve(model_bytes=model_bytes, root_directory=tmp_path / "absent")


# --------------------------------------------------------------------------- replays and row limits


def test_the_same_sealed_bytes_sent_twice_are_refused_the_second_time(enclave, rows):
    keys = enclave_client_keys()
    sealed = sealed_for(enclave, rows, keys)
    assert open_response(enclave.run(sealed), keys).predictions.shape == (len(rows),)
    with pytest.raises(EnclaveError, match="^This sealed request was already answered"):
        enclave.run(sealed)


def test_a_request_sealed_outside_the_window_is_refused(enclave, rows):
    sealed_at = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    sealed = seal_request(enclave.public_key, rows, enclave_client_keys(), now=sealed_at)
    with pytest.raises(EnclaveError, match="more than 600 seconds old"):
        enclave.run(sealed, now=sealed_at + dt.timedelta(seconds=601))
    with pytest.raises(EnclaveError, match="dated in the future"):
        enclave.run(sealed, now=sealed_at - dt.timedelta(seconds=61))
    assert enclave.run(sealed, now=sealed_at + dt.timedelta(seconds=600))  # inside: once


def test_the_enclave_counts_rows_and_refuses_more_than_the_limit(enclave, rows):
    sealed, n_rows = enclave.run_counted(sealed_for(enclave, rows), max_rows=len(rows))
    assert n_rows == len(rows) and sealed.startswith(SEALED_HEADER)
    with pytest.raises(RowLimitExceeded, match=f"holds {len(rows)} rows, more than the 59"):
        enclave.run_counted(sealed_for(enclave, rows), max_rows=len(rows) - 1)


def test_the_enclave_process_reports_row_counts_and_refuses_replays(served, model, rows):
    keys = enclave_client_keys()
    sealed = seal_request(served.facts.public_key, rows, keys)
    with pytest.raises(RowLimitExceeded):
        served.run_counted(sealed, max_rows=3)
    sealed = seal_request(served.facts.public_key, rows, keys)
    response, n_rows = served.run_counted(sealed, max_rows=1000)
    assert n_rows == len(rows)
    np.testing.assert_array_equal(open_response(response, keys).predictions, model.predict(rows))
    with pytest.raises(EnclaveError, match="already answered"):
        served.run(sealed)
    assert served.alive
