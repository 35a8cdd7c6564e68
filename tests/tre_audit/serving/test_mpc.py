"""MPC endpoints end to end: real owner and dealer host processes started by the service,
real HTTP (live server), the partner's real client in a process of its own."""

import datetime as dt
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import requests
import skops.io
from knox.models import AuthToken
from sklearn.ensemble import RandomForestClassifier

from secure_compute import mpc, mpc_client
from secure_compute.exceptions import MPCError, MPCUnavailable
from secure_compute.mpc_host import host_pid_is_ours
from secure_compute.mpc_transport import csr_create
from tests import factories
from tests.integration.conftest import wait_for
from tests.tre_audit.serving.helpers import approved, budget_set
from tre_audit.reviews.enums import Role
from tre_audit.serving.enums import EndpointKind, EndpointStatus, MpcSessionStatus
from tre_audit.serving.exceptions import ServingError
from tre_audit.serving.models import CallerUsage, Endpoint, MpcSession
from tre_audit.serving.services import (
    endpoint_caller_grant,
    endpoint_deploy,
    endpoint_stop,
    mpc_directory,
)
from tre_audit.submissions.models import AuditEntry

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def served(mpc_var, linear_model_bytes):
    """An MPC endpoint for an approved breast-cancer LR, a granted partner, and their token."""
    submission, author = approved(linear_model_bytes[0])
    endpoint = endpoint_deploy(submission=submission, kind=EndpointKind.MPC, by=author)
    partner = factories.create_user(role=Role.RESEARCHER)
    admin = factories.create_user(role=Role.TRE_ADMIN)
    endpoint_caller_grant(endpoint=endpoint, caller=partner, by=admin, reason="Partner study 9.")
    yield endpoint, author, partner, AuthToken.objects.create(user=partner)[1]
    endpoint.refresh_from_db()
    pids = [p for p in (endpoint.pid, endpoint.dealer_pid) if p]
    endpoint_stop(endpoint=endpoint, by=None, reason="the test ended")
    tls = mpc_directory(endpoint) / "tls"
    assert not [pid for pid in pids if host_pid_is_ours(pid, tls)], "a host was left behind"


def _hosts_gone(endpoint) -> bool:
    tls = mpc_directory(endpoint) / "tls"
    return not any(host_pid_is_ours(p, tls) for p in (endpoint.pid, endpoint.dealer_pid) if p)


def _open(live_server, endpoint, token, body):
    url = f"{live_server.url}/api/v1/endpoints/{endpoint.pk}/mpc/sessions"
    return requests.post(url, json=body, headers={"Authorization": f"Token {token}"}, timeout=60)


def test_mpc_predictions_match_plaintext_within_their_bounds_and_count_once(
    live_server, served, linear_model_bytes, cancer
):
    endpoint, author, partner, token = served
    _, model = linear_model_bytes
    X = cancer[0][:188]
    prediction = mpc_client.predict(live_server.url, token, endpoint.pk, X)
    assert np.array_equal(prediction.predictions, model.predict(X))
    plain = mpc.plaintext_logits(mpc.model_fold(model), X)
    assert np.all(np.abs(prediction.logits - plain) <= prediction.error_bounds[:, None])
    session = MpcSession.objects.get()
    assert session.status == MpcSessionStatus.DONE and session.n_rows == 188
    assert session.n_bytes > 0 and session.rounds > 0
    again = mpc_client.session_close(live_server.url, token, endpoint.pk, session.session)
    assert again == {
        "status": "done",
        "n_rows": 188,
        "bytes": session.n_bytes,
        "rounds": session.rounds,
        "error": "",
    }
    endpoint.refresh_from_db()
    assert (endpoint.n_calls, endpoint.n_bytes_in) == (1, session.n_bytes)
    calls = AuditEntry.objects.filter(action="endpoint:predict")
    assert [e.reason for e in calls] == [
        f"endpoint #{endpoint.pk}: {session.n_bytes} bytes, 188 rows from {partner.username}"
    ]
    opened = AuditEntry.objects.get(action="endpoint:mpc-open")
    assert "188 rows from" in opened.reason and str(X[0][0]) not in opened.reason
    info = requests.get(
        f"{live_server.url}/api/v1/endpoints/{endpoint.pk}/mpc/info",
        headers={"Authorization": f"Token {token}"},
        timeout=60,
    ).json()
    assert set(info) == {"architecture", "architecture_sha256", "precision_bits", "max_rows"}
    endpoint_stop(endpoint=endpoint, by=author)
    assert _hosts_gone(endpoint)


def test_refusals_budget_strangers_a_session_never_run_and_a_killed_dealer(
    live_server, served, cancer
):
    endpoint, _, partner, token = served
    stranger = AuthToken.objects.create(user=factories.create_user(role=Role.RESEARCHER))[1]
    _, csr = csr_create()
    with pytest.raises(MPCError, match="404"):
        mpc_client.model_info(live_server.url, stranger, endpoint.pk)
    assert (
        _open(live_server, endpoint, stranger, {"n_rows": 5, "csr": csr.decode()}).status_code
        == 404
    )
    for body in ({"n_rows": 0, "csr": csr.decode()}, {"n_rows": 5, "csr": "not a request"}):
        answer = _open(live_server, endpoint, token, body)
        assert answer.status_code == 400 and answer.json()["detail"].endswith(".")
    assert not MpcSession.objects.exists()

    # a session opened and never run is refunded, and can then never run
    opened = _open(live_server, endpoint, token, {"n_rows": 7, "csr": csr.decode()})
    assert opened.status_code == 201
    session = opened.json()["session"]
    summary = mpc_client.session_close(live_server.url, token, endpoint.pk, session)
    assert summary["status"] == "failed" and summary["error"] == "The session never ran."
    assert CallerUsage.objects.get(caller=partner).n_rows == 0
    assert AuditEntry.objects.filter(action="endpoint:mpc-failed").count() == 1

    budget_set(max_rows=5)
    with pytest.raises(MPCError, match="rows") as spent:
        mpc_client.predict(live_server.url, token, endpoint.pk, cancer[0][:10])
    assert "midnight UTC" in str(spent.value)
    answer = _open(live_server, endpoint, token, {"n_rows": 10, "csr": csr.decode()})
    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) > 0

    endpoint.refresh_from_db()
    os.killpg(endpoint.dealer_pid, signal.SIGKILL)
    wait_for(
        lambda: not host_pid_is_ours(endpoint.dealer_pid, mpc_directory(endpoint) / "tls"),
        what="the killed dealer host to exit",
        timeout=60,
    )
    with pytest.raises(MPCUnavailable, match=r"dealer host .* no longer running\.$"):
        mpc_client.predict(live_server.url, token, endpoint.pk, cancer[0][:3])
    endpoint.refresh_from_db()
    assert endpoint.status == EndpointStatus.FAILED
    assert _hosts_gone(endpoint)  # the owner's host was stopped with it


def test_a_model_mpc_cannot_serve_is_refused_in_one_sentence_with_no_endpoint(mpc_var, cancer):
    forest = skops.io.dumps(RandomForestClassifier(n_estimators=3, random_state=0).fit(*cancer))
    submission, author = approved(forest)
    with pytest.raises(ServingError) as refused:
        endpoint_deploy(submission=submission, kind=EndpointKind.MPC, by=author)
    assert str(refused.value).endswith(".") and "\n" not in str(refused.value)
    assert "RandomForest" in str(refused.value)
    assert not Endpoint.objects.exists()


def test_a_session_whose_process_died_is_settled_as_failed_once_it_is_overdue(live_server, served):
    """The owner host's session child is killed mid-session, before it can record how it
    went: the record says "running" until the session is overdue, then it is refunded."""
    from django.utils import timezone

    from secure_compute import mpc_transport as transport
    from tre_audit.serving.services import MPC_SESSION_LOST_AFTER, mpc_session_close

    endpoint, _, partner, token = served
    key, csr = csr_create()
    opened = _open(live_server, endpoint, token, {"n_rows": 3, "csr": csr.decode()}).json()
    info = mpc_client.model_info(live_server.url, token, endpoint.pk)
    ticket = mpc_client._ticket(opened, endpoint.pk, key, info)
    context = transport.tls_context(ticket.identity, ticket.ca_pem, server=False)
    expect = transport.PeerIdentity("owner", str(endpoint.pk))
    sock = transport.connect(ticket.owner, context, timeout=30, expect=expect, title="the owner")
    link = transport.Link(sock, transport.OWNER)
    link.send_object({"n_rows": 3, "architecture": ticket.architecture.sha256()})
    link.receive_object()  # the session's child is now waiting for CrypTen's seeds
    endpoint.refresh_from_db()
    children = Path(f"/proc/{endpoint.pid}/task/{endpoint.pid}/children").read_text().split()
    assert len(children) == 1
    os.kill(int(children[0]), signal.SIGKILL)
    link.close()
    now = timezone.now()
    assert (
        mpc_session_close(endpoint=endpoint, user=partner, session=ticket.session, now=now)[
            "status"
        ]
        == "running"
    )
    later = now + MPC_SESSION_LOST_AFTER + dt.timedelta(seconds=1)
    summary = mpc_session_close(endpoint=endpoint, user=partner, session=ticket.session, now=later)
    assert summary["status"] == "failed"
    assert summary["error"] == "The session's process ended without a record."
    assert CallerUsage.objects.get(caller=partner).n_rows == 0
    assert MpcSession.objects.get(session=ticket.session).status == MpcSessionStatus.FAILED
