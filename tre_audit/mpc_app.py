"""``tre-audit mpc app``: the partner's local web app for secure inference.

It runs on the partner's own machine, not in the service, and listens on
127.0.0.1 only. Three pages: the endpoint's public model and a CSV file input;
a demonstration of what secret sharing does to the first rows (fixed point,
a random mask and the masked value) with a button to start; the predictions,
their logit error bounds and what crossed the network, with predictions.csv to
download. The app is given a ``predict`` callable (rows in, a
:class:`secure_compute.mpc.Prediction` out) and the endpoint's
:class:`~secure_compute.mpc.Architecture`, so the CLI wires it to the REST
client and the tests to a real partner session.

Pages are rendered from ``templates/mpc_app/`` with :class:`string.Template`
(every value escaped here), styled by the service's own stylesheet, and sent
under a Content-Security-Policy that allows no script at all. Every POST
carries a random per-server token in a hidden field: other sites open in the
partner's browser could otherwise post to localhost.
"""

from __future__ import annotations

import csv
import hmac
import html
import io
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from string import Template
from urllib.parse import parse_qs

import numpy as np

from secure_compute.exceptions import MPCError, MPCUnavailable
from secure_compute.mpc import MAX_ROWS, PRECISION_BITS, Architecture, Prediction, rows_check

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "templates" / "mpc_app"
STATIC = {
    "tre_audit.css": (ROOT / "static" / "tre_audit.css", "text/css; charset=utf-8"),
    "mpc_app.css": (ROOT / "static" / "mpc_app.css", "text/css; charset=utf-8"),
    "favicon.svg": (ROOT / "static" / "favicon.svg", "image/svg+xml"),
}
#: The only address the app binds: it serves one person's browser on this machine.
LOOPBACK = "127.0.0.1"
#: Largest upload: 4,096 rows of a few hundred features fit with room to spare.
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
#: How many rows and features the shares preview shows.
PREVIEW_ROWS = 3
PREVIEW_FEATURES = 6
#: How many rows the results page lists (all of them are in predictions.csv).
MAX_LISTED_ROWS = 200
#: Uploads and results kept in memory for the pages that follow (the oldest go first).
MAX_KEPT = 8
#: No script, no frames, no other origin: the pages are static HTML and one stylesheet.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)

Predict = Callable[[np.ndarray], Prediction]


@dataclass(frozen=True)
class Upload:
    """Rows the partner chose, kept on this machine until inference starts."""

    filename: str
    X: np.ndarray


@dataclass
class MPCApp:
    """What the pages need: the public model, how to predict, and this server's state.

    Parameters
    ----------
    architecture : Architecture
        The endpoint's public model, as the service states it.
    predict : callable
        ``predict(X) -> Prediction``: one secure-inference session on the rows.
    endpoint : str
        The endpoint's number, shown on the pages.
    """

    architecture: Architecture
    predict: Predict
    endpoint: str

    def __post_init__(self):
        self.csrf_token = secrets.token_urlsafe(32)
        self.uploads: OrderedDict[str, Upload] = OrderedDict()
        self.results: OrderedDict[str, bytes] = OrderedDict()
        self.lock = threading.Lock()

    def keep(self, store: OrderedDict, value) -> str:
        """Keep ``value`` under a fresh random key; forget the oldest beyond MAX_KEPT."""
        key = secrets.token_urlsafe(16)
        with self.lock:
            store[key] = value
            while len(store) > MAX_KEPT:
                store.popitem(last=False)
        return key

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf_token.encode())


class AppRefused(Exception):
    """A request the app refuses with one sentence and an HTTP status."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def app_server(
    architecture: Architecture,
    predict: Predict,
    *,
    endpoint: str,
    host: str = LOOPBACK,
    port: int = 0,
) -> ThreadingHTTPServer:
    """A server for the app on ``host:port`` (port 0: any free one), not yet serving.

    Raises
    ------
    MPCError
        If ``host`` is anything but 127.0.0.1: the app serves this machine only.
    """
    if host != LOOPBACK:
        raise MPCError(
            f"The secure-inference app listens on {LOOPBACK} only, not on {host}: "
            "it serves this machine's browser and no one else."
        )
    app = MPCApp(architecture=architecture, predict=predict, endpoint=str(endpoint))
    handler = type("Handler", (_Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.app = app
    return server


def app_serve(
    architecture: Architecture,
    predict: Predict,
    *,
    endpoint: str,
    port: int = 0,
    ready: Callable[[str], None] = print,
) -> None:
    """Serve the app until interrupted; ``ready`` is told its URL first."""
    server = app_server(architecture, predict, endpoint=endpoint, port=port)
    try:
        ready(f"http://{LOOPBACK}:{server.server_address[1]}/")
        server.serve_forever()
    finally:
        server.server_close()


# --------------------------------------------------------------------------- reading rows


def rows_read(architecture: Architecture, data: bytes) -> np.ndarray:
    """The model's columns of an uploaded CSV as a float matrix, or one sentence why not.

    With the model's feature names, columns are taken by name, in the model's
    order; without them, every column in the file's order.
    """
    from attacks.exceptions import IntakeError
    from attacks.intake import load_table

    try:
        frame = load_table(data, filename="rows.csv", max_bytes=MAX_UPLOAD_BYTES)
    except IntakeError as exc:
        raise MPCError(str(exc)) from None
    names = architecture.feature_names
    if names and all(name in frame.columns for name in names):
        frame = frame[list(names)]
    elif names and len(frame.columns) == len(names):
        missing = [name for name in names if name not in frame.columns]
        raise MPCError(f"The file's columns are not the model's: it lacks {_quoted(missing)}.")
    _numbers_check(frame)
    return rows_check(architecture, frame.to_numpy(dtype=float))


def _numbers_check(frame) -> None:
    import pandas as pd

    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            continue
        numbers = pd.to_numeric(values, errors="coerce")
        bad = np.flatnonzero(numbers.isna().to_numpy() & values.notna().to_numpy())
        row = f"row {bad[0] + 1}" if bad.size else "a row"
        raise MPCError(
            f"Column {_quoted([str(column)])} holds a value that is not a number ({row})."
        )


def _quoted(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(f"'{name}'" for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# --------------------------------------------------------------------------- the shares


def shares_demo(
    X: np.ndarray, *, rng: np.random.Generator, precision_bits: int = PRECISION_BITS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A demonstration of additive secret sharing of ``X`` over the ring of 2**64.

    Returns ``encoded`` (each value times ``2**precision_bits``, truncated, as
    CrypTen encodes it), a uniformly random mask ``r`` and ``encoded - r``
    (wrapping): the two shares, which add up to ``encoded`` modulo 2**64.
    """
    info = np.iinfo(np.int64)
    encoded = np.trunc(np.asarray(X, dtype=float) * 2.0**precision_bits).astype(np.int64)
    mask = rng.integers(info.min, info.max, size=encoded.shape, dtype=np.int64, endpoint=True)
    masked = (encoded.view(np.uint64) - mask.view(np.uint64)).view(np.int64)
    return encoded, mask, masked


# --------------------------------------------------------------------------- pages


def _render(name: str, **values) -> str:
    return Template((TEMPLATES / name).read_text()).substitute(values)


def _page(app: MPCApp, title: str, name: str, **values) -> bytes:
    content = _render(name, endpoint=html.escape(app.endpoint), **values)
    page = _render(
        "base.html", title=html.escape(title), endpoint=html.escape(app.endpoint), content=content
    )
    return page.encode()


def choose_page(app: MPCApp, *, error: str = "") -> bytes:
    """Page 1: the public model and the file input (with ``error``, the upload's refusal)."""
    a = app.architecture
    layers = "".join(
        f"<li>{'Dense' if layer.kind == 'dense' else 'ReLU'}: {layer.n_in} → {layer.n_out}</li>"
        for layer in a.layers
    )
    names = a.feature_names
    help_text = (
        "Columns are taken by the model's feature names; others are ignored."
        if names
        else f"The file's {a.n_features} columns, in the model's order."
    )
    alert = (
        f'<p role="alert" class="card banner" id="error">{html.escape(error)}</p>' if error else ""
    )
    return _page(
        app,
        "Choose your rows",
        "choose.html",
        error=alert,
        n_features=a.n_features,
        outcome=html.escape(_outcome(a)),
        layers=layers,
        classes=html.escape(", ".join(map(str, a.classes))) if a.classes else "none (values)",
        features=html.escape(", ".join(names)) if names else "unnamed: the file's, in order",
        columns_help=html.escape(help_text),
        csrf=app.csrf_token,
        max_rows=f"{MAX_ROWS:,}",
        max_mb=MAX_UPLOAD_BYTES // 2**20,
    )


def _outcome(a: Architecture) -> str:
    if a.output == "regression":
        return f"{a.n_outputs} value{'s' if a.n_outputs > 1 else ''}"
    n_classes = len(a.classes) if a.classes else max(2, a.n_outputs)
    return f"one of {n_classes} classes"


def shares_page(app: MPCApp, upload: Upload, key: str, *, rng: np.random.Generator) -> bytes:
    """Page 2: the first rows in the clear beside their two demonstration shares."""
    X = upload.X[:PREVIEW_ROWS, :PREVIEW_FEATURES]
    encoded, mask, masked = shares_demo(X, rng=rng)
    names = app.architecture.feature_names or tuple(
        f"column {j + 1}" for j in range(app.architecture.n_features)
    )
    tables = [
        _shares_table(i, names, X[i], encoded[i], mask[i], masked[i]) for i in range(X.shape[0])
    ]
    hidden = app.architecture.n_features - X.shape[1]
    if hidden > 0 or upload.X.shape[0] > X.shape[0]:
        tables.append(
            f'<p class="muted">Shown: the first {X.shape[0]} rows and {X.shape[1]} features; '
            f"the other {hidden} features and rows are shared the same way.</p>"
        )
    return _page(
        app,
        "Your rows, secret-shared",
        "shares.html",
        n_rows=upload.X.shape[0],
        filename=html.escape(upload.filename),
        precision_bits=PRECISION_BITS,
        preview="\n".join(tables),
        csrf=app.csrf_token,
        upload=key,
    )


def _shares_table(i, names, x, encoded, mask, masked) -> str:
    body = "".join(
        f"<tr><th scope=row>{html.escape(names[j])}</th><td class=num>{x[j]:.6g}</td>"
        f"<td class=num>{encoded[j]}</td><td class=num>{mask[j]}</td>"
        f"<td class=num>{masked[j]}</td></tr>"
        for j in range(x.shape[0])
    )
    return (
        f'<div class="scroll"><table class="shares" id="shares-row-{i + 1}">'
        f'<caption>Row {i + 1} <span class="narrow-only">(scroll sideways for the shares)'
        "</span></caption><thead><tr><th>Feature</th>"
        "<th class=num>Value (stays here)</th>"
        f"<th class=num>× 2<sup>{PRECISION_BITS}</sup></th>"
        "<th class=num>Share 1: mask <var>r</var></th>"
        "<th class=num>Share 2: value − <var>r</var></th></tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


def result_page(app: MPCApp, prediction: Prediction, csv_key: str) -> bytes:
    """Page 3: predictions, logits, error bounds and what crossed the network."""
    settled = prediction.settled()
    n_rows = prediction.logits.shape[0]
    rows = "\n".join(
        f"<tr><td class=num>{i + 1}</td><td>{html.escape(str(_item(prediction.predictions[i])))}"
        f"</td><td class=mono>{html.escape(_logits(prediction.logits[i]))}</td>"
        f"<td class=num>{prediction.error_bounds[i]:.2g}</td>"
        + ("<td>settled</td>" if settled[i] else "<td class=borderline>borderline</td>")
        + "</tr>"
        for i in range(min(n_rows, MAX_LISTED_ROWS))
    )
    more = (
        f'<p class="muted">The first {MAX_LISTED_ROWS} of {n_rows} rows; all are in '
        "predictions.csv.</p>"
        if n_rows > MAX_LISTED_ROWS
        else ""
    )
    n_borderline = int((~settled).sum())
    note = (
        "Every row here is settled: the plaintext model decides the same."
        if not n_borderline
        else f"{n_borderline} of {n_rows} rows are borderline."
    )
    stats = prediction.stats
    return _page(
        app,
        "Predictions",
        "result.html",
        n_rows=n_rows,
        csv_url=f"/results/{csv_key}/predictions.csv",
        bytes_sent=_bytes(stats.bytes_sent),
        bytes_received=_bytes(stats.bytes_received),
        rounds=f"{stats.rounds:,}",
        error_bound=f"{prediction.error_bound:.2g}",
        precision_bits=PRECISION_BITS,
        settled_note=note,
        rows=rows,
        more=more,
    )


def _item(value):
    return value.item() if hasattr(value, "item") else value


def _logits(values: np.ndarray) -> str:
    return ", ".join(f"{v:.4f}" for v in values)


def _bytes(n: int) -> str:
    for unit, size in (("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def predictions_csv(prediction: Prediction) -> bytes:
    """predictions.csv: row, prediction, each logit and the row's error bound."""
    out = io.StringIO()
    writer = csv.writer(out)
    n_logits = prediction.logits.shape[1]
    writer.writerow(["row", "prediction", *[f"logit_{j}" for j in range(n_logits)], "error_bound"])
    for i, logits in enumerate(prediction.logits):
        writer.writerow(
            [
                i + 1,
                _item(prediction.predictions[i]),
                *[f"{v:.6f}" for v in logits],
                f"{prediction.error_bounds[i]:.3g}",
            ]
        )
    return out.getvalue().encode()


def refused_page(app: MPCApp, status: HTTPStatus, message: str) -> bytes:
    heading = {
        HTTPStatus.FORBIDDEN: "Refused",
        HTTPStatus.SERVICE_UNAVAILABLE: "Secure inference is unavailable",
        HTTPStatus.NOT_FOUND: "Not found",
    }.get(status, "Something went wrong")
    return _page(
        app, heading, "refused.html", heading=html.escape(heading), message=html.escape(message)
    )


# --------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    """Parses, calls one function, renders: the app's routes."""

    app: MPCApp
    server_version = "tre-audit-mpc-app"
    sys_version = ""

    def do_GET(self):
        self._answer(self._get)

    def do_POST(self):
        self._answer(self._post)

    def _answer(self, route) -> None:
        try:
            self._host_check()
            status, content_type, body = route()
        except AppRefused as exc:
            status, content_type = exc.status, "text/html; charset=utf-8"
            body = refused_page(self.app, exc.status, str(exc))
        except Exception:  # noqa: BLE001 - one sentence on the page, never a traceback
            status, content_type = HTTPStatus.INTERNAL_SERVER_ERROR, "text/html; charset=utf-8"
            body = refused_page(self.app, status, "The app failed on this request; try again.")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        if content_type.startswith("text/csv"):
            self.send_header("Content-Disposition", 'attachment; filename="predictions.csv"')
        self.end_headers()
        self.wfile.write(body)

    def _host_check(self) -> None:
        """Only this machine's names for the app: a rebound DNS name is refused."""
        port = self.server.server_address[1]
        if self.headers.get("Host") not in (f"{LOOPBACK}:{port}", f"localhost:{port}"):
            raise AppRefused(HTTPStatus.FORBIDDEN, "The app answers only at its own address.")

    def _get(self):
        path = self.path.split("?", 1)[0]
        if path == "/":
            return HTTPStatus.OK, "text/html; charset=utf-8", choose_page(self.app)
        if path.startswith("/static/") and path[8:] in STATIC:
            file, content_type = STATIC[path[8:]]
            return HTTPStatus.OK, content_type, file.read_bytes()
        parts = path.split("/")
        if len(parts) == 4 and parts[1] == "results" and parts[3] == "predictions.csv":
            with self.app.lock:
                body = self.app.results.get(parts[2])
            if body is not None:
                return HTTPStatus.OK, "text/csv; charset=utf-8", body
        raise AppRefused(HTTPStatus.NOT_FOUND, "There is no such page here.")

    def _post(self):
        path = self.path.split("?", 1)[0]
        if path not in ("/shares", "/predict"):
            raise AppRefused(HTTPStatus.NOT_FOUND, "There is no such page here.")
        fields = self._form()
        if not self.app.csrf_ok(_text(fields.get("csrf"))):
            raise AppRefused(
                HTTPStatus.FORBIDDEN,
                "The form did not come from this app's own page (its token is missing or "
                "wrong); open the app's address and try again.",
            )
        if path == "/shares":
            return self._shares(fields)
        return self._predict(fields)

    def _shares(self, fields: dict):
        upload = fields.get("rows")
        if not isinstance(upload, tuple) or not upload[1]:
            return self._choose_again("Choose a CSV file first.")
        filename, data = upload
        try:
            X = rows_read(self.app.architecture, data)
        except MPCError as exc:
            return self._choose_again(str(exc))
        kept = Upload(filename=filename or "rows.csv", X=X)
        key = self.app.keep(self.app.uploads, kept)
        page = shares_page(self.app, kept, key, rng=np.random.default_rng())
        return HTTPStatus.OK, "text/html; charset=utf-8", page

    def _choose_again(self, message: str):
        return (
            HTTPStatus.BAD_REQUEST,
            "text/html; charset=utf-8",
            choose_page(self.app, error=message),
        )

    def _predict(self, fields: dict):
        with self.app.lock:
            upload = self.app.uploads.get(_text(fields.get("upload")) or "")
        if upload is None:
            return self._choose_again("Those rows are no longer here; choose the file again.")
        try:
            prediction = self.app.predict(upload.X)
        except MPCUnavailable as exc:
            raise AppRefused(HTTPStatus.SERVICE_UNAVAILABLE, str(exc)) from None
        except MPCError as exc:
            return self._choose_again(str(exc))
        key = self.app.keep(self.app.results, predictions_csv(prediction))
        return HTTPStatus.OK, "text/html; charset=utf-8", result_page(self.app, prediction, key)

    def _form(self) -> dict:
        """The POSTed fields: text as str, a file as (filename, bytes); size-capped."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise AppRefused(HTTPStatus.LENGTH_REQUIRED, "The request states no length.") from None
        if not 0 <= length <= MAX_UPLOAD_BYTES + 64 * 1024:
            raise AppRefused(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"The file is larger than {MAX_UPLOAD_BYTES // 2**20} MB, the most the app takes.",
            )
        body = self.rfile.read(length)
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            return _multipart(content_type, body)
        if content_type.startswith("application/x-www-form-urlencoded"):
            return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        raise AppRefused(HTTPStatus.BAD_REQUEST, "The request is not a form.")

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # no request log: paths carry result keys


def _multipart(content_type: str, body: bytes) -> dict:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise AppRefused(HTTPStatus.BAD_REQUEST, "The form could not be read.")
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        data = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        fields[name] = (filename, data) if filename is not None else data.decode("utf-8", "replace")
    return fields


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


__all__ = [
    "CSP",
    "LOOPBACK",
    "MPCApp",
    "app_serve",
    "app_server",
    "predictions_csv",
    "rows_read",
    "shares_demo",
]
