"""Deploy, call and stop secure endpoints for approved models.

Only a request two checkers approved can be served. Every deployment, stop and
call is written to the audit log: who, how many rows or bytes, never the data.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from attacks.intake import load_model
from secure_compute import he
from secure_compute.attestation import (
    ROOT_CERT_FILE,
    simulated_root_create,
    simulated_root_save,
)
from secure_compute.enclave_host import OP_ATTEST, OP_RUN, host_call
from secure_compute.exceptions import UnsupportedModel
from tre_audit.serving.enums import EndpointKind, EndpointStatus
from tre_audit.serving.exceptions import ServingError, ServingNotAllowed
from tre_audit.serving.models import Endpoint
from tre_audit.submissions.enums import FileRole, Status
from tre_audit.submissions.models import StoredFile, Submission
from tre_audit.submissions.selectors import user_is_author_or_admin
from tre_audit.submissions.services import audit_entry_append, file_path, file_read

#: Requests whose model two checkers approved (released or not yet).
SERVABLE = {Status.APPROVED, Status.RELEASED}


def check_user_can_deploy(user: AbstractBaseUser, submission: Submission) -> None:
    if not user_is_author_or_admin(user, submission):
        raise ServingNotAllowed("Only the author or a TRE admin can deploy an endpoint.")
    if submission.status not in SERVABLE:
        raise ServingError("Only a request two checkers approved can be served.")


def user_can_deploy(user: AbstractBaseUser, submission: Submission) -> bool:
    try:
        check_user_can_deploy(user, submission)
    except (ServingNotAllowed, ServingError):
        return False
    return True


def endpoint_deploy(
    *,
    submission: Submission,
    kind: str,
    by: AbstractBaseUser,
    callers: list[AbstractBaseUser] = (),
    preset: str = he.DEFAULT_PRESET,
) -> Endpoint:
    """Start serving the approved model of ``submission`` behind an HE or enclave endpoint."""
    check_user_can_deploy(by, submission)
    model = submission.files.get(version=submission.version, role=FileRole.MODEL).stored
    endpoint = Endpoint(submission=submission, kind=kind, model_sha256=model.sha256, created_by=by)
    if kind == EndpointKind.HE:
        he_weights(model.sha256)  # refuses a model HE cannot serve, before anything runs
        endpoint.preset = preset
        endpoint.save()
    elif kind == EndpointKind.ENCLAVE:
        endpoint.save()
        _enclave_start(endpoint)
    else:
        raise ServingError(f"There is no endpoint kind called {kind}.")
    endpoint.callers.set(callers)
    audit_entry_append(
        submission=submission,
        action="endpoint:deploy",
        by=by,
        reason=f"{endpoint.get_kind_display()} endpoint #{endpoint.pk}, model {model.sha256[:12]}",
    )
    return endpoint


@functools.lru_cache(maxsize=32)
def he_weights(model_sha256: str) -> he.LinearWeights:
    """The model folded for HE, loaded safely once per process (files never change)."""
    data = file_read(stored=StoredFile.objects.get(sha256=model_sha256))
    try:
        return he.linear_model_fold(load_model(data))
    except UnsupportedModel as exc:
        raise ServingError(str(exc)) from None


def enclave_root_directory():
    """The local SIMULATED root that signs enclave documents, made on first use."""
    directory = settings.TRE_AUDIT_ENCLAVE_ROOT
    if not (directory / ROOT_CERT_FILE).exists():
        simulated_root_save(simulated_root_create(), directory)
    return directory


def _enclave_start(endpoint: Endpoint) -> None:
    socket_dir = settings.TRE_AUDIT_ENCLAVE_SOCKETS
    socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    socket_path = socket_dir / f"{endpoint.pk}.sock"
    log = settings.VAR_DIR / "log" / f"enclave-{endpoint.pk}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [
        *(sys.executable, "-m", "secure_compute.enclave_host", "--socket", str(socket_path)),
        *(
            "--model",
            str(file_path(endpoint.model_sha256)),
            "--root",
            str(enclave_root_directory()),
        ),
    ]
    with log.open("ab") as errors:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=errors,
            start_new_session=True,  # outlives the web process that deployed it
            env=_enclave_environment(),
        )
    ready = process.stdout.readline().strip()  # the host gives up by itself after 120 s
    process.stdout.close()
    if ready != b"ready":
        process.kill()
        problem = log.read_text(errors="replace").strip().splitlines()
        raise ServingError(_sentence(problem[-1] if problem else "The enclave did not start."))
    endpoint.socket_path, endpoint.pid = str(socket_path), process.pid
    endpoint.save(update_fields=["socket_path", "pid"])


def _enclave_environment() -> dict[str, str]:
    """The host needs no database, secret key or broker: it gets none of them."""
    private = ("DATABASE_URL", "TRE_AUDIT_SECRET_KEY", "CELERY_BROKER_URL")
    return {k: v for k, v in os.environ.items() if k not in private}


def _sentence(line: str) -> str:
    return line.removeprefix("error: ").strip()


@transaction.atomic
def endpoint_stop(*, endpoint: Endpoint, by: AbstractBaseUser | None, reason: str = "") -> Endpoint:
    """Stop serving: the enclave host and its keys end; HE calls are refused from now on.

    ``by=None`` is the service itself (shutting down), logged as such.
    """
    if by is not None and not user_is_author_or_admin(by, endpoint.submission):
        raise ServingNotAllowed("Only the author or a TRE admin can stop an endpoint.")
    if endpoint.status == EndpointStatus.STOPPED:
        return endpoint
    if endpoint.pid:
        _process_group_stop(endpoint.pid)
    endpoint.status, endpoint.stopped_at = EndpointStatus.STOPPED, timezone.now()
    endpoint.save(update_fields=["status", "stopped_at"])
    audit_entry_append(
        submission=endpoint.submission,
        action="endpoint:stop",
        by=by,
        reason=f"endpoint #{endpoint.pk}" + (f": {reason}" if reason else ""),
    )
    return endpoint


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


def _process_alive(pid: int) -> bool:
    try:  # the deploying process is the host's parent: reap it, or it stays a zombie
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:  # deployed by another process: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def check_user_can_call(user: AbstractBaseUser, endpoint: Endpoint) -> None:
    """The author, the endpoint's named callers and admins may send data; others see nothing."""
    allowed = (
        user_is_author_or_admin(user, endpoint.submission)
        or endpoint.callers.filter(pk=user.pk).exists()
    )
    if not allowed:
        raise ServingNotAllowed("There is no endpoint with that number you can use.")
    if endpoint.status != EndpointStatus.RUNNING:
        raise ServingError("This endpoint has been stopped.")
    if endpoint.submission.status not in SERVABLE:
        raise ServingError("The request behind this endpoint is no longer approved.")


def he_model_info(*, endpoint: Endpoint, user: AbstractBaseUser) -> dict:
    """What a client needs to encrypt: feature names and order, preset; never weights."""
    check_user_can_call(user, endpoint)
    return he.model_info(he_weights(endpoint.model_sha256), preset=endpoint.preset)


def he_evaluate(*, endpoint: Endpoint, user: AbstractBaseUser, body: bytes) -> bytes:
    """Compute encrypted outputs for an encrypted request; logs the call, not the data."""
    check_user_can_call(user, endpoint)
    public_context, request = he.split_request_body(body)
    response = he.evaluate(public_context, request, he_weights(endpoint.model_sha256))
    _call_record(endpoint, user, len(body), "he:evaluate")
    return response


def enclave_attest(*, endpoint: Endpoint, user: AbstractBaseUser, nonce: bytes) -> bytes:
    check_user_can_call(user, endpoint)
    return host_call(endpoint.socket_path, OP_ATTEST, nonce)


def enclave_run(*, endpoint: Endpoint, user: AbstractBaseUser, sealed: bytes) -> bytes:
    """Forward a sealed request to the enclave; only the enclave can open it."""
    check_user_can_call(user, endpoint)
    response = host_call(endpoint.socket_path, OP_RUN, sealed)
    _call_record(endpoint, user, len(sealed), "enclave:run")
    return response


def _call_record(endpoint: Endpoint, user: AbstractBaseUser, n_bytes: int, action: str) -> None:
    Endpoint.objects.filter(pk=endpoint.pk).update(
        n_calls=F("n_calls") + 1, n_bytes_in=F("n_bytes_in") + n_bytes
    )
    audit_entry_append(
        submission=endpoint.submission,
        action=f"endpoint:{action.split(':')[1]}",
        by=user,
        reason=f"endpoint #{endpoint.pk}: {n_bytes} bytes from {user.get_username()}",
    )


def enclave_endpoints_stop_all(*, reason: str) -> int:
    """Stop every running enclave (their host processes end with the service)."""
    running = Endpoint.objects.filter(kind=EndpointKind.ENCLAVE, status=EndpointStatus.RUNNING)
    for endpoint in running:
        endpoint_stop(endpoint=endpoint, by=None, reason=reason)
    return len(running)
