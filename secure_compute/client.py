"""Partner-side client for encrypted inference on an approved linear model.

A partner keeps its secret key in a local file, encrypts its own CSV, sends
ciphertexts and a public context to the TRE, and decrypts the outputs. The TRE
sees neither the rows nor the results; the partner never sees the weights.

Typical use::

    from secure_compute import client
    client.generate_keys("partner.key")                 # once; file mode 0600
    tre = client.HEClient(model_info_url, evaluate_url, token, "partner.key")
    result = tre.predict_csv("cohort.csv")              # labels, probabilities, outputs
    client.compare_with_plaintext(result.outputs, reference_outputs, kind=tre.info.kind)

or from a shell (the token is read from ``TRE_AUDIT_TOKEN``)::

    python -m secure_compute.client keygen partner.key --preset standard
    python -m secure_compute.client predict partner.key INFO_URL EVALUATE_URL cohort.csv

HTTP contract (the Django views implement exactly this)
-------------------------------------------------------
Both endpoints take ``Authorization: Token <token>`` and answer 401 without a
valid token, 403 if the token may not query this model, 404 for an unknown or
not-approved model, and 429 with ``Retry-After`` once the caller's daily query
budget is spent (calls and rows; see ``docs/he-inference.md``). Every evaluate
call is charged a whole ciphertext of rows (N/2 slots) per batch it carries.

``GET <model info URL>`` answers 200 with ``application/json``: the dict from
``secure_compute.he.model_info(weights, preset=...)``::

    {"format": 1, "kind": "logistic" | "linear_svm" | "regression",
     "preset": "standard" | "fast", "n_features": 30,
     "feature_names": ["mean radius", ...], "n_outputs": 1,
     "classes": [0, 1] | null, "max_rows": 65536}

``POST <evaluate URL>`` with ``Content-Type: application/octet-stream`` and
body ``he.join_request_body(public_context, request)``: an 8-byte big-endian
length of the public context, the public context, then the request envelope.
The view refuses a body longer than ``he.MAX_BODY_BYTES`` with 413 from
``Content-Length`` before reading it, then does::

    weights = he.linear_model_fold(model)               # cache per approved model
    public_context, request = he.split_request_body(body)
    response = he.evaluate(public_context, request, weights)

and answers 200 with ``application/octet-stream`` and the response envelope.
An ``HEError`` becomes 400 with ``application/json`` ``{"detail": str(exc)}``
(its message is one sentence meant for the partner). Nothing is stored: the
context and ciphertexts are dropped after the call.
"""

from __future__ import annotations

import argparse
import csv
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
import tenseal as ts

from secure_compute import he
from secure_compute.exceptions import HEError
from secure_compute.presets import DEFAULT_PRESET, PRESETS

#: Seconds to wait for the model-info answer and for one evaluate call.
INFO_TIMEOUT = 30
EVALUATE_TIMEOUT = 600

KINDS = ("logistic", "linear_svm", "regression")


@dataclass(frozen=True)
class ModelInfo:
    """What the TRE says about a served model (never its weights).

    Parameters
    ----------
    kind : {"logistic", "linear_svm", "regression"}
        How outputs become predictions.
    preset : str
        CKKS preset the server expects.
    feature_names : tuple of str
        Column order of the features.
    n_outputs : int
        Outputs per row: 1, or one per class.
    classes : tuple or None
        Class labels of a classifier.
    max_rows : int
        Rows the server takes in one request.
    """

    kind: str
    preset: str
    feature_names: tuple[str, ...]
    n_outputs: int
    classes: tuple | None
    max_rows: int

    @classmethod
    def from_json(cls, data) -> ModelInfo:
        """Validate the model-info JSON of the HTTP contract."""
        try:
            info = cls(
                kind=data["kind"],
                preset=data["preset"],
                feature_names=tuple(str(name) for name in data["feature_names"]),
                n_outputs=int(data["n_outputs"]),
                classes=None if data["classes"] is None else tuple(data["classes"]),
                max_rows=int(data["max_rows"]),
            )
        except (KeyError, TypeError, ValueError):
            raise HEError("The model info answer does not follow the HTTP contract.") from None
        if info.kind not in KINDS or info.preset not in PRESETS or info.n_outputs < 1:
            raise HEError("The model info names an unknown kind or preset.")
        return info


@dataclass(frozen=True)
class Prediction:
    """Decrypted outputs and what they mean.

    Parameters
    ----------
    outputs : ndarray of shape (n_rows,) or (n_rows, n_outputs)
        Logits or decision values (classifiers), predictions (regression).
    labels : ndarray or None
        Predicted class of each row, for classifiers.
    probabilities : ndarray or None
        Class probabilities for logistic models, shape (n_rows, n_classes).
    """

    outputs: np.ndarray
    labels: np.ndarray | None
    probabilities: np.ndarray | None


@dataclass(frozen=True)
class Comparison:
    """Encrypted against plaintext outputs on the same rows.

    Parameters
    ----------
    n_rows : int
        Rows compared.
    max_abs_error : float
        Largest absolute difference of outputs.
    decision_agreement : float or None
        Share of rows with the same decision (classifiers only).
    """

    n_rows: int
    max_abs_error: float
    decision_agreement: float | None


# --------------------------------------------------------------------------- keys


def generate_keys(path, *, preset: str = DEFAULT_PRESET, overwrite: bool = False) -> ts.Context:
    """Make a secret context and save it to ``path`` with mode 0600.

    The file holds the secret key: keep it, never send it. Without
    ``overwrite`` an existing file is left alone and an error is raised.
    """
    context = he.make_context(preset)
    secret = context.serialize(
        save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=False
    )
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise HEError(f"{path} exists; pass overwrite=True to replace the key.") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(secret)
    return context


def load_keys(path) -> ts.Context:
    """Load a secret context saved by :func:`generate_keys`.

    Refuses a file that others can read (like ssh does with private keys).
    """
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise HEError(f"{path} is readable by other users; run chmod 600 on it.")
    try:
        context = ts.context_from(Path(path).read_bytes())
    except Exception:
        raise HEError(f"{path} is not a TenSEAL key file.") from None
    if not context.is_private():
        raise HEError(f"{path} holds no secret key.")
    return context


# --------------------------------------------------------------------------- data


def read_csv(path, feature_names) -> np.ndarray:
    """Read the model's columns, in the model's order, from a CSV with a header row."""
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise HEError(f"{path} is empty.")
        index = {name.strip(): j for j, name in enumerate(header)}
        missing = [name for name in feature_names if name not in index]
        if missing:
            raise HEError(f"{path} lacks the model's columns {missing[:5]}.")
        columns = [index[name] for name in feature_names]
        rows = [[row[j] for j in columns] for row in reader if row]
    try:
        X = np.asarray(rows, dtype=float)
    except (ValueError, IndexError):
        raise HEError(f"{path} has a non-numeric or missing value in a model column.") from None
    if X.shape[0] == 0:
        raise HEError(f"{path} has no data rows.")
    return X.reshape(len(rows), len(columns))


# --------------------------------------------------------------------------- HTTP


def fetch_model_info(url: str, token: str, *, session=None) -> ModelInfo:
    """GET the model-info endpoint of the HTTP contract."""
    answer = _call(session, "get", url, token, timeout=INFO_TIMEOUT)
    try:
        return ModelInfo.from_json(answer.json())
    except ValueError:
        raise HEError("The model info answer is not JSON.") from None


def evaluate_remote(
    url: str, token: str, context: ts.Context, X, *, n_outputs: int = he.MAX_OUTPUTS, session=None
) -> np.ndarray:
    """Encrypt ``X``, POST it to the evaluate endpoint in chunks, decrypt the outputs.

    Chunks are as large as the server's limits allow for ``n_outputs`` outputs.
    """
    public = he.public_context_bytes(context)
    X = np.asarray(X, dtype=float)
    step = rows_per_request(context, X.shape[1] if X.ndim == 2 else 0, n_outputs)
    parts = []
    for start in range(0, max(len(X), 1), step):
        body = he.join_request_body(public, he.encrypt(context, X[start : start + step]))
        answer = _call(session, "post", url, token, data=body, timeout=EVALUATE_TIMEOUT)
        parts.append(he.decrypt(context, answer.content))
    return np.concatenate(parts, axis=0)


def rows_per_request(context: ts.Context, n_features: int, n_outputs: int = he.MAX_OUTPUTS) -> int:
    """Most rows one request may carry within the server's byte and row limits."""
    spec = he.preset_of(context)
    per_batch = spec.max_ciphertext_bytes * max(n_features, n_outputs, 1)
    batches = max(1, min(he.MAX_REQUEST_BYTES, he.MAX_RESPONSE_BYTES) // per_batch)
    return min(he.MAX_ROWS, batches * spec.slots)


def _call(session, method: str, url: str, token: str, **kwargs) -> requests.Response:
    """One authenticated HTTP call; any failure becomes an HEError sentence."""
    session = session or requests
    headers = {"Authorization": f"Token {token}"}
    if method == "post":
        headers["Content-Type"] = "application/octet-stream"
    try:
        answer = getattr(session, method)(url, headers=headers, **kwargs)
    except requests.RequestException as exc:
        raise HEError(f"Could not reach {url}: {type(exc).__name__}.") from None
    if answer.status_code == 429:  # the sentence says which budget, and when it renews
        raise HEError(_error_text(answer))
    if answer.status_code != 200:
        raise HEError(f"{url} answered {answer.status_code}: {_error_text(answer)}")
    return answer


def _error_text(answer: requests.Response) -> str:
    try:
        return str(answer.json()["detail"])
    except (ValueError, KeyError, TypeError):
        return answer.reason or "no reason given"


# --------------------------------------------------------------------------- results


def predictions_from_outputs(outputs: np.ndarray, info: ModelInfo) -> Prediction:
    """Apply the sigmoid, softmax or threshold on the client, in plaintext.

    Binary classifiers output one logit (positive means ``classes[1]``),
    multiclass ones one value per class (the largest wins), as scikit-learn's
    ``predict`` does.
    """
    outputs = np.asarray(outputs, dtype=float)
    if info.kind == "regression":
        return Prediction(outputs, None, None)
    classes = np.asarray(info.classes)
    if outputs.ndim == 1:
        labels = classes[(outputs > 0).astype(int)]
        proba = _sigmoid(outputs) if info.kind == "logistic" else None
        proba = None if proba is None else np.column_stack([1 - proba, proba])
    else:
        labels = classes[np.argmax(outputs, axis=1)]
        proba = _softmax(outputs) if info.kind == "logistic" else None
    return Prediction(outputs, labels, proba)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return np.exp(-np.logaddexp(0.0, -z))


def _softmax(z: np.ndarray) -> np.ndarray:
    shifted = np.exp(z - z.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def plaintext_outputs(estimator, X) -> np.ndarray:
    """The outputs the server computes, from a plaintext copy of the model."""
    method = getattr(estimator, "decision_function", None) or estimator.predict
    return np.asarray(method(X), dtype=float)


def compare_with_plaintext(he_outputs, plaintext, *, kind: str) -> Comparison:
    """Compare decrypted outputs with plaintext ones (an array, or ``(estimator, X)``).

    Decisions are the sign of a single logit or the argmax over classes.
    """
    if isinstance(plaintext, tuple):
        plaintext = plaintext_outputs(*plaintext)
    he_outputs, plaintext = np.asarray(he_outputs, float), np.asarray(plaintext, float)
    if he_outputs.shape != plaintext.shape:
        raise HEError(f"Cannot compare outputs of shapes {he_outputs.shape} and {plaintext.shape}.")
    agreement = None
    if kind != "regression":
        agreement = float(np.mean(_decisions(he_outputs) == _decisions(plaintext)))
    error = float(np.max(np.abs(he_outputs - plaintext)))
    return Comparison(len(he_outputs), error, agreement)


def _decisions(outputs: np.ndarray) -> np.ndarray:
    return outputs > 0 if outputs.ndim == 1 else np.argmax(outputs, axis=1)


class HEClient:
    """A partner's handle on one served model.

    Parameters
    ----------
    model_info_url, evaluate_url : str
        The two endpoints of the HTTP contract (module docstring).
    token : str
        API token, sent as ``Authorization: Token <token>``.
    key_path : str or Path
        Secret key file from :func:`generate_keys`.
    session : requests.Session, optional
        For connection reuse, or a test double.
    """

    def __init__(self, model_info_url, evaluate_url, token, key_path, *, session=None):
        self.model_info_url = model_info_url
        self.evaluate_url = evaluate_url
        self.token = token
        self.key_path = key_path
        self.session = session
        self._info = None
        self._context = None

    @property
    def info(self) -> ModelInfo:
        """The model info, fetched once."""
        if self._info is None:
            self._info = fetch_model_info(self.model_info_url, self.token, session=self.session)
        return self._info

    @property
    def context(self) -> ts.Context:
        """The secret context, loaded once and checked against the model's preset."""
        if self._context is None:
            context = load_keys(self.key_path)
            if he.preset_of(context).name != self.info.preset:
                raise HEError(
                    f"The key is not for the {self.info.preset!r} preset this model uses."
                )
            self._context = context
        return self._context

    def predict(self, X) -> Prediction:
        """Encrypted predictions for a matrix in the model's column order."""
        outputs = evaluate_remote(
            self.evaluate_url,
            self.token,
            self.context,
            X,
            n_outputs=self.info.n_outputs,
            session=self.session,
        )
        return predictions_from_outputs(outputs, self.info)

    def predict_csv(self, path) -> Prediction:
        """Encrypted predictions for a CSV; columns are matched by name."""
        return self.predict(read_csv(path, self.info.feature_names))


# --------------------------------------------------------------------------- CLI


def main(argv=None) -> int:
    """``keygen`` and ``predict`` for a partner's shell; exit code 2 on a refusal."""
    parser = argparse.ArgumentParser(prog="python -m secure_compute.client")
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser("keygen", help="write a new secret key file (mode 0600)")
    keygen.add_argument("key_path")
    keygen.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS))
    predict = commands.add_parser("predict", help="encrypted predictions for a CSV")
    for name in ("key_path", "model_info_url", "evaluate_url", "csv_path"):
        predict.add_argument(name)
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            generate_keys(args.key_path, preset=args.preset)
            return 0
        return _predict_command(args)
    except HEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _predict_command(args) -> int:
    token = os.environ.get("TRE_AUDIT_TOKEN")
    if not token:
        raise HEError("Set TRE_AUDIT_TOKEN to your API token.")
    tre = HEClient(args.model_info_url, args.evaluate_url, token, args.key_path)
    result = tre.predict_csv(args.csv_path)
    writer = csv.writer(sys.stdout)
    outputs = result.outputs.reshape(len(result.outputs), -1)
    writer.writerow(["prediction", *(f"output_{j}" for j in range(outputs.shape[1]))])
    predicted = result.labels if result.labels is not None else outputs[:, 0]
    for label, row in zip(predicted, outputs):
        writer.writerow([label, *(f"{value:.6g}" for value in row)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
