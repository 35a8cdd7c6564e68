"""Serving services: deploy bound to the review, admin-granted callers, query budgets,
and endpoints that never claim to run without their process (real enclave hosts)."""

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db import connection

from secure_compute import he
from secure_compute.attestation import ROOT_CERT_FILE, ROOT_KEY_FILE
from secure_compute.enclave_client import nonce_new, verify_and_seal
from secure_compute.enclave_host import host_pid_is_ours
from secure_compute.exceptions import EnclaveError, EnclaveUnavailable
from tests import factories
from tests.tre_audit.serving.helpers import approved, budget_set
from tre_audit.reviews.enums import ReleaseCondition, Role
from tre_audit.reviews.services import pending_sign_offs, review_sign_off
from tre_audit.serving.enums import EndpointKind, EndpointStatus
from tre_audit.serving.exceptions import BudgetSpent, ServingError, ServingNotAllowed
from tre_audit.serving.models import CallerUsage, Endpoint
from tre_audit.serving.services import (
    budget_reserve,
    check_user_can_call,
    enclave_attest,
    enclave_run,
    endpoint_caller_grant,
    endpoint_caller_revoke,
    endpoint_deploy,
    endpoint_stop,
    endpoints_reconcile,
    he_evaluate,
    he_rows_charged,
)
from tre_audit.submissions.models import AuditEntry

NOON = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC)


def _he_body(rows, preset="fast") -> bytes:
    context = he.make_context(preset)
    return he.join_request_body(he.public_context_bytes(context), he.encrypt(context, rows))


# --------------------------------------------------------------------------- the review decides


@pytest.mark.django_db
def test_an_approval_awaiting_the_admins_sign_off_cannot_be_deployed(linear_model_bytes):
    submission, author = approved(linear_model_bytes[0], risk="high")
    assert pending_sign_offs(submission)
    with pytest.raises(ServingError, match="^A high-risk approval still waits for a TRE admin"):
        endpoint_deploy(submission=submission, kind=EndpointKind.HE, by=author)
    assert not Endpoint.objects.exists()
    admin = factories.create_user(role=Role.TRE_ADMIN)
    for review in pending_sign_offs(submission):
        review_sign_off(review=review, admin=admin, reason="Endpoint only, budgeted.")
    endpoint = endpoint_deploy(submission=submission, kind=EndpointKind.HE, by=author)
    assert endpoint.status == EndpointStatus.RUNNING


@pytest.mark.django_db
def test_an_endpoint_of_an_approval_awaiting_sign_off_cannot_be_called(linear_model_bytes):
    submission, author = approved(linear_model_bytes[0], risk="high")
    # a row as deployments before this rule left them: running, sign-off still pending
    legacy = Endpoint.objects.create(
        submission=submission,
        kind=EndpointKind.HE,
        status=EndpointStatus.RUNNING,
        model_sha256="0" * 64,
        created_by=author,
    )
    with pytest.raises(ServingError, match="waits for a TRE admin's sign-off"):
        check_user_can_call(author, legacy)


@pytest.mark.django_db
def test_an_endpoint_only_approval_is_deployed_by_its_author_who_cannot_add_callers(
    linear_model_bytes,
):
    submission, author = approved(linear_model_bytes[0], condition=ReleaseCondition.ENDPOINT_ONLY)
    partner = factories.create_user(role=Role.RESEARCHER)
    with pytest.raises(ServingNotAllowed, match="Only a TRE admin can choose who may call"):
        endpoint_deploy(submission=submission, kind=EndpointKind.HE, by=author, callers=[partner])
    assert not Endpoint.objects.exists()
    endpoint = endpoint_deploy(submission=submission, kind=EndpointKind.HE, by=author)
    with pytest.raises(ServingNotAllowed):
        endpoint_caller_grant(endpoint=endpoint, caller=partner, by=author, reason="my partner")
    with pytest.raises(ServingNotAllowed, match="^There is no endpoint with that number"):
        check_user_can_call(partner, endpoint)
    check_user_can_call(author, endpoint)  # the author may call their own endpoint


@pytest.mark.django_db
def test_an_admin_grant_is_logged_with_the_admin_and_reason_and_can_be_revoked(
    linear_model_bytes,
):
    submission, author = approved(linear_model_bytes[0])
    endpoint = endpoint_deploy(submission=submission, kind=EndpointKind.HE, by=author)
    admin = factories.create_user(role=Role.TRE_ADMIN)
    partner = factories.create_user(role=Role.RESEARCHER)
    with pytest.raises(ServingError, match="Say why"):
        endpoint_caller_grant(endpoint=endpoint, caller=partner, by=admin, reason="  ")
    endpoint_caller_grant(endpoint=endpoint, caller=partner, by=admin, reason="Data agreement 12.")
    check_user_can_call(partner, endpoint)
    entry = AuditEntry.objects.get(action="endpoint:grant")
    assert entry.actor == admin and "Data agreement 12." in entry.reason
    assert partner.get_username() in entry.reason
    endpoint_caller_revoke(endpoint=endpoint, caller=partner, by=admin, reason="Agreement ended.")
    with pytest.raises(ServingNotAllowed):
        check_user_can_call(partner, endpoint)
    assert AuditEntry.objects.get(action="endpoint:revoke").actor == admin


@pytest.mark.django_db
def test_a_user_with_no_role_is_refused_like_a_stranger(linear_model_bytes):
    submission, author = approved(linear_model_bytes[0])
    endpoint = endpoint_deploy(submission=submission, kind=EndpointKind.HE, by=author)
    admin = factories.create_user(role=Role.TRE_ADMIN)
    nobody = factories.create_user()
    with pytest.raises(ServingError, match="has no role here"):
        endpoint_caller_grant(endpoint=endpoint, caller=nobody, by=admin, reason="asked nicely")
    partner = factories.create_user(role=Role.RESEARCHER)
    endpoint_caller_grant(endpoint=endpoint, caller=partner, by=admin, reason="Study 3.")
    partner.groups.clear()  # role withdrawn after the grant
    for user in (nobody, partner, factories.create_user(role=Role.CHECKER)):
        with pytest.raises(ServingNotAllowed, match="^There is no endpoint with that number"):
            check_user_can_call(user, endpoint)


@pytest.mark.django_db
def test_a_deploy_naming_a_caller_with_no_role_is_refused_before_anything_starts(
    linear_model_bytes,
):
    submission, _ = approved(linear_model_bytes[0])
    admin = factories.create_user(role=Role.TRE_ADMIN)
    partner, nobody = factories.create_user(role=Role.RESEARCHER), factories.create_user()
    with pytest.raises(ServingError, match="has no role here"):
        endpoint_deploy(
            submission=submission,
            kind=EndpointKind.HE,
            by=admin,
            callers=[partner, nobody],
            reason="Study 3.",
        )
    assert not Endpoint.objects.exists()
    assert not AuditEntry.objects.filter(action__startswith="endpoint:").exists()


# --------------------------------------------------------------------------- query budget


@pytest.mark.django_db
def test_the_calls_budget_is_spent_then_renews_at_midnight_utc(linear_model_bytes):
    budget_set(max_calls=2)
    submission, author = approved(linear_model_bytes[0])
    endpoint = endpoint_deploy(submission=submission, kind=EndpointKind.HE, by=author)
    for _ in range(2):
        budget_reserve(endpoint=endpoint, user=author, n_rows=10, now=NOON)
    with pytest.raises(BudgetSpent, match="^Your 2 calls to this model for today are spent") as e:
        budget_reserve(endpoint=endpoint, user=author, n_rows=10, now=NOON)
    assert e.value.retry_after == 12 * 3600
    late = NOON.replace(hour=23, minute=59, second=59)
    with pytest.raises(BudgetSpent) as e:
        budget_reserve(endpoint=endpoint, user=author, n_rows=10, now=late)
    assert e.value.retry_after == 1
    budget_reserve(endpoint=endpoint, user=author, n_rows=10, now=late + dt.timedelta(seconds=1))
    assert CallerUsage.objects.get(day=NOON.date()).n_calls == 2


@pytest.mark.django_db
def test_the_rows_budget_is_charged_whole_ciphertexts_for_he(linear_model_bytes, cancer):
    slots = he.PRESETS["fast"].slots
    budget_set(max_rows=2 * slots)
    submission, author = approved(linear_model_bytes[0])
    endpoint = endpoint_deploy(
        submission=submission, kind=EndpointKind.HE, by=author, preset="fast"
    )
    body = _he_body(cancer[0][:3])
    assert he_rows_charged(he.split_request_body(body)[1]) == slots  # 3 rows fill no less
    for _ in range(2):
        assert he_evaluate(endpoint=endpoint, user=author, body=body, now=NOON)
    with pytest.raises(BudgetSpent, match=f"Your {2 * slots} rows for today are spent"):
        he_evaluate(endpoint=endpoint, user=author, body=body, now=NOON)
    usage = CallerUsage.objects.get()
    assert (usage.n_calls, usage.n_rows) == (2, 2 * slots)
    assert f"{slots} rows" in AuditEntry.objects.filter(action="endpoint:evaluate").first().reason


@pytest.mark.django_db(transaction=True)
def test_concurrent_calls_never_overspend_the_budget(linear_model_bytes):
    budget_set(max_calls=20, max_rows=50)
    submission, author = approved(linear_model_bytes[0])
    endpoint = endpoint_deploy(submission=submission, kind=EndpointKind.HE, by=author)
    outcomes = []

    def caller():
        try:
            for _ in range(5):
                try:
                    budget_reserve(endpoint=endpoint, user=author, n_rows=3, now=NOON)
                    outcomes.append("counted")
                except BudgetSpent:
                    outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(outcomes) == 40
    usage = CallerUsage.objects.get()
    # 50 rows allow 16 calls of 3: exactly those are counted, never one more
    assert outcomes.count("counted") == 16 == usage.n_calls
    assert usage.n_rows == 48


# --------------------------------------------------------------------------- enclave endpoints


def _enclave(linear_model_bytes):
    submission, author = approved(linear_model_bytes[0])
    return endpoint_deploy(submission=submission, kind=EndpointKind.ENCLAVE, by=author), author


def _sealed(endpoint, user, rows, settings):
    nonce = nonce_new()
    root = (settings.TRE_AUDIT_ENCLAVE_ROOT / ROOT_CERT_FILE).read_bytes()
    from cryptography import x509

    return verify_and_seal(
        enclave_attest(endpoint=endpoint, user=user, nonce=nonce),
        expected_model_sha256=endpoint.model_sha256,
        nonce=nonce,
        rows=rows,
        trusted_roots=[x509.load_pem_x509_certificate(root)],
        accept_simulated=True,
    )


def _wait_gone(endpoint) -> None:
    """Wait for the host we started to end (the test process is its parent), and reap it."""
    with contextlib.suppress(ChildProcessError):  # the service may have reaped it already
        os.waitpid(endpoint.pid, 0)
    assert not host_pid_is_ours(endpoint.pid, endpoint.socket_path)


@pytest.mark.django_db(transaction=True)
def test_enclave_rows_are_counted_by_the_enclave_and_replays_refused(
    enclave_dirs, linear_model_bytes, cancer
):
    budget_set(max_rows=50)
    endpoint, author = _enclave(linear_model_bytes)
    try:
        with pytest.raises(BudgetSpent, match="holds 60 rows, more than the 50"):
            enclave_run(
                endpoint=endpoint,
                user=author,
                sealed=_sealed(endpoint, author, cancer[0][:60], enclave_dirs).sealed,
            )
        assert CallerUsage.objects.values_list("n_calls", "n_rows").get() == (1, 0)
        pending = _sealed(endpoint, author, cancer[0][:40], enclave_dirs)
        assert enclave_run(endpoint=endpoint, user=author, sealed=pending.sealed)
        assert CallerUsage.objects.values_list("n_calls", "n_rows").get() == (2, 40)
        with pytest.raises(EnclaveError, match="^This sealed request was already answered"):
            enclave_run(endpoint=endpoint, user=author, sealed=pending.sealed)
        assert CallerUsage.objects.get().n_rows == 40  # a refused replay spends no rows
        assert "40 rows" in AuditEntry.objects.get(action="endpoint:run").reason
    finally:
        endpoint_stop(endpoint=endpoint, by=author)


@pytest.mark.django_db(transaction=True)
def test_a_killed_enclave_host_fails_its_endpoint_on_the_next_call(
    enclave_dirs, linear_model_bytes
):
    endpoint, author = _enclave(linear_model_bytes)
    os.kill(endpoint.pid, signal.SIGKILL)
    _wait_gone(endpoint)
    with pytest.raises(EnclaveUnavailable):
        enclave_attest(endpoint=endpoint, user=author, nonce=nonce_new())
    endpoint.refresh_from_db()
    assert endpoint.status == EndpointStatus.FAILED
    assert endpoint.failure_reason == "The enclave host is not running."
    assert AuditEntry.objects.filter(action="endpoint:failed").count() == 1
    with pytest.raises(ServingError, match="^This endpoint has failed: The enclave host"):
        enclave_attest(endpoint=endpoint, user=author, nonce=nonce_new())


@pytest.mark.django_db(transaction=True)
def test_a_crashed_enclave_fails_its_endpoint_and_its_host_exits(enclave_dirs, linear_model_bytes):
    endpoint, author = _enclave(linear_model_bytes)
    children = Path(f"/proc/{endpoint.pid}/task/{endpoint.pid}/children").read_text().split()
    os.kill(int(children[0]), signal.SIGSEGV)  # as the crafted partner row did
    with pytest.raises(EnclaveUnavailable):
        enclave_attest(endpoint=endpoint, user=author, nonce=nonce_new())
    endpoint.refresh_from_db()
    assert endpoint.status == EndpointStatus.FAILED and endpoint.failure_reason
    _wait_gone(endpoint)  # returns: the host ended with its enclave


@pytest.mark.django_db(transaction=True)
def test_reconcile_marks_endpoints_whose_host_died_failed(enclave_dirs, linear_model_bytes):
    endpoint, author = _enclave(linear_model_bytes)
    alive, _ = _enclave(linear_model_bytes)
    try:
        os.kill(endpoint.pid, signal.SIGKILL)
        _wait_gone(endpoint)
        assert endpoints_reconcile() == 1
        endpoint.refresh_from_db()
        alive.refresh_from_db()
        assert endpoint.status == EndpointStatus.FAILED
        assert endpoint.failure_reason == (
            f"Its enclave host (process {endpoint.pid}) is no longer running."
        )
        assert alive.status == EndpointStatus.RUNNING  # its host is proven ours and alive
    finally:
        endpoint_stop(endpoint=alive, by=None)


@pytest.mark.django_db(transaction=True)
def test_reconcile_and_stop_never_signal_a_process_that_reused_the_pid(
    enclave_dirs, linear_model_bytes
):
    endpoint, author = _enclave(linear_model_bytes)
    os.kill(endpoint.pid, signal.SIGKILL)
    _wait_gone(endpoint)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        Endpoint.objects.filter(pk=endpoint.pk).update(pid=stranger.pid)  # the PID came back
        endpoint.refresh_from_db()
        endpoint_stop(endpoint=endpoint, by=author)
        assert stranger.poll() is None
        Endpoint.objects.filter(pk=endpoint.pk).update(status=EndpointStatus.RUNNING)
        assert endpoints_reconcile() == 1
        assert stranger.poll() is None  # still running: it was never ours to kill
        assert Endpoint.objects.get(pk=endpoint.pk).status == EndpointStatus.FAILED
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.django_db(transaction=True)
def test_a_failed_deploy_leaves_a_failed_endpoint_with_its_reason_and_no_process(
    enclave_dirs, linear_model_bytes
):
    root = enclave_dirs.TRE_AUDIT_ENCLAVE_ROOT
    from secure_compute.attestation import simulated_root_create, simulated_root_save

    simulated_root_save(simulated_root_create(), root)
    (root / ROOT_KEY_FILE).chmod(0o644)  # as a careless copy would leave it
    submission, author = approved(linear_model_bytes[0])
    with pytest.raises(ServingError, match="must be private") as refusal:
        endpoint_deploy(submission=submission, kind=EndpointKind.ENCLAVE, by=author)
    endpoint = Endpoint.objects.get()
    assert endpoint.status == EndpointStatus.FAILED and endpoint.pid is None
    assert endpoint.failure_reason == str(refusal.value)
    assert AuditEntry.objects.filter(action="endpoint:failed").count() == 1
    assert not AuditEntry.objects.filter(action="endpoint:deploy").exists()
    socket = str(enclave_dirs.TRE_AUDIT_ENCLAVE_SOCKETS / f"{endpoint.pk}.sock").encode()
    assert not [p for p in Path("/proc").glob("[0-9]*") if socket in _cmdline(p)]


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.django_db(transaction=True)
def test_the_enclave_host_gets_an_allowlisted_environment(
    enclave_dirs, linear_model_bytes, monkeypatch
):
    monkeypatch.setenv("TRE_AUDIT_TEST_WEB_SECRET", "do-not-inherit")
    monkeypatch.setenv("PYTHONSTARTUP", "/nonexistent")
    endpoint, author = _enclave(linear_model_bytes)
    try:
        names = {
            line.split(b"=", 1)[0].decode()
            for line in Path(f"/proc/{endpoint.pid}/environ").read_bytes().split(b"\0")
            if line
        }
        assert "PATH" in names
        assert names <= {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"} | {
            "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "MKL_NUM_THREADS",
        }
    finally:
        endpoint_stop(endpoint=endpoint, by=author)


@pytest.mark.django_db
def test_an_endpoint_serving_another_model_than_the_approved_one_is_refused(linear_model_bytes):
    submission, author = approved(linear_model_bytes[0])
    endpoint = endpoint_deploy(submission=submission, kind=EndpointKind.HE, by=author)
    check_user_can_call(author, endpoint)
    endpoint.model_sha256 = "0" * 64  # as an endpoint of an earlier version's model
    with pytest.raises(ServingError, match="serves an earlier version's model"):
        check_user_can_call(author, endpoint)
