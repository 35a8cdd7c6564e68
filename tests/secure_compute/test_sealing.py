import cbor2
import numpy as np
import pytest

from secure_compute.exceptions import EnclaveError
from secure_compute.sealing import (
    RESPONSE_INFO,
    SEALED_HEADER,
    enclave_client_keys,
    hpke_seal,
    open_response,
    response_encode,
)


def response(**overrides):
    plaintext = {
        "version": 1,
        "predictions": [0, 1],
        "classes": [0, 1],
        "probabilities": {"data": np.eye(2).tobytes(), "shape": [2, 2]},
        "nonce": None,
    }
    return cbor2.dumps(plaintext | overrides)


def sealed_to(keys, plaintext):
    return hpke_seal(keys.public_key, plaintext, info=RESPONSE_INFO)


def test_response_round_trip():
    keys = enclave_client_keys()
    result = open_response(sealed_to(keys, response()), keys, n_rows=2)
    np.testing.assert_array_equal(result.predictions, [0, 1])
    np.testing.assert_array_equal(result.probabilities, np.eye(2))
    assert result.classes == [0, 1]


def test_sealed_message_carries_format_and_version():
    keys = enclave_client_keys()
    sealed = sealed_to(keys, b"x")
    assert sealed.startswith(SEALED_HEADER) and SEALED_HEADER == b"TREH\x01"


@pytest.mark.parametrize(
    ("plaintext", "match"),
    [
        (response(predictions=[0]), "1 predictions for 2 rows"),
        (response(predictions=[[0], [1]]), "plain values"),
        (response(predictions="01"), "plain values"),
        (response(probabilities={"data": b"", "shape": [2, 2]}), "probabilities"),
        (response(probabilities={"data": np.eye(3).tobytes(), "shape": [3, 3]}), "probabilities"),
        (response(probabilities=[1, 2]), "probabilities"),
        (response(classes=[{}]), "plain values"),
        (response(version=9), "version 1"),
        (cbor2.dumps({"predictions": [0, 1]}), "exactly the fields"),
        (b"\x00\x01", "after its CBOR value"),
    ],
)
def test_malformed_responses_raise_enclave_error(plaintext, match):
    keys = enclave_client_keys()
    with pytest.raises(EnclaveError, match=match):
        open_response(sealed_to(keys, plaintext), keys, n_rows=2)


def test_labels_that_are_not_plain_values_are_refused_in_the_enclave():
    with pytest.raises(EnclaveError, match="plain values"):
        response_encode(np.array([object()]), probabilities=None, classes=None, nonce=None)
