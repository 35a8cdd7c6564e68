import datetime as dt

import cbor2
import numpy as np
import pytest

from secure_compute.exceptions import EnclaveError
from secure_compute.sealing import (
    RESPONSE_INFO,
    SEALED_HEADER,
    EnclaveRequest,
    ReplayGuard,
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


# --------------------------------------------------------------------------- replays


def _request(request_id: bytes, sealed_at: int):
    return EnclaveRequest(
        rows=np.zeros((1, 1)),
        client_public_key=bytes(32),
        request_id=request_id,
        sealed_at=sealed_at,
        nonce=None,
    )


def test_replay_guard_answers_each_id_once_and_forgets_it_after_the_window():
    guard = ReplayGuard(window_seconds=600)
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    first = _request(b"a" * 16, int(start.timestamp()))
    guard.check(first, now=start)
    with pytest.raises(EnclaveError, match="already answered"):
        guard.check(first, now=start + dt.timedelta(seconds=599))
    later = start + dt.timedelta(seconds=601)
    with pytest.raises(EnclaveError, match="seconds old"):  # forgotten, and refused as stale
        guard.check(first, now=later)
    assert guard._seen == set()  # memory is bounded by the window


def test_replay_guard_refuses_new_ids_when_full():
    guard = ReplayGuard(window_seconds=600, max_remembered=2)
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    for i in range(2):
        guard.check(_request(bytes([i]) * 16, int(now.timestamp())), now=now)
    with pytest.raises(EnclaveError, match="too many requests"):
        guard.check(_request(b"z" * 16, int(now.timestamp())), now=now)
