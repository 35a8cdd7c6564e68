"""``tre-audit enclave``, ``he`` and ``mpc``: serve an approved model, and use it as a partner.

In the spirit of Cape's CLI: ``deploy`` starts an endpoint for an approved
request; ``encrypt`` verifies the enclave's attestation and seals a CSV to it
(nothing leaves in the clear); ``run`` sends sealed rows and opens the answer.
``mpc app`` serves the partner's local web app for secure inference.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

from tre_audit.cli import CommandError, _Server


def add_commands(commands, *, server_args) -> None:
    """Register the ``enclave``, ``he`` and ``mpc`` command groups on the main parser."""
    enclave = commands.add_parser("enclave", help="attested-enclave endpoints").add_subparsers(
        dest="enclave_command", required=True
    )
    deploy = enclave.add_parser("deploy", help="serve an approved request in an enclave")
    _deploy_args(deploy, server_args, kind="enclave")
    encrypt = enclave.add_parser("encrypt", help="verify the enclave and seal a CSV to it")
    _partner_args(encrypt, server_args)
    encrypt.add_argument(
        "-o", "--out", required=True, type=Path, help="directory for the sealed request"
    )
    encrypt.set_defaults(handler=_enclave_encrypt)
    run = enclave.add_parser("run", help="send rows to an enclave and open the predictions")
    _partner_args(run, server_args, csv_required=False)
    run.add_argument("--sealed", type=Path, help="a directory written by `enclave encrypt`")
    run.add_argument("--out", type=Path, help="write predictions here (CSV); default stdout")
    run.set_defaults(handler=_enclave_run)
    he = commands.add_parser("he", help="homomorphic-encryption endpoints").add_subparsers(
        dest="he_command", required=True
    )
    _deploy_args(
        he.add_parser("deploy", help="serve an approved linear model under HE"),
        server_args,
        kind="he",
    )
    keygen = he.add_parser("keygen", help="make your CKKS keys (the secret stays in this file)")
    keygen.add_argument("keys", type=Path)
    keygen.add_argument("--preset", default="standard", choices=["standard", "fast"])
    keygen.set_defaults(handler=_he_keygen)
    predict = he.add_parser("predict", help="encrypted predictions for a CSV")
    predict.add_argument("endpoint", type=int, help="the endpoint's number")
    predict.add_argument("-f", "--file", required=True, type=Path, help="input CSV")
    predict.add_argument("--keys", required=True, type=Path, help="from `tre-audit he keygen`")
    predict.add_argument("--out", type=Path, help="write predictions here (CSV); default stdout")
    server_args(predict)
    predict.set_defaults(handler=_he_predict)
    mpc = commands.add_parser("mpc", help="two-party secure inference (with a dealer)")
    mpc = mpc.add_subparsers(dest="mpc_command", required=True)
    _deploy_args(
        mpc.add_parser("deploy", help="serve an approved linear model or MLP by secure MPC"),
        server_args,
        kind="mpc",
    )
    predict = mpc.add_parser("predict", help="secure predictions for a CSV (rows stay here)")
    predict.add_argument("endpoint", type=int, help="the endpoint's number")
    predict.add_argument("-f", "--file", required=True, type=Path, help="input CSV")
    predict.add_argument("--out", type=Path, help="write predictions here (CSV); default stdout")
    server_args(predict)
    predict.set_defaults(handler=_mpc_predict)
    app = mpc.add_parser("app", help="the web app for secure inference, on this machine only")
    app.add_argument("endpoint", type=int, help="the endpoint's number")
    app.add_argument("--port", type=_port, default=0, help="port on 127.0.0.1 (default: any free)")
    server_args(app)
    app.set_defaults(handler=_mpc_app)


def _deploy_args(p, server_args, *, kind: str) -> None:
    p.add_argument("request", type=int, help="the approved request's number")
    p.add_argument(
        "--caller",
        action="append",
        default=[],
        help="TRE admins: a partner's username who may call (repeat)",
    )
    p.add_argument("--reason", default="", help="TRE admins: why these partners may call (logged)")
    if kind == "he":
        p.add_argument("--preset", default="standard", choices=["standard", "fast"])
    server_args(p)
    p.set_defaults(handler=_deploy, kind=kind)


def _partner_args(p, server_args, *, csv_required: bool = True) -> None:
    p.add_argument("endpoint", help="the endpoint's number or its URL")
    p.add_argument("-f", "--file", required=csv_required, type=Path, help="input CSV")
    p.add_argument(
        "--root",
        type=Path,
        help="the TRE's enclave root certificate (PEM), "
        "obtained out of band (default: $TRE_AUDIT_ENCLAVE_ROOT_CERT)",
    )
    p.add_argument(
        "--model-sha256",
        help="the approved model's SHA-256 (from the release "
        "manifest); default: as the server states it",
    )
    p.add_argument(
        "--code-measurement",
        type=_code_measurement,
        help="the enclave code's measurement to pin (SHA-384 hex, as the request page shows it)",
    )
    p.add_argument(
        "--accept-simulated",
        action="store_true",
        help="accept a SIMULATED enclave (no hardware isolation): testing only",
    )
    server_args(p)


def _code_measurement(text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 48:
        raise argparse.ArgumentTypeError("must be 96 hexadecimal digits (a SHA-384)")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError("must be a port number, 0 to 65535")
    return int(text)


def _server(args) -> _Server:
    return _Server.from_args(args)


def _deploy(args) -> int:
    server = _server(args)
    body = {"request": args.request, "kind": args.kind, "callers": args.caller}
    if args.caller:
        body["reason"] = args.reason
    if args.kind == "he":
        body["preset"] = args.preset
    endpoint = server.call("post", "endpoints/", json=body)
    print(f"Endpoint #{endpoint['id']}: {endpoint['kind']}, {endpoint['status']}")
    for name, url in endpoint["urls"].items():
        print(f"  {name}: {url}")
    print(f"  model sha256: {endpoint['model_sha256']}")
    if args.kind == "enclave":
        print(
            "Clients verify it against the TRE's enclave root certificate, given to them out "
            "of band: download it from the request's page (Secure serving) or copy the "
            "server's var/enclave-root/root_cert.pem. It is SIMULATED."
        )
    return 0


def _endpoint(server, endpoint: str) -> dict:
    number = endpoint.rstrip("/").rsplit("/", 1)[-1]
    if not number.isdigit():
        raise CommandError(f"{endpoint} is not an endpoint number or URL.")
    return server.call("get", f"endpoints/{number}/")


def _rows(path: Path, names: list[str]):
    from secure_compute.client import read_csv
    from secure_compute.exceptions import SecureComputeError

    try:
        return read_csv(path, names)
    except (OSError, SecureComputeError, ValueError) as exc:
        raise CommandError(f"Cannot read {path}: {exc}") from None


def _roots(args) -> list:
    from cryptography import x509

    path = args.root or os.environ.get("TRE_AUDIT_ENCLAVE_ROOT_CERT")
    if not path:
        raise CommandError("Pass --root: the TRE's enclave root certificate, obtained out of band.")
    try:
        return [x509.load_pem_x509_certificate(Path(path).read_bytes())]
    except (OSError, ValueError):
        raise CommandError(f"{path} is not a PEM certificate.") from None


def _attested_pending(args, server, info: dict):
    from secure_compute.enclave_client import nonce_new, verify_and_seal
    from secure_compute.exceptions import SecureComputeError

    rows = _rows(args.file, info["feature_names"])
    nonce = nonce_new()
    document = server.call(
        "get", f"endpoints/{info['id']}/attestation", raw=True, params={"nonce": nonce.hex()}
    )
    try:
        return verify_and_seal(
            document,
            expected_model_sha256=args.model_sha256 or info["model_sha256"],
            nonce=nonce,
            rows=rows,
            trusted_roots=_roots(args),
            accept_simulated=args.accept_simulated,
            expected_code_measurement=args.code_measurement,
        )
    except SecureComputeError as exc:
        raise CommandError(f"Refused the enclave: {exc}") from None


def _enclave_encrypt(args) -> int:
    import cbor2

    server = _server(args)
    pending = _attested_pending(args, server, _endpoint(server, args.endpoint))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "request.sealed").write_bytes(pending.sealed)
    secret = {
        "key": pending.client_keys.private_key.private_bytes_raw(),
        "nonce": pending.nonce,
        "n_rows": pending.n_rows,
    }
    key_path = args.out / "request.key"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as key_file:
        key_file.write(cbor2.dumps(secret))
    print(
        f"Attested ({'SIMULATED' if pending.attested.simulated else 'hardware'} enclave, "
        f"model {pending.attested.model_sha256.hex()[:12]}); sealed {pending.n_rows} rows to "
        f"{args.out / 'request.sealed'}; keep {key_path} to open the answer."
    )
    return 0


def _enclave_run(args) -> int:
    from secure_compute.enclave_client import open_result
    from secure_compute.exceptions import SecureComputeError

    server = _server(args)
    info = _endpoint(server, args.endpoint)
    if args.sealed:
        pending = _pending_load(args.sealed)
    elif args.file:
        pending = _attested_pending(args, server, info)
    else:
        raise CommandError("Pass -f input.csv, or --sealed DIR from `tre-audit enclave encrypt`.")
    answer = server.call(
        "post",
        f"endpoints/{info['id']}/run",
        raw=True,
        data=pending.sealed,
        headers={"Content-Type": "application/octet-stream"},
    )
    try:
        result = open_result(answer, pending)
    except SecureComputeError as exc:
        raise CommandError(f"Cannot open the enclave's answer: {exc}") from None
    _write_predictions(args.out, result.predictions, result.probabilities, result.classes)
    return 0


def _pending_load(directory: Path):
    import cbor2
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from secure_compute.enclave_client import PendingRequest
    from secure_compute.sealing import ClientKeys

    try:
        secret = cbor2.loads((directory / "request.key").read_bytes())
        private = X25519PrivateKey.from_private_bytes(secret["key"])
        sealed = (directory / "request.sealed").read_bytes()
    except (OSError, ValueError, KeyError, TypeError, cbor2.CBORDecodeError):
        raise CommandError(f"{directory} does not hold a request from `enclave encrypt`.") from None
    keys = ClientKeys(private_key=private, public_key=private.public_key().public_bytes_raw())
    return PendingRequest(
        sealed=sealed,
        client_keys=keys,
        nonce=secret["nonce"],
        n_rows=secret["n_rows"],
        attested=None,
    )


def _he_keygen(args) -> int:
    from secure_compute.client import generate_keys
    from secure_compute.exceptions import SecureComputeError

    try:
        generate_keys(args.keys, preset=args.preset)
    except (OSError, SecureComputeError) as exc:
        raise CommandError(f"Cannot write {args.keys}: {exc}") from None
    print(f"Wrote {args.keys} (mode 0600). It holds your secret key: it never leaves this machine.")
    return 0


def _token(server) -> str:
    """The API token the server's session sends (the partners' clients take it as is)."""
    return server.session.headers["Authorization"].split(" ", 1)[1]


def _he_predict(args) -> int:
    from secure_compute.client import HEClient
    from secure_compute.exceptions import SecureComputeError

    server = _server(args)
    info = server.call("get", f"endpoints/{args.endpoint}/")
    if info["kind"] != "he":
        raise CommandError(f"Endpoint #{args.endpoint} is not an HE endpoint.")
    token = _token(server)
    client = HEClient(info["urls"]["model_info"], info["urls"]["evaluate"], token, args.keys)
    try:
        result = client.predict_csv(args.file)
    except (OSError, SecureComputeError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    labels = result.labels if result.labels is not None else result.outputs
    _write_predictions(args.out, labels, result.probabilities, list(client.info.classes or []))
    return 0


def _mpc_app(args) -> int:
    """Serve the local app, wired to the service's secure-inference client."""
    from secure_compute import mpc_client
    from secure_compute.exceptions import SecureComputeError
    from tre_audit import mpc_app

    server = _server(args)
    token = _token(server)
    try:
        info = mpc_client.model_info(server.url, token, args.endpoint, http=server.session)
    except SecureComputeError as exc:
        raise CommandError(str(exc)) from None

    def predict(X):
        return mpc_client.predict(server.url, token, args.endpoint, X, http=server.session)

    def ready(url: str) -> None:
        print(f"Secure inference for endpoint #{args.endpoint}: open {url} (Ctrl-C stops it)")

    try:
        mpc_app.app_serve(
            info.architecture, predict, endpoint=str(args.endpoint), port=args.port, ready=ready
        )
    except KeyboardInterrupt:
        print("Stopped.", file=sys.stderr)
    except OSError as exc:
        raise CommandError(f"Cannot listen on 127.0.0.1:{args.port}: {exc.strerror}.") from None
    return 0


def _write_predictions(out: Path | None, labels, probabilities, classes) -> None:
    handle = out.open("w", newline="") if out else sys.stdout
    writer = csv.writer(handle)
    if probabilities is not None and probabilities.ndim == 1:  # binary: P(second class)
        probabilities, classes = probabilities[:, None], classes[-1:]
    columns = [f"p_{c}" for c in classes] if probabilities is not None else []
    writer.writerow(["prediction", *columns])
    for i, label in enumerate(labels):
        extra = [f"{p:.6f}" for p in probabilities[i]] if probabilities is not None else []
        writer.writerow([label.item() if hasattr(label, "item") else label, *extra])
    if out:
        handle.close()
        print(f"Wrote {len(labels)} predictions to {out}", file=sys.stderr)


def _mpc_predict(args) -> int:
    from secure_compute import mpc_client
    from secure_compute.exceptions import SecureComputeError

    server = _server(args)
    info = server.call("get", f"endpoints/{args.endpoint}/")
    if info["kind"] != "mpc":
        raise CommandError(f"Endpoint #{args.endpoint} is not an MPC endpoint.")
    token = _token(server)
    rows = _mpc_rows(args.file)
    try:
        prediction = mpc_client.predict(server.url, token, args.endpoint, rows, http=server.session)
    except SecureComputeError as exc:
        raise CommandError(str(exc)) from None
    _mpc_predictions_write(args.out, prediction)
    stats = prediction.stats
    print(
        f"{len(prediction.predictions)} rows by secure inference: largest logit error bound "
        f"{prediction.error_bound:.3g}, {stats.bytes_sent + stats.bytes_received} bytes "
        f"in {stats.rounds} rounds.",
        file=sys.stderr,
    )
    return 0


def _mpc_rows(path: Path):
    import pandas as pd

    try:
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a CSV table"
        raise CommandError(f"Cannot read {path}: {reason}.") from None


def _mpc_predictions_write(out: Path | None, prediction) -> None:
    logits = prediction.logits
    names = ["logit"] if logits.shape[1] == 1 else [f"logit_{j}" for j in range(logits.shape[1])]
    handle = out.open("w", newline="") if out else sys.stdout
    writer = csv.writer(handle)
    writer.writerow(["prediction", *names, "error_bound"])
    for label, row, bound in zip(
        prediction.predictions, logits, prediction.error_bounds, strict=True
    ):
        label = label.item() if hasattr(label, "item") else label
        writer.writerow([label, *(f"{v:.6f}" for v in row), f"{bound:.6f}"])
    if out:
        handle.close()
        print(f"Wrote {len(logits)} predictions to {out}", file=sys.stderr)
