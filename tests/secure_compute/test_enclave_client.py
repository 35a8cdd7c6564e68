import io
import json
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import requests
from requests.adapters import BaseAdapter

from secure_compute.attestation import MAX_DOCUMENT_BYTES
from secure_compute.enclave import Enclave
from secure_compute.enclave_client import (
    ATTESTATION_CONTENT_TYPE,
    enclave_predict,
    nonce_new,
    open_result,
    verify_and_seal,
)
from secure_compute.exceptions import AttestationError, EnclaveError, EnclaveUnavailable

ENDPOINT = "https://tre.example/api/enclaves/7"
TOKEN = "secret-token"


class EnclaveAdapter(BaseAdapter):
    """Plays the Django side of the HTTP contract against an in-process Enclave."""

    def __init__(self, enclave, *, status=200, body=None):
        super().__init__()
        self.enclave = enclave
        self.status = status
        self.body = body
        self.requests = []

    def send(self, request, **kwargs):
        self.requests.append(request)
        if self.status != 200:
            return _response(request, self.status, json.dumps({"detail": "Not yours."}).encode())
        if self.body is not None:
            return _response(request, 200, self.body)
        url = urlsplit(request.url)
        if request.method == "GET" and url.path == "/api/enclaves/7/attestation":
            nonce = bytes.fromhex(parse_qs(url.query)["nonce"][0])
            return _response(request, 200, self.enclave.attest(nonce), ATTESTATION_CONTENT_TYPE)
        if request.method == "POST" and url.path == "/api/enclaves/7/run":
            return _response(request, 200, self.enclave.run(request.body))
        return _response(request, 404, b"{}")

    def close(self):
        pass


def _response(request, status, body, content_type="application/octet-stream"):
    response = requests.Response()
    response.status_code = status
    response.raw = io.BytesIO(body)
    response.headers["Content-Type"] = content_type
    response.request = request
    response.url = request.url
    return response


@pytest.fixture(scope="module")
def enclave(model, model_sha256, root):
    return Enclave(model, model_sha256=model_sha256, root=root)


def session_for(adapter):
    session = requests.Session()
    session.mount("https://", adapter)
    return session


def predict(adapter, model_sha256, root, rows, **kwargs):
    return enclave_predict(
        ENDPOINT,
        token=TOKEN,
        rows=rows,
        expected_model_sha256=model_sha256,
        trusted_roots=[root.certificate_der],
        session=session_for(adapter),
        **({"accept_simulated": True} | kwargs),
    )


def test_enclave_predict_follows_the_http_contract(
    enclave, model, model_sha256, root, breast_cancer
):
    rows = breast_cancer[0][400:420]
    adapter = EnclaveAdapter(enclave)
    result = predict(adapter, model_sha256, root, rows)
    np.testing.assert_array_equal(result.predictions, model.predict(rows))
    get, post = adapter.requests
    assert get.method == "GET" and post.method == "POST"
    assert get.headers["Authorization"] == post.headers["Authorization"] == f"Token {TOKEN}"
    assert len(parse_qs(urlsplit(get.url).query)["nonce"][0]) == 64
    assert post.headers["Content-Type"] == "application/octet-stream"
    assert rows.tobytes() not in post.body


def test_no_data_is_sent_to_a_simulated_enclave_by_default(enclave, model_sha256, root):
    adapter = EnclaveAdapter(enclave)
    with pytest.raises(AttestationError, match="SIMULATED"):
        predict(adapter, model_sha256, root, [[0.0] * 30], accept_simulated=False)
    assert [r.method for r in adapter.requests] == ["GET"]


def test_no_data_is_sent_to_an_enclave_serving_another_model(enclave, root):
    adapter = EnclaveAdapter(enclave)
    with pytest.raises(AttestationError, match="not the approved model"):
        predict(adapter, bytes(32), root, [[0.0] * 30])
    assert [r.method for r in adapter.requests] == ["GET"]


def test_http_refusal_carries_the_servers_sentence(enclave, model_sha256, root):
    with pytest.raises(EnclaveError, match="HTTP 403: Not yours."):
        predict(EnclaveAdapter(enclave, status=403), model_sha256, root, [[0.0] * 30])


def test_unavailable_enclave_is_reported_as_such(enclave, model_sha256, root):
    with pytest.raises(EnclaveUnavailable, match="HTTP 503"):
        predict(EnclaveAdapter(enclave, status=503), model_sha256, root, [[0.0] * 30])


def test_unreachable_endpoint_is_unavailable(model_sha256, root):
    with pytest.raises(EnclaveUnavailable, match="could not be reached"):
        enclave_predict(
            "http://127.0.0.1:9",
            token=TOKEN,
            rows=[[0.0]],
            expected_model_sha256=model_sha256,
            trusted_roots=[root.certificate_der],
            timeout=5,
        )


def test_oversized_answer_is_refused_unread(enclave, model_sha256, root):
    adapter = EnclaveAdapter(enclave, body=bytes(MAX_DOCUMENT_BYTES + 1))
    with pytest.raises(EnclaveError, match="more than"):
        predict(adapter, model_sha256, root, [[0.0] * 30])


def test_result_from_another_request_does_not_open(enclave, model_sha256, root, breast_cancer):
    rows = breast_cancer[0][:3]
    pendings = []
    for _ in range(2):
        nonce = nonce_new()
        pendings.append(
            verify_and_seal(
                enclave.attest(nonce),
                expected_model_sha256=model_sha256,
                nonce=nonce,
                rows=rows,
                trusted_roots=[root.certificate_der],
                accept_simulated=True,
            )
        )
    first_response = enclave.run(pendings[0].sealed)
    assert len(open_result(first_response, pendings[0]).predictions) == 3
    with pytest.raises(EnclaveError):
        open_result(first_response, pendings[1])
