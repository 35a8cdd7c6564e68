"""Secure serving end to end: real HTTP (live server), the partner's real clients,
a real enclave host process. The TRE never sees rows or results in the clear."""

import io
import os

import numpy as np
import pytest
import skops.io
from knox.models import AuthToken
from sklearn.ensemble import RandomForestClassifier

from secure_compute import client as he_client
from secure_compute import he
from secure_compute.attestation import ROOT_CERT_FILE
from secure_compute.enclave_client import enclave_predict
from secure_compute.exceptions import AttestationError, EnclaveError, HEError
from tests import factories
from tests.tre_audit.serving.helpers import approved as _approved
from tests.tre_audit.serving.helpers import budget_set
from tre_audit.reviews.enums import Role
from tre_audit.serving.enums import EndpointKind, EndpointStatus
from tre_audit.serving.models import Endpoint
from tre_audit.serving.services import endpoint_caller_grant, endpoint_deploy, endpoint_stop
from tre_audit.submissions.enums import Status
from tre_audit.submissions.models import AuditEntry

pytestmark = pytest.mark.django_db(transaction=True)


def _token(user) -> str:
    return AuthToken.objects.create(user=user)[1]


def test_only_an_approved_request_can_be_deployed(linear_model_bytes):
    author = factories.create_user(role=Role.RESEARCHER)
    waiting = factories.create_audited_submission(
        Status.AWAITING_REVIEW, author=author, model_bytes=linear_model_bytes[0]
    )
    with pytest.raises(Exception, match="two checkers approved"):
        endpoint_deploy(submission=waiting, kind=EndpointKind.HE, by=author)
    assert not Endpoint.objects.exists()


def test_a_non_linear_model_is_refused_for_he(cancer):
    forest = skops.io.dumps(RandomForestClassifier(n_estimators=3, random_state=0).fit(*cancer))
    submission, author = _approved(forest)
    with pytest.raises(Exception, match="(?i)linear|support|cannot"):
        endpoint_deploy(submission=submission, kind=EndpointKind.HE, by=author)
    assert not Endpoint.objects.exists()


def test_he_predictions_over_http_match_plaintext(
    live_server, linear_model_bytes, cancer, tmp_path
):
    data, model = linear_model_bytes
    submission, author = _approved(data)
    partner = factories.create_user(role=Role.RESEARCHER)
    endpoint = endpoint_deploy(submission=submission, kind=EndpointKind.HE, by=author)
    admin = factories.create_user(role=Role.TRE_ADMIN)
    endpoint_caller_grant(endpoint=endpoint, caller=partner, by=admin, reason="Partner study 7.")
    base = f"{live_server.url}/api/v1/endpoints/{endpoint.pk}/he/"
    keys = tmp_path / "partner.key"
    he_client.generate_keys(keys)
    tre = he_client.HEClient(f"{base}info", f"{base}evaluate", _token(partner), keys)
    X, _ = cancer
    result = tre.predict(X)
    assert np.array_equal(result.labels, model.predict(X))
    logits = model.decision_function(X)
    assert np.max(np.abs(result.outputs.ravel() - logits)) < 1e-3
    endpoint.refresh_from_db()
    assert endpoint.n_calls >= 1 and endpoint.n_bytes_in > 0
    calls = AuditEntry.objects.filter(action="endpoint:evaluate")
    assert calls.count() == endpoint.n_calls
    assert all(str(X[0][0]) not in e.reason for e in calls)  # size and caller, never data


def test_he_endpoint_refuses_strangers_and_stopped_endpoints(
    live_server, linear_model_bytes, tmp_path
):
    submission, author = _approved(linear_model_bytes[0])
    endpoint = endpoint_deploy(submission=submission, kind=EndpointKind.HE, by=author)
    base = f"{live_server.url}/api/v1/endpoints/{endpoint.pk}/he/"
    stranger = factories.create_user(role=Role.RESEARCHER)
    with pytest.raises(HEError, match="404"):
        he_client.fetch_model_info(f"{base}info", _token(stranger))
    endpoint_stop(endpoint=endpoint, by=author)
    with pytest.raises(HEError, match="400.*stopped"):
        he_client.fetch_model_info(f"{base}info", _token(author))


def test_he_evaluate_refuses_garbage_and_oversized_bodies(live_server, linear_model_bytes):
    import requests

    submission, author = _approved(linear_model_bytes[0])
    endpoint = endpoint_deploy(submission=submission, kind=EndpointKind.HE, by=author)
    url = f"{live_server.url}/api/v1/endpoints/{endpoint.pk}/he/evaluate"
    headers = {"Authorization": f"Token {_token(author)}"}
    answer = requests.post(url, data=os.urandom(5000), headers=headers, timeout=120)
    assert answer.status_code == 400 and answer.json()["detail"].endswith(".")
    headers["Content-Length"] = str(10**12)
    answer = requests.post(url, data=b"x", headers=headers, timeout=120)
    assert answer.status_code in (400, 413)


def test_enclave_predictions_over_http_after_attestation(
    live_server, enclave_dirs, linear_model_bytes, cancer
):
    data, model = linear_model_bytes
    submission, author = _approved(data)
    endpoint = endpoint_deploy(submission=submission, kind=EndpointKind.ENCLAVE, by=author)
    try:
        url = f"{live_server.url}/api/v1/endpoints/{endpoint.pk}"
        root = (enclave_dirs.TRE_AUDIT_ENCLAVE_ROOT / ROOT_CERT_FILE).read_bytes()
        from cryptography import x509

        trusted = [x509.load_pem_x509_certificate(root)]
        X = cancer[0][:50]
        with pytest.raises(AttestationError, match="(?i)simulated"):
            enclave_predict(
                url,
                token=_token(author),
                rows=X,
                trusted_roots=trusted,
                expected_model_sha256=endpoint.model_sha256,
            )
        with pytest.raises(AttestationError):
            enclave_predict(
                url,
                token=_token(author),
                rows=X,
                trusted_roots=trusted,
                accept_simulated=True,
                expected_model_sha256="0" * 64,
            )
        result = enclave_predict(
            url,
            token=_token(author),
            rows=X,
            trusted_roots=trusted,
            accept_simulated=True,
            expected_model_sha256=endpoint.model_sha256,
        )
        assert np.array_equal(np.asarray(result.predictions), model.predict(X))
        assert AuditEntry.objects.filter(action="endpoint:run").count() == 1
    finally:
        endpoint_stop(endpoint=endpoint, by=author)
    endpoint.refresh_from_db()
    assert endpoint.status == EndpointStatus.STOPPED
    assert _gone(endpoint.pid) and not os.path.exists(endpoint.socket_path)


def _gone(pid: int) -> bool:
    import time

    for _ in range(600):  # a minute: the machine may be loaded
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_endpoint_only_release_bundle_never_holds_the_weights(linear_model_bytes):
    import zipfile

    submission, author = _approved(linear_model_bytes[0])
    from tre_audit.reviews.services import submission_release

    submission = submission_release(submission=submission, by=author)
    from tre_audit.submissions.services import file_read

    names = zipfile.ZipFile(io.BytesIO(file_read(stored=submission.release_bundle))).namelist()
    assert not any(n.startswith("model/") for n in names)
    endpoint = endpoint_deploy(submission=submission, kind=EndpointKind.HE, by=author)
    assert endpoint.status == EndpointStatus.RUNNING  # the endpoint is the way out


def test_admins_see_running_endpoints_and_can_stop_them(client, linear_model_bytes):
    submission, author = _approved(linear_model_bytes[0])
    endpoint = endpoint_deploy(submission=submission, kind=EndpointKind.HE, by=author)
    admin = factories.create_user(role=Role.TRE_ADMIN)
    client.force_login(admin)
    page = client.get("/dashboard/").content.decode()
    assert f"Stop endpoint #{endpoint.pk}" in page
    response = client.post(f"/endpoints/{endpoint.pk}/stop/", {"next": "/dashboard/"})
    assert response.status_code == 302 and response["Location"] == "/dashboard/"
    endpoint.refresh_from_db()
    assert endpoint.status == EndpointStatus.STOPPED
    assert "No endpoint is running." in client.get("/dashboard/").content.decode()
    assert AuditEntry.objects.filter(action="endpoint:stop", actor=admin).count() == 1


@pytest.mark.parametrize(
    "who, deploy_code, stop_code",
    [("author", 302, 302), ("stranger", 404, 404), ("checker", 403, 404), ("anonymous", 302, 302)],
)
def test_who_may_deploy_and_stop_from_the_web(
    client, linear_model_bytes, who, deploy_code, stop_code
):
    submission, author = _approved(linear_model_bytes[0])
    endpoint = endpoint_deploy(submission=submission, kind=EndpointKind.HE, by=author)
    users = {
        "author": author,
        "stranger": factories.create_user(role=Role.RESEARCHER),
        "checker": factories.create_user(role=Role.CHECKER),
    }
    if who in users:
        client.force_login(users[who])
    deploy = client.post(f"/endpoints/requests/{submission.pk}/deploy/", {"kind": "he"})
    stop = client.post(f"/endpoints/{endpoint.pk}/stop/")
    assert (deploy.status_code, stop.status_code) == (deploy_code, stop_code)
    expected = 2 if who == "author" else 1
    assert Endpoint.objects.filter(submission=submission).count() == expected
    endpoint.refresh_from_db()
    assert (endpoint.status == EndpointStatus.STOPPED) == (who == "author")


def test_enclaves_stop_with_the_service(enclave_dirs, linear_model_bytes):
    from tre_audit.serving.services import enclave_endpoints_stop_all

    submission, author = _approved(linear_model_bytes[0])
    enclave = endpoint_deploy(submission=submission, kind=EndpointKind.ENCLAVE, by=author)
    he_endpoint = endpoint_deploy(submission=submission, kind=EndpointKind.HE, by=author)
    assert enclave_endpoints_stop_all(reason="the service was stopped") == 1
    enclave.refresh_from_db()
    he_endpoint.refresh_from_db()
    assert enclave.status == EndpointStatus.STOPPED and _gone(enclave.pid)
    assert he_endpoint.status == EndpointStatus.RUNNING  # stateless: nothing to stop
    entry = AuditEntry.objects.get(action="endpoint:stop")
    assert entry.actor is None and "service was stopped" in entry.reason


def test_a_spent_budget_answers_429_with_retry_after_on_he_and_enclave(
    live_server, enclave_dirs, linear_model_bytes, cancer, tmp_path
):
    import requests
    from cryptography import x509

    budget_set(max_calls=1)
    submission, author = _approved(linear_model_bytes[0])
    he_endpoint = endpoint_deploy(submission=submission, kind=EndpointKind.HE, by=author)
    base = f"{live_server.url}/api/v1/endpoints/{he_endpoint.pk}/he/"
    keys = tmp_path / "partner.key"
    he_client.generate_keys(keys)
    token = _token(author)
    tre = he_client.HEClient(f"{base}info", f"{base}evaluate", token, keys)
    assert len(tre.predict(cancer[0][:5]).labels) == 5
    with pytest.raises(HEError, match="^Your 1 calls to this model for today are spent"):
        tre.predict(cancer[0][:5])
    body = he.join_request_body(
        he.public_context_bytes(tre.context), he.encrypt(tre.context, cancer[0][:5])
    )
    answer = requests.post(
        f"{base}evaluate", data=body, headers={"Authorization": f"Token {token}"}, timeout=60
    )
    assert answer.status_code == 429 and 1 <= int(answer.headers["Retry-After"]) <= 86400
    assert answer.json()["detail"].endswith("The budget renews at midnight UTC.")
    enclave = endpoint_deploy(submission=submission, kind=EndpointKind.ENCLAVE, by=author)
    try:  # the budget is the caller's on this request: the enclave finds it spent too
        root = (enclave_dirs.TRE_AUDIT_ENCLAVE_ROOT / ROOT_CERT_FILE).read_bytes()
        with pytest.raises(EnclaveError, match="^Your 1 calls to this model for today"):
            enclave_predict(
                f"{live_server.url}/api/v1/endpoints/{enclave.pk}",
                token=token,
                rows=cancer[0][:5],
                trusted_roots=[x509.load_pem_x509_certificate(root)],
                accept_simulated=True,
                expected_model_sha256=enclave.model_sha256,
            )
    finally:
        endpoint_stop(endpoint=enclave, by=author)


def test_admins_grant_callers_from_the_dashboard_and_others_cannot(client, linear_model_bytes):
    submission, author = _approved(linear_model_bytes[0])
    endpoint = endpoint_deploy(submission=submission, kind=EndpointKind.HE, by=author)
    partner = factories.create_user(role=Role.RESEARCHER)
    form = {"username": partner.username, "reason": "Study 9.", "action": "grant"}
    client.force_login(author)
    assert client.post(f"/endpoints/{endpoint.pk}/callers/", form).status_code == 403
    assert not endpoint.callers.exists()
    admin = factories.create_user(role=Role.TRE_ADMIN)
    client.force_login(admin)
    dashboard = client.get("/dashboard/").content.decode()
    assert f'action="/endpoints/{endpoint.pk}/callers/"' in dashboard
    assert client.post(f"/endpoints/{endpoint.pk}/callers/", form).status_code == 302
    assert list(endpoint.callers.all()) == [partner]
    assert partner.username in client.get("/dashboard/").content.decode()
    entry = AuditEntry.objects.get(action="endpoint:grant")
    assert entry.actor == admin and "Study 9." in entry.reason


def test_checkers_see_the_extraction_rule_where_they_decide(client):
    submission = factories.create_audited_submission(Status.AWAITING_REVIEW)
    client.force_login(factories.create_user(role=Role.CHECKER))
    page = client.get(submission.get_absolute_url()).content.decode()
    review_form = page[page.index('id="review-h"') :]
    assert "n_features + 1 rows" in review_form[: review_form.index("Submit review")]
