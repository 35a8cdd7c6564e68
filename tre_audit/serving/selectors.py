"""Which endpoints a user may see, which a request may have, and how a partner calls one."""

from __future__ import annotations

import functools
import hashlib
import shlex

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet

from secure_compute import he, mpc
from secure_compute.attestation import ROOT_CERT_FILE
from tre_audit.reviews.enums import Role
from tre_audit.reviews.services import user_has_role
from tre_audit.serving.enums import EndpointKind, EndpointStatus
from tre_audit.serving.exceptions import ServingNotAllowed
from tre_audit.serving.models import Endpoint
from tre_audit.submissions.models import Submission
from tre_audit.submissions.selectors import current_run

#: What a partner names the downloaded root certificate in the commands shown to them.
ROOT_DOWNLOAD_NAME = "enclave-root.pem"


def endpoint_list_visible_to(*, user: AbstractBaseUser) -> QuerySet[Endpoint]:
    """Admins see every endpoint; others those of their requests or that name them."""
    qs = Endpoint.objects.select_related("submission", "created_by")
    if user_has_role(user, Role.TRE_ADMIN):
        return qs
    return qs.filter(Q(submission__author=user) | Q(callers=user)).distinct()


def endpoint_get_visible(*, user: AbstractBaseUser, endpoint_id: int) -> Endpoint:
    endpoint = endpoint_list_visible_to(user=user).filter(pk=endpoint_id).first()
    if endpoint is None:
        raise ServingNotAllowed("There is no endpoint with that number you can use.")
    return endpoint


def endpoint_list_running() -> list[Endpoint]:
    """Running endpoints with their ``caller_names`` (admins grant them), for the dashboard."""
    endpoints = list(
        Endpoint.objects.filter(status=EndpointStatus.RUNNING)
        .select_related("submission", "created_by")
        .prefetch_related("callers")
        .order_by("created_at")
    )
    for endpoint in endpoints:
        endpoint.caller_names = sorted(c.get_username() for c in endpoint.callers.all())
    return endpoints


def he_unfit_reason(*, submission: Submission) -> str:
    """Why HE cannot serve the approved model, as the audit's report names it; "" if it
    can, or if the report does not say (deploying then folds the model and decides)."""
    model = _report_model(submission)
    if not model or not model.get("type"):
        return ""
    final, steps = _final_and_steps(model)
    if he.foldable_by_name(final, steps):
        return ""
    return (
        f"A {final} is not a linear model, so it cannot be served under homomorphic "
        "encryption; serve it in an attested enclave instead."
    )


def mpc_unfit_reason(*, submission: Submission) -> str:
    """Why secure inference (MPC) cannot serve the approved model, from the report's model
    summary (an MLP's activation, a network's declared layers); "" if it can, or if the
    report does not say (deploying then folds the model and decides)."""
    model = _report_model(submission)
    if not model or not model.get("type"):
        return ""
    final, steps = _final_and_steps(model)
    activation = (model.get("params") or {}).get("activation")
    layers = _declared_layers(model)
    if mpc.foldable_by_name(final, steps, activation=activation, layers=layers):
        return ""
    if final == "OnnxClassifier":
        others = sorted({layer for layer in layers if layer not in mpc.FOLDABLE_LAYERS})
        names = ", ".join(others[:-1]) + f" and {others[-1]}" if len(others) > 1 else others[0]
        return (
            f"A network with {names} layers cannot be served by two-party secure inference "
            "(only Linear and ReLU layers can); serve it in an attested enclave instead."
        )
    if final == "MLPClassifier":
        return (
            f"An MLPClassifier with activation={activation!r} cannot be served by two-party "
            "secure inference (only 'relu' can); serve it in an attested enclave instead."
        )
    return (
        f"A {final} cannot be served by two-party secure inference (only linear models and "
        "ReLU networks can); serve it in an attested enclave instead."
    )


def _final_and_steps(model: dict) -> tuple[str, list[str]]:
    """The final estimator's class name and its pipeline steps' (``"name: Class"``)."""
    final = str(model["type"]).rsplit(".", 1)[-1]
    steps = [str(step).split(": ", 1)[-1] for step in model.get("pipeline_steps", [])[:-1]]
    return final, steps


def _declared_layers(model: dict) -> list[str] | None:
    """A network's declared layer types (``attacks.nn.schema``), None if none is declared."""
    architecture = (model.get("declaration") or {}).get("architecture")
    if not isinstance(architecture, list):
        return None
    return [str(layer.get("type") if isinstance(layer, dict) else layer) for layer in architecture]


def _report_model(submission: Submission) -> dict | None:
    run = current_run(submission)
    return (run.report or {}).get("model") if run is not None else None


def endpoint_kinds_offered(*, submission: Submission) -> list[str]:
    """The secure options that fit the model, the most private first: HE for a linear
    model, MPC for a linear model or a ReLU network, and the enclave for any."""
    kinds = [] if he_unfit_reason(submission=submission) else [EndpointKind.HE]
    if not mpc_unfit_reason(submission=submission):
        kinds.append(EndpointKind.MPC)
    return [*kinds, EndpointKind.ENCLAVE]


def enclave_root_pem() -> bytes | None:
    """The TRE's enclave root certificate (PEM), once an enclave has made it."""
    path = settings.TRE_AUDIT_ENCLAVE_ROOT / ROOT_CERT_FILE
    return path.read_bytes() if path.exists() else None


def enclave_root_fingerprint(pem: bytes) -> str:
    """SHA-256 of the certificate's DER, as ``openssl x509 -fingerprint -sha256`` prints it."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


@functools.cache
def enclave_code_measurement() -> str:
    """The enclave code's measurement (PCR0, SHA-384 hex) a partner pins: it changes only
    with the code, so once per process."""
    from secure_compute.enclave import code_measurement_compute

    return code_measurement_compute().hex()


def endpoint_command(endpoint: Endpoint, *, server_url: str) -> str:
    """The partner's exact command line for calling ``endpoint`` with rows.csv."""
    server = ["--url", server_url.rstrip("/")]
    if endpoint.kind == EndpointKind.HE:
        args = ["he", "predict", str(endpoint.pk), "-f", "rows.csv", "--keys", "partner.key"]
        return shlex.join(["tre-audit", *args, "--out", "predictions.csv", *server])
    if endpoint.kind == EndpointKind.MPC:
        args = ["mpc", "predict", str(endpoint.pk), "-f", "rows.csv", "--out", "predictions.csv"]
        return shlex.join(["tre-audit", *args, *server])
    args = ["enclave", "run", str(endpoint.pk), "-f", "rows.csv", "--root", ROOT_DOWNLOAD_NAME]
    pins = ["--model-sha256", endpoint.model_sha256]
    pins += ["--code-measurement", enclave_code_measurement(), "--accept-simulated"]
    return shlex.join(["tre-audit", *args, *pins, "--out", "predictions.csv", *server])


def endpoint_app_command(endpoint: Endpoint, *, server_url: str) -> str:
    """The partner's command line for the local secure-inference web app ("" but for MPC)."""
    if endpoint.kind != EndpointKind.MPC:
        return ""
    args = ["mpc", "app", str(endpoint.pk), "--url", server_url.rstrip("/")]
    return shlex.join(["tre-audit", *args])


def endpoint_api_path(endpoint: Endpoint) -> str:
    """Where the REST API serves ``endpoint``'s calls."""
    path = f"/api/v1/endpoints/{endpoint.pk}/"
    return path + {EndpointKind.HE: "he/", EndpointKind.MPC: "mpc/"}.get(endpoint.kind, "")


def serving_view(*, submission: Submission, endpoints: list[Endpoint], server_url: str) -> dict:
    """The request page's secure serving: the options to offer (and why others are not),
    each endpoint with its command lines, and what a partner pins (root fingerprint, code
    measurement)."""
    kinds = endpoint_kinds_offered(submission=submission)
    pem = enclave_root_pem() if any(e.kind == EndpointKind.ENCLAVE for e in endpoints) else None
    unfit = [he_unfit_reason(submission=submission), mpc_unfit_reason(submission=submission)]
    return {
        "kinds": kinds,
        "unfit": [reason for reason in unfit if reason],
        "rows": [
            {
                "endpoint": e,
                "command": endpoint_command(e, server_url=server_url),
                "app_command": endpoint_app_command(e, server_url=server_url),
                "api_path": endpoint_api_path(e),
            }
            for e in endpoints
        ],
        "root_fingerprint": enclave_root_fingerprint(pem) if pem else "",
        "root_download_name": ROOT_DOWNLOAD_NAME,
        "code_measurement": enclave_code_measurement() if pem else "",
    }
