"""Deploy, call and stop secure endpoints for approved models.

Only a request two checkers approved, with every high-risk approval signed off
by a TRE admin, can be served. Who may call besides the author is a TRE admin's
decision (:func:`endpoint_caller_grant`), and every caller has a daily query
budget from the risk policy. Every deployment, grant, failure, stop and call is
written to the audit log: who, how many rows or bytes, never the data.

An endpoint never claims to run without its process: a deploy that fails leaves
a FAILED endpoint with the reason; a host found dead on a call or by
:func:`endpoints_reconcile` is marked FAILED, and a stored PID is signalled only
once it is proven to be that endpoint's host.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import math
import os
import secrets
import select
import signal
import subprocess
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from secure_compute import he, mpc, mpc_host
from secure_compute.attestation import (
    ROOT_CERT_FILE,
    simulated_root_create,
    simulated_root_save,
)
from secure_compute.enclave_host import (
    OP_ATTEST,
    host_call,
    host_command,
    host_environment,
    host_pid_is_ours,
    host_run,
)
from secure_compute.exceptions import (
    EnclaveGone,
    EnclaveUnavailable,
    HEError,
    MPCError,
    MPCUnavailable,
    RowLimitExceeded,
    UnsupportedModel,
)
from secure_compute.mpc_transport import (
    Identity,
    ca_create,
    csr_sign,
    identity_issue,
    identity_load,
    identity_save,
)
from secure_compute.presets import PRESETS
from secure_compute.sealing import MAX_ROWS as ENCLAVE_MAX_ROWS
from tre_audit.reviews.enums import Role
from tre_audit.reviews.exceptions import ReviewNotAllowed
from tre_audit.reviews.services import check_approval_signed_off
from tre_audit.serving.enums import EndpointKind, EndpointStatus, MpcSessionStatus
from tre_audit.serving.exceptions import BudgetSpent, ServingError, ServingNotAllowed
from tre_audit.serving.models import CallerUsage, Endpoint, MpcSession
from tre_audit.serving.selectors import he_unfit_reason
from tre_audit.submissions.enums import FileRole, Status
from tre_audit.submissions.models import StoredFile, Submission, SubmissionFile
from tre_audit.submissions.selectors import current_run, user_is_author_or_admin, user_roles
from tre_audit.submissions.services import (
    audit_entry_append,
    file_path,
    file_read,
    policy_current,
)

#: Requests whose model two checkers approved (released or not yet).
SERVABLE = {Status.APPROVED, Status.RELEASED}

#: Endpoints that hold (or are about to hold) a process.
LIVE = {EndpointStatus.STARTING, EndpointStatus.RUNNING}

#: Endpoint kinds whose hosts are processes of their own.
HOSTED = {EndpointKind.ENCLAVE, EndpointKind.MPC}

#: Seconds a host may take to say it is ready (an MPC host imports CrypTen first).
HOST_START_SECONDS = 120

#: A session still "running" this long after it opened lost its process (the host kills
#: a session past its deadline): it is settled as failed and its rows refunded.
MPC_SESSION_LOST_AFTER = dt.timedelta(seconds=mpc_host.SESSION_SECONDS + 60)

#: Compare-and-swap attempts to count one call before giving up under contention.
BUDGET_ATTEMPTS = 100

_NOT_YOURS = "There is no endpoint with that number you can use."
_NOT_RUNNING = {
    EndpointStatus.STARTING: "This endpoint is still starting.",
    EndpointStatus.STOPPED: "This endpoint has been stopped.",
    EndpointStatus.FAILED: "This endpoint has failed: {reason}",
}


# --------------------------------------------------------------------------- who may do what


def check_servable(submission: Submission) -> None:
    """Raise ServingError unless the review lets ``submission``'s model be served now."""
    if submission.status not in SERVABLE:
        raise ServingError("Only a request two checkers approved can be served.")
    try:
        check_approval_signed_off(submission)
    except ReviewNotAllowed as exc:
        raise ServingError(str(exc)) from None


def check_user_can_deploy(user: AbstractBaseUser, submission: Submission) -> None:
    if not user_is_author_or_admin(user, submission):
        raise ServingNotAllowed("Only the author or a TRE admin can deploy an endpoint.")
    check_servable(submission)


def user_can_deploy(user: AbstractBaseUser, submission: Submission) -> bool:
    try:
        check_user_can_deploy(user, submission)
    except (ServingNotAllowed, ServingError):
        return False
    return True


def check_user_can_grant(user: AbstractBaseUser, reason: str) -> None:
    """Only a TRE admin chooses who may call an endpoint, and says why."""
    if Role.TRE_ADMIN not in user_roles(user):
        raise ServingNotAllowed("Only a TRE admin can choose who may call an endpoint.")
    if not reason.strip():
        raise ServingError("Say why these partners may call the endpoint.")


def check_user_can_call(user: AbstractBaseUser, endpoint: Endpoint) -> None:
    """The author, granted callers and admins, with a role, may send data; others see nothing."""
    allowed = bool(user_roles(user)) and (
        user_is_author_or_admin(user, endpoint.submission)
        or endpoint.callers.filter(pk=user.pk).exists()
    )
    if not allowed:
        raise ServingNotAllowed(_NOT_YOURS)
    if endpoint.status != EndpointStatus.RUNNING:
        raise ServingError(_NOT_RUNNING[endpoint.status].format(reason=endpoint.failure_reason))
    check_servable(endpoint.submission)  # e.g. withdrawn, or a new version since
    if _approved_model(endpoint.submission).sha256 != endpoint.model_sha256:
        raise ServingError("This endpoint serves an earlier version's model: deploy the new one.")


# --------------------------------------------------------------------------- deploy and grant


def endpoint_deploy(
    *,
    submission: Submission,
    kind: str,
    by: AbstractBaseUser,
    callers: list[AbstractBaseUser] = (),
    reason: str = "",
    preset: str = he.DEFAULT_PRESET,
) -> Endpoint:
    """Start serving the approved model of ``submission`` behind an HE or enclave endpoint.

    ``callers`` (a TRE admin only, with ``reason``) are granted as by
    :func:`endpoint_caller_grant`. An enclave that does not start leaves a
    FAILED endpoint with the reason, and no process; ServingError says why.
    """
    check_user_can_deploy(by, submission)
    if callers:
        check_user_can_grant(by, reason)
    for caller in callers:  # before anything starts: a refused caller must leave no endpoint
        _check_has_role(caller)
    if kind not in EndpointKind.values:
        raise ServingError(f"There is no endpoint kind called {kind}.")
    model = _approved_model(submission)
    if kind == EndpointKind.HE and (unfit := he_unfit_reason(submission=submission)):
        raise ServingError(unfit)  # as the audit's report names the model: no fold needed
    if kind == EndpointKind.HE:
        he_weights(model.sha256)  # refuses a model HE cannot serve, before anything is stored
    folded = mpc_fold(submission=submission) if kind == EndpointKind.MPC else None
    endpoint = Endpoint.objects.create(
        submission=submission,
        kind=kind,
        model_sha256=model.sha256,
        created_by=by,
        preset=preset if kind == EndpointKind.HE else "",
    )
    if kind == EndpointKind.ENCLAVE:
        _enclave_start(endpoint)  # raises ServingError once the endpoint is marked failed
    if kind == EndpointKind.MPC:
        _mpc_start(endpoint, folded)  # the same
    _endpoint_running(endpoint, by=by)
    for caller in callers:
        endpoint_caller_grant(endpoint=endpoint, caller=caller, by=by, reason=reason)
    return endpoint


def _check_has_role(caller: AbstractBaseUser) -> None:
    if not user_roles(caller):
        raise ServingError(
            f"{caller.get_username()} has no role here: give them one before they call endpoints."
        )


def _approved_model(submission: Submission) -> StoredFile:
    return _approved_model_file(submission).stored


def _approved_model_file(submission: Submission) -> SubmissionFile:
    return submission.files.select_related("stored").get(
        version=submission.version, role=FileRole.MODEL
    )


@transaction.atomic
def _endpoint_running(endpoint: Endpoint, *, by: AbstractBaseUser) -> None:
    endpoint.status = EndpointStatus.RUNNING
    endpoint.save(update_fields=["status"])
    audit_entry_append(
        submission=endpoint.submission,
        action="endpoint:deploy",
        by=by,
        reason=f"{endpoint.get_kind_display()} endpoint #{endpoint.pk}, "
        f"model {endpoint.model_sha256[:12]}",
    )


@transaction.atomic
def endpoint_caller_grant(
    *, endpoint: Endpoint, caller: AbstractBaseUser, by: AbstractBaseUser, reason: str
) -> Endpoint:
    """A TRE admin lets ``caller`` (who has a role) call ``endpoint``; logged with the reason."""
    check_user_can_grant(by, reason)
    _check_has_role(caller)
    endpoint.callers.add(caller)
    audit_entry_append(
        submission=endpoint.submission,
        action="endpoint:grant",
        by=by,
        reason=f"endpoint #{endpoint.pk}: {caller.get_username()} may call: {reason.strip()}",
    )
    return endpoint


@transaction.atomic
def endpoint_caller_revoke(
    *, endpoint: Endpoint, caller: AbstractBaseUser, by: AbstractBaseUser, reason: str
) -> Endpoint:
    """A TRE admin withdraws ``caller``'s right to call ``endpoint``; logged with the reason."""
    check_user_can_grant(by, reason)
    endpoint.callers.remove(caller)
    audit_entry_append(
        submission=endpoint.submission,
        action="endpoint:revoke",
        by=by,
        reason=f"endpoint #{endpoint.pk}: {caller.get_username()} may no longer call: "
        f"{reason.strip()}",
    )
    return endpoint


@functools.lru_cache(maxsize=32)
def he_weights(model_sha256: str) -> he.LinearWeights:
    """The model folded for HE in a sandbox process, once per process (files never change)."""
    data = file_read(stored=StoredFile.objects.get(sha256=model_sha256))
    try:
        return he.linear_model_fold_file(data)
    except UnsupportedModel as exc:
        raise ServingError(str(exc)) from None


def enclave_root_directory():
    """The local SIMULATED root that signs enclave documents, made on first use.

    Its key is 0600 in a 0700 directory; see docs/enclave.md for giving it its own user.
    """
    directory = settings.TRE_AUDIT_ENCLAVE_ROOT
    if not (directory / ROOT_CERT_FILE).exists():
        simulated_root_save(simulated_root_create(), directory)
    return directory


def _enclave_start(endpoint: Endpoint) -> None:
    """Start the endpoint's host and record it; on any failure mark the endpoint failed."""
    try:
        endpoint.socket_path, endpoint.pid = _enclave_host_spawn(endpoint)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, ServingError) else "The enclave host did not start."
        endpoint_fail(endpoint=endpoint, reason=reason)
        raise ServingError(reason) from None
    endpoint.save(update_fields=["socket_path", "pid"])


def _enclave_host_spawn(endpoint: Endpoint) -> tuple[str, int]:
    socket_dir = settings.TRE_AUDIT_ENCLAVE_SOCKETS
    socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    socket_path = socket_dir / f"{endpoint.pk}.sock"
    log = settings.VAR_DIR / "log" / f"enclave-{endpoint.pk}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = host_command(
        socket_path=socket_path,
        model_path=file_path(endpoint.model_sha256),
        root_directory=enclave_root_directory(),
    )
    pid, _ = _host_start(command, env=host_environment(), log=log, what="The enclave")
    return str(socket_path), pid


def _host_start(command: list[str], *, env: dict, log: Path, what: str) -> tuple[int, list]:
    """Start a host in its own session and wait for its ``ready`` line; its PID and the
    line's other words. A host that does not say it is ready is killed, and its last
    logged sentence is the ServingError."""
    with log.open("ab") as errors:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=errors,
            start_new_session=True,  # outlives the web process that deployed it
            env=env,
        )
    ready, _, _ = select.select([process.stdout], [], [], HOST_START_SECONDS)
    line = process.stdout.readline().split() if ready else []
    process.stdout.close()
    if line[:1] != [b"ready"]:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        problem = log.read_text(errors="replace").strip().splitlines()
        raise ServingError(_sentence(problem[-1] if problem else f"{what} did not start."))
    return process.pid, line[1:]


def _sentence(line: str) -> str:
    return line.removeprefix("error: ").strip()


# --------------------------------------------------------------------------- MPC hosts


def mpc_directory(endpoint: Endpoint) -> Path:
    """The endpoint's MPC folder: ``tls/`` (certificates) and ``model/`` (the folded model)."""
    return settings.VAR_DIR / "mpc" / str(endpoint.pk)


def mpc_ca() -> Identity:
    """The service's MPC certificate authority, made on first use (key 0600, folder 0700).

    Every certificate it signs names its endpoint (and a partner's its session),
    and the hosts accept only their own endpoint's peers.
    """
    directory = settings.VAR_DIR / "mpc" / "ca"
    if not (directory / "ca.pem").exists():
        directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        identity_save(ca_create(endpoint="service"), directory, "ca")
    return identity_load(directory, "ca")


def mpc_fold(*, submission: Submission) -> mpc.FoldedModel:
    """The approved model folded for secure inference, in a sandbox; ServingError if refused.

    An ONNX model's classes and output are the audit's, as it loaded the model.
    """
    model = _approved_model_file(submission)
    labels, output = None, "probabilities"
    if model.name.lower().endswith(".onnx"):
        run = current_run(submission)
        summary = ((run.report if run else None) or {}).get("model") or {}
        labels = summary.get("classes")
        output = (summary.get("declaration") or {}).get("output") or output
    try:
        return mpc.model_fold_file(
            file_read(stored=model.stored), filename=model.name, labels=labels, output=output
        )
    except MPCError as exc:
        raise ServingError(str(exc)) from None


def mpc_architecture(endpoint: Endpoint) -> mpc.Architecture:
    """The public layers the endpoint serves, as written at deploy (never its weights)."""
    path = mpc_directory(endpoint) / "model" / mpc_host.ARCHITECTURE_FILE
    return mpc.Architecture.from_json(json.loads(path.read_text()))


def _mpc_start(endpoint: Endpoint, folded: mpc.FoldedModel) -> None:
    """Write the endpoint's certificates and model, start the dealer, then the owner.

    Each PID is recorded as soon as its host is up, so a failure stops what started.
    """
    try:
        _mpc_files_write(endpoint, folded)
        dealer = settings.TRE_AUDIT_MPC_DEALER
        if not dealer:
            endpoint.dealer_pid, port = _mpc_host_spawn(endpoint, "dealer")
            dealer = _address(settings.TRE_AUDIT_MPC_HOST, port)
        endpoint.dealer_address = dealer
        endpoint.save(update_fields=["dealer_pid", "dealer_address"])
        endpoint.pid, port = _mpc_host_spawn(endpoint, "owner", dealer=dealer)
        endpoint.owner_address = _address(settings.TRE_AUDIT_MPC_HOST, port)
        endpoint.save(update_fields=["pid", "owner_address"])
    except Exception as exc:
        reason = str(exc) if isinstance(exc, ServingError) else "The MPC hosts did not start."
        endpoint_fail(endpoint=endpoint, reason=reason)
        raise ServingError(reason) from None


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _mpc_files_write(endpoint: Endpoint, folded: mpc.FoldedModel) -> None:
    directory = mpc_directory(endpoint)
    directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.mkdir(exist_ok=True, mode=0o700)
    ca, tls = mpc_ca(), directory / "tls"
    for role in ("owner", "dealer"):
        identity_save(identity_issue(ca, role=role, endpoint=str(endpoint.pk)), tls, role)
    (tls / "ca.pem").write_bytes(ca.cert_pem)
    mpc_host.weights_save(folded, directory / "model")


def _mpc_host_spawn(endpoint: Endpoint, role: str, *, dealer: str = "") -> tuple[int, int]:
    """Start one host in its own session; its PID and port once it prints ``ready <port>``."""
    directory = mpc_directory(endpoint)
    log = settings.VAR_DIR / "log" / f"mpc-{endpoint.pk}-{role}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = mpc_host.host_command(
        role,
        tls_dir=directory / "tls",
        endpoint=str(endpoint.pk),
        listen_at=_address(settings.TRE_AUDIT_MPC_HOST, 0),
        model_dir=directory / "model" if role == "owner" else None,
        dealer=dealer or None,
    )
    title = "The model owner's host" if role == "owner" else "The dealer host"
    pid, words = _host_start(command, env=mpc_host.host_environment(), log=log, what=title)
    if len(words) != 1 or not words[0].isdigit():
        _process_group_stop(pid)
        raise ServingError(f"{title} did not say which port it listens on.")
    return pid, int(words[0])


# --------------------------------------------------------------------------- stop, fail, reconcile


@transaction.atomic
def endpoint_stop(*, endpoint: Endpoint, by: AbstractBaseUser | None, reason: str = "") -> Endpoint:
    """Stop serving: the enclave host and its keys end; HE calls are refused from now on.

    ``by=None`` is the service itself (shutting down), logged as such.
    """
    if by is not None and not user_is_author_or_admin(by, endpoint.submission):
        raise ServingNotAllowed("Only the author or a TRE admin can stop an endpoint.")
    if endpoint.status in (EndpointStatus.STOPPED, EndpointStatus.FAILED):
        return endpoint
    _host_stop(endpoint)
    endpoint.status, endpoint.stopped_at = EndpointStatus.STOPPED, timezone.now()
    endpoint.save(update_fields=["status", "stopped_at"])
    audit_entry_append(
        submission=endpoint.submission,
        action="endpoint:stop",
        by=by,
        reason=f"endpoint #{endpoint.pk}" + (f": {reason}" if reason else ""),
    )
    return endpoint


@transaction.atomic
def endpoint_fail(*, endpoint: Endpoint, reason: str) -> Endpoint:
    """Mark a live endpoint FAILED with ``reason`` and stop its host if it is still ours."""
    locked = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
    if locked.status not in LIVE:
        return locked
    _host_stop(locked)
    locked.status, locked.stopped_at = EndpointStatus.FAILED, timezone.now()
    locked.failure_reason = reason[:500]
    locked.save(update_fields=["status", "stopped_at", "failure_reason"])
    audit_entry_append(
        submission=locked.submission,
        action="endpoint:failed",
        by=None,
        reason=f"endpoint #{locked.pk}: {reason}",
    )
    endpoint.status, endpoint.failure_reason = locked.status, locked.failure_reason
    return locked


def endpoints_reconcile() -> int:
    """Mark FAILED every live enclave or MPC endpoint whose host is gone; run at start-up.

    A stored PID counts only if it is still that endpoint's host
    (:func:`~secure_compute.enclave_host.host_pid_is_ours`,
    :func:`~secure_compute.mpc_host.host_pid_is_ours`): an unrelated process
    that reused it is left alone. Returns how many were marked.
    """
    failed = 0
    for endpoint in Endpoint.objects.filter(kind__in=HOSTED, status__in=LIVE):
        if not _host_alive(endpoint):
            endpoint_fail(endpoint=endpoint, reason=_host_missing(endpoint))
            failed += 1
    return failed


def _hosts(endpoint: Endpoint) -> list[tuple[int | None, str]]:
    """The endpoint's host processes and what each is called (an MPC endpoint has two,
    or one when the TRE runs the dealer elsewhere)."""
    if endpoint.kind != EndpointKind.MPC:
        return [(endpoint.pid, "enclave host")]
    hosts = [(endpoint.pid, "model owner's host")]
    if endpoint.dealer_pid or not endpoint.dealer_address:
        hosts.append((endpoint.dealer_pid, "dealer host"))
    return hosts


def _host_missing(endpoint: Endpoint) -> str:
    for pid, name in _hosts(endpoint):
        if pid is None:
            return f"Its deployment never finished: no {name} was recorded."
        if not _pid_is_ours(endpoint, pid):
            return f"Its {name} (process {pid}) is no longer running."
    return "Its host is no longer running."


def _pid_is_ours(endpoint: Endpoint, pid: int) -> bool:
    if endpoint.kind == EndpointKind.MPC:
        return mpc_host.host_pid_is_ours(pid, mpc_directory(endpoint) / "tls")
    return host_pid_is_ours(pid, endpoint.socket_path)


def _host_alive(endpoint: Endpoint) -> bool:
    return all(pid and _pid_is_ours(endpoint, pid) for pid, _ in _hosts(endpoint))


def _host_stop(endpoint: Endpoint) -> None:
    for pid, _ in _hosts(endpoint):
        if pid and _pid_is_ours(endpoint, pid):
            _process_group_stop(pid)
        elif pid:
            _reap(pid)


def _process_group_stop(pid: int, *, grace_seconds: float = 10.0) -> None:
    """SIGTERM the enclave host's group, SIGKILL it if it lingers; reap it if ours."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if not _process_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    _reap(pid)


def _process_alive(pid: int) -> bool:
    try:  # the deploying process is the host's parent: reap it, or it stays a zombie
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:  # deployed by another process: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def enclave_endpoints_stop_all(*, reason: str) -> int:
    """Stop every live enclave and MPC endpoint, starting ones too (their hosts end with
    the service)."""
    running = Endpoint.objects.filter(kind__in=HOSTED, status__in=LIVE)
    for endpoint in running:
        endpoint_stop(endpoint=endpoint, by=None, reason=reason)
    return len(running)


# --------------------------------------------------------------------------- calls


def he_model_info(*, endpoint: Endpoint, user: AbstractBaseUser) -> dict:
    """What a client needs to encrypt: feature names and order, preset; never weights."""
    check_user_can_call(user, endpoint)
    return he.model_info(he_weights(endpoint.model_sha256), preset=endpoint.preset)


def he_evaluate(
    *, endpoint: Endpoint, user: AbstractBaseUser, body: bytes, now: dt.datetime | None = None
) -> bytes:
    """Compute encrypted outputs for an encrypted request; counts and logs the call, not the data.

    The request is charged every slot of its ciphertexts: the server cannot see
    how many of them the client filled.
    """
    check_user_can_call(user, endpoint)
    public_context, request = he.split_request_body(body)
    n_rows = he_rows_charged(request)
    weights = he_weights(endpoint.model_sha256)  # a refused fold charges nothing
    usage, reserved = budget_reserve(endpoint=endpoint, user=user, n_rows=n_rows, now=now)
    try:
        response = he.evaluate(public_context, request, weights)
    except Exception:  # nothing was computed: the rows are not spent
        budget_refund(usage=usage, n_rows=reserved)
        raise
    _call_record(endpoint, user, len(body), n_rows, "he:evaluate")
    return response


def he_rows_charged(request: bytes) -> int:
    """Rows an HE request can carry: a whole ciphertext of slots per batch it declares."""
    from secure_compute import _he_wire as wire

    header, _ = wire.read_header(request, max_bytes=he.MAX_REQUEST_BYTES, what="request")
    preset = PRESETS.get(header.get("preset")) if isinstance(header.get("preset"), str) else None
    if preset is None:
        raise HEError("The request names no known HE preset.")
    n_rows = wire.check_int(header, "n_rows", 1, he.MAX_ROWS, "request")
    return math.ceil(n_rows / preset.slots) * preset.slots


def enclave_attest(*, endpoint: Endpoint, user: AbstractBaseUser, nonce: bytes) -> bytes:
    check_user_can_call(user, endpoint)
    return _host_answer(endpoint, lambda: host_call(endpoint.socket_path, OP_ATTEST, nonce))


def enclave_run(
    *, endpoint: Endpoint, user: AbstractBaseUser, sealed: bytes, now: dt.datetime | None = None
) -> bytes:
    """Forward a sealed request to the enclave; only the enclave can open it.

    The enclave is told how many rows the caller may still send and answers
    with how many it scored (a count, never data): unused rows are refunded.
    """
    check_user_can_call(user, endpoint)
    usage, reserved = budget_reserve(endpoint=endpoint, user=user, n_rows=None, now=now)
    try:
        response, n_rows = _host_answer(
            endpoint, lambda: host_run(endpoint.socket_path, sealed, max_rows=reserved)
        )
    except RowLimitExceeded as exc:
        budget_refund(usage=usage, n_rows=reserved)
        raise _spent(str(exc), now) from None
    except Exception:
        budget_refund(usage=usage, n_rows=reserved)
        raise
    budget_refund(usage=usage, n_rows=reserved - n_rows)
    _call_record(endpoint, user, len(sealed), n_rows, "enclave:run")
    return response


def _host_answer(endpoint: Endpoint, call):
    """Run one host call; a host found gone marks the endpoint failed before the 503."""
    try:
        return call()
    except EnclaveGone as exc:
        endpoint_fail(endpoint=endpoint, reason=str(exc))
        raise
    except EnclaveUnavailable:
        if not _host_alive(endpoint):
            endpoint_fail(endpoint=endpoint, reason=_host_missing(endpoint))
        raise


def mpc_model_info(*, endpoint: Endpoint, user: AbstractBaseUser) -> dict:
    """What a partner needs to take part: the public layers and precision; never weights."""
    check_user_can_call(user, endpoint)
    architecture = mpc_architecture(endpoint)
    return {
        "architecture": architecture.to_json(),
        "architecture_sha256": architecture.sha256(),
        "precision_bits": mpc.PRECISION_BITS,
        "max_rows": mpc.MAX_ROWS,
    }


def mpc_session_open(
    *,
    endpoint: Endpoint,
    user: AbstractBaseUser,
    n_rows: int,
    csr_pem: bytes,
    now: dt.datetime | None = None,
) -> dict:
    """Reserve ``n_rows`` of the caller's budget and certify their key for one session.

    The certificate names the endpoint, the session and its rows: the model
    owner's host runs that session once, on at most those rows. A host found
    dead marks the endpoint failed (MPCUnavailable, 503); a bad request is an
    MPCError and charges nothing.
    """
    check_user_can_call(user, endpoint)
    if not 1 <= n_rows <= mpc.MAX_ROWS:
        raise ServingError(f"A session takes 1 to {mpc.MAX_ROWS} rows, not {n_rows}.")
    _mpc_hosts_check(endpoint)
    session = secrets.token_hex(16)
    ca = mpc_ca()
    certificate = csr_sign(ca, csr_pem, endpoint=str(endpoint.pk), session=session, rows=n_rows)
    usage, _ = budget_reserve(endpoint=endpoint, user=user, n_rows=n_rows, now=now)
    with transaction.atomic():
        MpcSession.objects.create(
            endpoint=endpoint, caller=user, session=session, usage=usage, n_rows=n_rows
        )
        audit_entry_append(
            submission=endpoint.submission,
            action="endpoint:mpc-open",
            by=user,
            reason=f"endpoint #{endpoint.pk}: mpc session opened: {n_rows} rows "
            f"from {user.get_username()}",
        )
    return {
        "session": session,
        "owner": endpoint.owner_address,
        "dealer": endpoint.dealer_address,
        "ca": ca.cert_pem.decode(),
        "certificate": certificate.decode(),
        "architecture": mpc_architecture(endpoint).to_json(),
        "precision_bits": mpc.PRECISION_BITS,
    }


def _mpc_hosts_check(endpoint: Endpoint) -> None:
    if not _host_alive(endpoint):
        reason = _host_missing(endpoint)
        endpoint_fail(endpoint=endpoint, reason=reason)
        raise MPCUnavailable(f"This endpoint has failed: {reason}")


def mpc_session_close(
    *, endpoint: Endpoint, user: AbstractBaseUser, session: str, now: dt.datetime | None = None
) -> dict:
    """Settle a session from what the model owner's host recorded; idempotent.

    Done: the call is counted and logged once (rows, bytes the owner received),
    unused rows refunded. Failed, or never run (it then never can): every row
    is refunded and the failure logged. Still running: nothing changes yet.
    Only the session's caller may close it.
    """
    with transaction.atomic():
        row = (
            MpcSession.objects.select_for_update()
            .filter(endpoint=endpoint, caller=user, session=session)
            .first()
        )
        if row is None:
            raise ServingNotAllowed("There is no session with that name you opened.")
        if row.status != MpcSessionStatus.OPEN:
            return _mpc_session_summary(row, row.status)
        record = _mpc_session_settle(row, now=now or timezone.now())
    return _mpc_session_summary(row, record.get("status", "failed"))


def _mpc_session_settle(row: MpcSession, *, now: dt.datetime) -> dict:
    model_dir = mpc_directory(row.endpoint) / "model"
    record = mpc_host.session_record(model_dir, row.session) or mpc_host.session_void(
        model_dir, row.session
    )
    if record.get("status") == "running":
        if now - row.created_at <= MPC_SESSION_LOST_AFTER:
            return record
        record = {"status": "failed", "error": "The session's process ended without a record."}
    if record.get("status") == "done":
        n_rows = min(int(record.get("n_rows", row.n_rows)), row.n_rows)
        budget_refund(usage=row.usage, n_rows=row.n_rows - n_rows)
        row.status, row.n_rows = MpcSessionStatus.DONE, n_rows
        row.n_bytes, row.rounds = int(record["bytes_received"]), int(record["rounds"])
        _call_record(row.endpoint, row.caller, row.n_bytes, n_rows, "mpc:predict")
    else:
        budget_refund(usage=row.usage, n_rows=row.n_rows)
        row.status = MpcSessionStatus.FAILED
        row.error = str(record.get("error") or "The session failed.")[:500]
        audit_entry_append(
            submission=row.endpoint.submission,
            action="endpoint:mpc-failed",
            by=row.caller,
            reason=f"endpoint #{row.endpoint_id}: mpc session failed, {row.n_rows} rows "
            f"refunded to {row.caller.get_username()}: {row.error}",
        )
    row.finished_at = now
    row.save(update_fields=["status", "n_rows", "n_bytes", "rounds", "error", "finished_at"])
    return record


def _mpc_session_summary(row: MpcSession, status: str) -> dict:
    return {
        "status": status,
        "n_rows": row.n_rows,
        "bytes": row.n_bytes,
        "rounds": row.rounds,
        "error": row.error,
    }


def _call_record(
    endpoint: Endpoint, user: AbstractBaseUser, n_bytes: int, n_rows: int, action: str
) -> None:
    Endpoint.objects.filter(pk=endpoint.pk).update(
        n_calls=F("n_calls") + 1, n_bytes_in=F("n_bytes_in") + n_bytes
    )
    audit_entry_append(
        submission=endpoint.submission,
        action=f"endpoint:{action.split(':')[1]}",
        by=user,
        reason=f"endpoint #{endpoint.pk}: {n_bytes} bytes, {n_rows} rows "
        f"from {user.get_username()}",
    )


# --------------------------------------------------------------------------- query budget


def budget_reserve(
    *,
    endpoint: Endpoint,
    user: AbstractBaseUser,
    n_rows: int | None,
    now: dt.datetime | None = None,
) -> tuple[CallerUsage, int]:
    """Count one call and reserve its rows in today's budget of ``user`` for this request.

    ``n_rows=None`` (an enclave call, whose rows only the enclave sees) reserves
    as many as one request may hold, within what is left; refund the unused
    part with :func:`budget_refund`. The day is UTC, from ``now``. The count is a
    compare-and-swap UPDATE, so concurrent calls never overspend.

    Raises
    ------
    BudgetSpent
        If the calls or rows of the day are spent (the API answers 429).
    """
    now = now or timezone.now()
    policy = policy_current()
    max_calls = policy["serving", "max_calls_per_day"]
    max_rows = policy["serving", "max_rows_per_day"]
    usage, _ = CallerUsage.objects.get_or_create(
        submission=endpoint.submission, caller=user, day=now.astimezone(dt.UTC).date()
    )
    for _ in range(BUDGET_ATTEMPTS):
        spent = CallerUsage.objects.values_list("n_calls", "n_rows").get(pk=usage.pk)
        wanted = _budget_wanted(spent, n_rows, max_calls=max_calls, max_rows=max_rows, now=now)
        swapped = CallerUsage.objects.filter(pk=usage.pk, n_calls=spent[0], n_rows=spent[1]).update(
            n_calls=F("n_calls") + 1, n_rows=F("n_rows") + wanted
        )
        if swapped:
            return usage, wanted
    raise ServingError("The endpoint is too busy to count this call; try again.")


def _budget_wanted(spent, n_rows, *, max_calls: int, max_rows: int, now: dt.datetime) -> int:
    n_calls, rows_spent = spent
    if n_calls >= max_calls:
        raise _spent(f"Your {max_calls} calls to this model for today are spent.", now)
    left = max(max_rows - rows_spent, 0)
    if left < 1:
        raise _spent(f"Your {max_rows} rows for today are spent.", now)
    if n_rows is not None and n_rows > left:
        raise _spent(f"This call is charged {n_rows} rows; {left} of today's are left.", now)
    return min(left, ENCLAVE_MAX_ROWS) if n_rows is None else n_rows


def budget_refund(*, usage: CallerUsage, n_rows: int) -> None:
    """Give back rows reserved for a call that used fewer (the call itself stays counted)."""
    if n_rows > 0:
        CallerUsage.objects.filter(pk=usage.pk).update(n_rows=F("n_rows") - n_rows)


def _spent(sentence: str, now: dt.datetime | None) -> BudgetSpent:
    now = (now or timezone.now()).astimezone(dt.UTC)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    seconds = max(1, math.ceil((midnight - now).total_seconds()))
    return BudgetSpent(f"{sentence} The budget renews at midnight UTC.", retry_after=seconds)
