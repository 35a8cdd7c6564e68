"""Homomorphic-encryption inference for approved linear models.

Four verbs, split between the two sides:

- client: :func:`make_context` (secret keys, never sent), :func:`encrypt`
  (a feature matrix into a request envelope), :func:`decrypt` (a response
  envelope into logits); :func:`public_context_bytes` is what the client sends.
- server: :func:`evaluate` (public context + request + folded weights into a
  response), after :func:`linear_model_fold` turned an approved scikit-learn
  model into plain weights.

Packing is by column: one CKKS vector per feature holds up to N/2 rows
(4096 for the "standard" preset), so the server computes
``sum_j w_j * x_j + b`` with plaintext-scalar products and additions only. It
needs no rotation (no Galois keys) and no relinearisation (no relin keys), and
it never rescales: the logit comes back at scale Δ² on the top level, which is
both cheaper and about ten times more precise than rescaling after each
product (one rounding error per feature). The bias rides on the feature with
the largest weight, ``w_k * (x_k + b / w_k)``, because TenSEAL encodes plain
addends at the fresh scale Δ, not Δ².

The server returns the encrypted logit. The client applies the sigmoid,
softmax or threshold itself: a low-degree polynomial sigmoid under CKKS is
only accurate on a small interval and flips decisions for large logits.

Wire format (see ``secure_compute._he_wire``): ``b"TREHE"``, a version byte,
a length-prefixed JSON header, then length-prefixed ciphertexts. A request
header is ``{"kind": "request", "preset", "n_rows", "n_features",
"batch_sizes", "context_sha256"}`` followed by ``len(batch_sizes) *
n_features`` feature vectors, batch by batch; a response header has
``n_outputs`` in place of ``n_features`` and one vector per batch and output.
``context_sha256`` is the SHA-256 of the public context bytes: a request made
under another context is refused before any ciphertext is parsed.

CKKS gives no integrity. Requests are authenticated by token at the HTTP
layer; what a modified ciphertext can do is in ``docs/he-inference.md``.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tenseal as ts
import tenseal.sealapi as sealapi
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted

from safe_model.exceptions import ModelRefused
from safe_model.sandbox import INTAKE_LIMITS, sandbox_call
from secure_compute import _he_wire as wire
from secure_compute.exceptions import HEError, UnsupportedModel
from secure_compute.presets import DEFAULT_PRESET, PRESETS, HEPreset

# Limits, checked on the raw bytes before any TenSEAL parsing.
#: One standard batch of this many features (~100 MB) still fits MAX_REQUEST_BYTES.
MAX_FEATURES = 256
#: Sixteen standard batches; larger jobs are split by the client.
MAX_ROWS = 65_536
#: One output per class; a 32-class linear model is already unusual.
MAX_OUTPUTS = 32
#: About 400 standard ciphertexts: 30 features x 13 batches, or 400 features x 1.
MAX_REQUEST_BYTES = 160 * 2**20
#: A response is refused before work starts if it would exceed this.
MAX_RESPONSE_BYTES = 160 * 2**20
#: The HTTP body is an 8-byte context length, the context, then the request.
MAX_BODY_BYTES = MAX_REQUEST_BYTES + max(p.max_context_bytes for p in PRESETS.values()) + 8

_REQUEST_KEYS = frozenset(
    {"kind", "preset", "n_rows", "n_features", "batch_sizes", "context_sha256"}
)
_RESPONSE_KEYS = frozenset(
    {"kind", "preset", "n_rows", "n_outputs", "batch_sizes", "context_sha256"}
)
_BODY_PREFIX = struct.Struct(">Q")

#: Exact estimator types whose prediction is ``X @ coef_.T + intercept_``.
_CLASSIFIERS = {LogisticRegression: "logistic", LinearSVC: "linear_svm"}
_REGRESSORS = (LinearRegression, Ridge, Lasso, ElasticNet)
#: Scalers that are a per-feature affine map and fold into the weights.
_SCALERS = (StandardScaler, MinMaxScaler, MaxAbsScaler)
_KINDS = frozenset({*_CLASSIFIERS.values(), "regression"})
_FOLDABLE_MODELS = (*_CLASSIFIERS, *_REGRESSORS)


@dataclass(frozen=True)
class LinearWeights:
    """Plain weights of a linear model, with any scaler folded in.

    Parameters
    ----------
    coef : ndarray of shape (n_outputs, n_features)
        One row per output: 1 for binary classification and single-target
        regression, one per class for multiclass models.
    intercept : ndarray of shape (n_outputs,)
        Bias of each output.
    kind : {"logistic", "linear_svm", "regression"}
        How the client turns outputs into predictions.
    classes : ndarray or None
        Class labels of a classifier, in scikit-learn's order; None for regression.
    feature_names : tuple of str or None
        Column names the model was fitted on, when it saw a DataFrame.
    """

    coef: np.ndarray
    intercept: np.ndarray
    kind: str
    classes: np.ndarray | None = None
    feature_names: tuple[str, ...] | None = None

    @property
    def n_features(self) -> int:
        """Number of input columns."""
        return self.coef.shape[1]

    @property
    def n_outputs(self) -> int:
        """Number of encrypted outputs per row."""
        return self.coef.shape[0]


# --------------------------------------------------------------------------- folding


def linear_model_fold(estimator) -> LinearWeights:
    """Turn an approved linear model or scaler pipeline into plain weights.

    Supported: ``LogisticRegression`` and ``LinearSVC`` (binary and multiclass;
    outputs are decision-function values), ``LinearRegression``, ``Ridge``,
    ``Lasso`` and ``ElasticNet`` (one output per target), each alone or as the
    last step of a ``Pipeline`` whose other steps are ``StandardScaler``,
    ``MinMaxScaler`` (``clip=False``), ``MaxAbsScaler`` or ``"passthrough"``.
    Each scaler is ``x -> a * x + c`` per feature, so it folds exactly:
    ``w' = w * a`` and ``b' = b + w @ c``.

    Parameters
    ----------
    estimator : estimator or Pipeline
        A fitted model.

    Returns
    -------
    weights : LinearWeights
        Weights such that ``X @ weights.coef.T + weights.intercept`` equals the
        model's ``decision_function`` (classifiers) or ``predict`` (regressors).

    Raises
    ------
    UnsupportedModel
        For any other model, an unfitted one, a clipping scaler, non-finite
        weights or an output whose weights are all zero.
    """
    steps = estimator.steps if isinstance(estimator, Pipeline) else [("model", estimator)]
    final = steps[-1][1]
    kind = _model_kind(final)
    scale, shift = _fold_scalers([step for _, step in steps[:-1]], final.n_features_in_)
    coef = np.atleast_2d(np.asarray(final.coef_, dtype=float))
    intercept = np.broadcast_to(np.asarray(final.intercept_, dtype=float), coef.shape[:1])
    weights = LinearWeights(
        coef=coef * scale,
        intercept=intercept + coef @ shift,
        kind=kind,
        classes=getattr(final, "classes_", None) if kind != "regression" else None,
        feature_names=_feature_names(estimator),
    )
    _check_foldable(weights)
    return weights


def linear_model_fold_file(data: bytes, *, filename: str = "model.skops") -> LinearWeights:
    """Load an untrusted skops file and fold it, in a sandbox process.

    The model is loaded (allow-listed, structurally validated) and folded by
    :func:`linear_model_fold` in a resource-limited child
    (:mod:`safe_model.sandbox`); only the weights come back, checked again here.

    Raises
    ------
    UnsupportedModel
        If the file is refused, is not a foldable linear model, or crashed,
        hung or overran the sandbox.
    """
    try:
        parts = sandbox_call(
            "secure_compute.he:_fold_in_child",
            kwargs={"data": data, "filename": filename},
            limits=INTAKE_LIMITS,
            reraise=(UnsupportedModel, HEError, ModelRefused),
        )
    except ModelRefused as exc:
        raise UnsupportedModel(str(exc)) from None
    names = parts["feature_names"]
    weights = LinearWeights(
        coef=np.atleast_2d(np.asarray(parts["coef"], dtype=float)),
        intercept=np.asarray(parts["intercept"], dtype=float).reshape(-1),
        kind=str(parts["kind"]),
        classes=None if parts["classes"] is None else np.asarray(parts["classes"]),
        feature_names=None if names is None else tuple(str(n) for n in names),
    )
    if weights.kind not in _KINDS or weights.intercept.shape != weights.coef.shape[:1]:
        raise UnsupportedModel("The model's folded weights came back inconsistent.")
    _check_foldable(weights)
    return weights


def _fold_in_child(*, data: bytes, filename: str) -> dict:
    from safe_model.loader import load_model

    weights = linear_model_fold(load_model(data, filename=filename))
    classes = weights.classes
    return {
        "coef": weights.coef,
        "intercept": np.asarray(weights.intercept, dtype=float),
        "kind": weights.kind,
        "classes": None if classes is None else np.asarray(np.asarray(classes).tolist()),
        "feature_names": None if weights.feature_names is None else list(weights.feature_names),
    }


def _model_kind(model) -> str:
    """Name the output semantics of an allowed estimator, or refuse it."""
    kind = _CLASSIFIERS.get(type(model)) or ("regression" if type(model) in _REGRESSORS else None)
    if kind is None:
        raise UnsupportedModel(
            f"A {type(model).__name__} is not a linear model, so it cannot be served under "
            f"homomorphic encryption (only {_names(_FOLDABLE_MODELS)} can); "
            "serve it in an attested enclave instead."
        )
    try:
        check_is_fitted(model)
    except Exception:
        raise UnsupportedModel(f"The {type(model).__name__} is not fitted.") from None
    return kind


def foldable_by_name(model_class: str, step_classes: Sequence[str] = ()) -> bool:
    """Whether :func:`linear_model_fold` takes a model of this class after these steps.

    A cheap first answer from class names (a report's model summary), so a page offers
    HE only for what it can serve; folding the fitted model still decides.

    Parameters
    ----------
    model_class : str
        The final estimator's class name, such as ``"LogisticRegression"``.
    step_classes : sequence of str, default=()
        The class names of the pipeline steps before it (``"str"`` for ``"passthrough"``).

    Returns
    -------
    bool
    """
    return model_class in _names_of(_FOLDABLE_MODELS) and scalers_by_name(step_classes)


def scalers_by_name(step_classes: Sequence[str]) -> bool:
    """Whether pipeline steps of these class names fold into a model's first layer: the
    scalers, or ``"passthrough"`` (``"str"``) and None."""
    return all(step in {*_names_of(_SCALERS), "str", "NoneType"} for step in step_classes)


def _names_of(classes) -> list[str]:
    return [cls.__name__ for cls in classes]


def _names(classes) -> str:
    """``"A, B and C"``: class names in a sentence."""
    names = _names_of(classes)
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]


def _fold_scalers(scalers: list, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Compose per-feature affine scalers into one ``x -> scale * x + shift``."""
    scale, shift = np.ones(n_features), np.zeros(n_features)
    for step in scalers:
        if step is None or step == "passthrough":
            continue
        a, c = _scaler_affine(step, n_features)
        scale, shift = a * scale, a * shift + c
    return scale, shift


def _scaler_affine(step, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (a, c) with ``step.transform(x) == a * x + c`` for one scaler."""
    if type(step) not in _SCALERS:
        raise UnsupportedModel(
            f"A {type(step).__name__} step cannot be folded into HE weights; "
            "only StandardScaler, MinMaxScaler and MaxAbsScaler can."
        )
    if isinstance(step, MinMaxScaler) and step.clip:
        raise UnsupportedModel("A MinMaxScaler with clip=True is not linear and cannot be folded.")
    ones, zeros = np.ones(n_features), np.zeros(n_features)
    if isinstance(step, StandardScaler):
        # mean_ is fitted even with with_mean=False; the flags decide what transform does.
        a = 1.0 / step.scale_ if step.with_std else ones
        return a, -step.mean_ * a if step.with_mean else zeros
    if isinstance(step, MinMaxScaler):
        return np.asarray(step.scale_, dtype=float), np.asarray(step.min_, dtype=float)
    return 1.0 / step.scale_, zeros


def _feature_names(estimator) -> tuple[str, ...] | None:
    """Column names seen at fit time, if any."""
    names = getattr(estimator, "feature_names_in_", None)
    return None if names is None else tuple(str(name) for name in names)


def _check_foldable(weights: LinearWeights) -> None:
    """Refuse weights HE cannot carry: too many, non-finite, or all zero."""
    if weights.n_outputs > MAX_OUTPUTS or weights.n_features > MAX_FEATURES:
        raise UnsupportedModel(
            f"The model has {weights.n_outputs} outputs and {weights.n_features} features; "
            f"HE serving allows at most {MAX_OUTPUTS} and {MAX_FEATURES}."
        )
    if not (np.isfinite(weights.coef).all() and np.isfinite(weights.intercept).all()):
        raise UnsupportedModel("The folded weights are not finite (a scaler has a zero scale).")
    if not np.abs(weights.coef).max(axis=1).all():
        raise UnsupportedModel("An output of the model has only zero weights; it is a constant.")


def model_info(weights: LinearWeights, *, preset: str = DEFAULT_PRESET) -> dict:
    """The JSON body of the model-info endpoint (see ``secure_compute.client``).

    It reveals the model's shape and labels, never its weights.
    """
    _preset(preset)
    n = weights.n_features
    names = list(weights.feature_names or (f"x{j}" for j in range(n)))
    classes = None if weights.classes is None else np.asarray(weights.classes).tolist()
    return {
        "format": wire.FORMAT_VERSION,
        "kind": weights.kind,
        "preset": preset,
        "n_features": n,
        "feature_names": names,
        "n_outputs": weights.n_outputs,
        "classes": classes,
        "max_rows": MAX_ROWS,
    }


# --------------------------------------------------------------------------- contexts


def make_context(preset: str = DEFAULT_PRESET) -> ts.Context:
    """Make a secret CKKS context for one preset (client side only).

    Parameters
    ----------
    preset : str, default="standard"
        A key of ``secure_compute.presets.PRESETS``.

    Returns
    -------
    context : tenseal.Context
        Holds the secret key. Keep it; send only :func:`public_context_bytes`.
    """
    spec = _preset(preset)
    context = ts.context(
        ts.SCHEME_TYPE.CKKS,
        spec.poly_modulus_degree,
        coeff_mod_bit_sizes=list(spec.coeff_mod_bit_sizes),
    )
    context.global_scale = spec.scale
    return context


def public_context_bytes(context: ts.Context) -> bytes:
    """Serialize the parameters and public key only: no secret, Galois or relin keys."""
    if not isinstance(context, ts.Context):
        raise HEError("Expected a TenSEAL context.")
    return context.serialize(
        save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
    )


def context_fingerprint(public_context: bytes) -> str:
    """SHA-256 (hex) of the public context bytes, as carried in every header."""
    return hashlib.sha256(public_context).hexdigest()


def _preset(name: str) -> HEPreset:
    if not isinstance(name, str) or name not in PRESETS:
        raise HEError(f"Unknown HE preset {name!r}; known presets are {sorted(PRESETS)}.")
    return PRESETS[name]


@functools.cache
def _reference_parms_id(name: str) -> tuple[int, ...]:
    """SEAL's hash of a preset's parameters (key level), made without any key."""
    spec = PRESETS[name]
    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(spec.poly_modulus_degree)
    parms.set_coeff_modulus(
        sealapi.CoeffModulus.Create(spec.poly_modulus_degree, list(spec.coeff_mod_bit_sizes))
    )
    seal_context = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.TC128)
    return tuple(seal_context.key_parms_id())


def preset_of(context: ts.Context) -> HEPreset:
    """The preset whose exact parameters this context uses.

    Raises
    ------
    HEError
        If the context was not made by :func:`make_context` for a known preset.
    """
    parms_id = tuple(context.seal_context().data.key_parms_id())
    for name, spec in PRESETS.items():
        if _reference_parms_id(name) == parms_id:
            return spec
    raise HEError("The context's parameters match no HE preset.")


# --------------------------------------------------------------------------- client


def encrypt(context: ts.Context, X) -> bytes:
    """Encrypt a feature matrix column by column into a request envelope.

    Parameters
    ----------
    context : tenseal.Context
        From :func:`make_context`.
    X : array-like of shape (n_rows, n_features)
        Raw features in the model's column order (scalers are folded server-side).

    Returns
    -------
    request : bytes
        Envelope with one ciphertext per feature and batch of ``N / 2`` rows.
    """
    spec = preset_of(context)
    X = _check_matrix(X, spec)
    sizes = _batch_sizes(X.shape[0], spec.slots)
    blobs = []
    for start, size in zip(np.cumsum([0, *sizes[:-1]]), sizes):
        batch = X[start : start + size]
        blobs += [
            ts.ckks_vector(context, batch[:, j].tolist()).serialize() for j in range(X.shape[1])
        ]
    header = {
        "kind": "request",
        "preset": spec.name,
        "n_rows": X.shape[0],
        "n_features": X.shape[1],
        "batch_sizes": sizes,
        "context_sha256": context_fingerprint(public_context_bytes(context)),
    }
    return wire.pack_envelope(header, blobs)


def _check_matrix(X, spec: HEPreset) -> np.ndarray:
    """A finite 2-D float matrix within the row, column and range limits."""
    try:
        X = np.asarray(X, dtype=float)
    except (TypeError, ValueError):
        raise HEError("The features must be numbers.") from None
    if X.ndim != 2 or not 1 <= X.shape[0] <= MAX_ROWS or not 1 <= X.shape[1] <= MAX_FEATURES:
        raise HEError(
            f"The features must be a matrix of 1 to {MAX_ROWS} rows "
            f"and 1 to {MAX_FEATURES} columns."
        )
    if not np.isfinite(X).all():
        raise HEError("The features hold missing or infinite values.")
    if np.abs(X).max() > spec.max_abs_input:
        raise HEError(
            f"A feature exceeds {spec.max_abs_input:g} in magnitude, too large to encode."
        )
    return X


def _batch_sizes(n_rows: int, slots: int) -> list[int]:
    """Full batches of ``slots`` rows, then the remainder."""
    return [min(slots, n_rows - start) for start in range(0, n_rows, slots)]


def decrypt(context: ts.Context, response: bytes) -> np.ndarray:
    """Decrypt a response envelope into outputs.

    Returns
    -------
    outputs : ndarray of shape (n_rows,) or (n_rows, n_outputs)
        Decision-function values or regression predictions, one column per output.

    Raises
    ------
    HEError
        If the response is malformed, was made for another context, or holds a
        value beyond the preset's range (a wrapped-around, meaningless result).
    """
    spec = preset_of(context)
    header, offset = wire.read_header(response, max_bytes=MAX_RESPONSE_BYTES, what="response")
    n_outputs, sizes = _check_response_header(header, spec)
    _check_fingerprint(header, public_context_bytes(context), "response")
    count = len(sizes) * n_outputs
    blobs = wire.read_blobs(
        response, offset, count, max_blob=spec.max_ciphertext_bytes, what="response"
    )
    columns = []
    for index, blob in enumerate(blobs):
        _check_vector_blob(blob, spec)
        size = sizes[index // n_outputs]
        vector = _load_vector(context, blob, spec, size, spec.scale**2)
        columns.append(np.asarray(vector.decrypt(), dtype=float))
    outputs = _assemble(columns, sizes, n_outputs)
    if not np.isfinite(outputs).all() or np.abs(outputs).max() > spec.max_abs_output:
        raise HEError("A decrypted output is out of the preset's range; the result is not usable.")
    return outputs


def _assemble(columns: list[np.ndarray], sizes: list[int], n_outputs: int) -> np.ndarray:
    """Stack per-batch, per-output vectors into rows x outputs."""
    batches = [
        np.stack(columns[b * n_outputs : (b + 1) * n_outputs], axis=1) for b in range(len(sizes))
    ]
    outputs = np.concatenate(batches, axis=0)
    return outputs[:, 0] if n_outputs == 1 else outputs


def _check_response_header(header: dict, spec: HEPreset) -> tuple[int, list[int]]:
    """Validate a response header for this client's preset."""
    wire.check_keys(header, _RESPONSE_KEYS, "response")
    if header["kind"] != "response" or header["preset"] != spec.name:
        raise HEError("The response is not a response for this context's preset.")
    n_rows = wire.check_int(header, "n_rows", 1, MAX_ROWS, "response")
    n_outputs = wire.check_int(header, "n_outputs", 1, MAX_OUTPUTS, "response")
    return n_outputs, _check_batch_sizes(header, n_rows, spec, "response")


# --------------------------------------------------------------------------- server


def evaluate(public_context: bytes, request: bytes, weights: LinearWeights) -> bytes:
    """Compute encrypted outputs ``X @ coef.T + intercept`` (server side).

    Every length, limit, header field, the context fingerprint and the framing
    of every ciphertext are checked before TenSEAL parses a byte. The context
    must be public: one holding a secret key is refused, as are Galois and
    relinearisation keys, which this computation never needs.

    Parameters
    ----------
    public_context : bytes
        From the client's :func:`public_context_bytes`.
    request : bytes
        From the client's :func:`encrypt`.
    weights : LinearWeights
        From :func:`linear_model_fold` of the approved model.

    Returns
    -------
    response : bytes
        Envelope with one ciphertext per batch and output.

    Raises
    ------
    HEError
        With one sentence saying what was refused.
    """
    spec, sizes, blobs = _parse_request(public_context, request, weights)
    _check_weights(weights, spec)
    context = _load_public_context(public_context, spec)
    n = weights.n_features
    outputs = []
    for index, size in enumerate(sizes):
        batch = blobs[index * n : (index + 1) * n]
        columns = [_load_vector(context, blob, spec, size, spec.scale) for blob in batch]
        outputs += [_linear_output(columns, row, bias, spec) for row, bias in _rows(weights)]
    header = {
        "kind": "response",
        "preset": spec.name,
        "n_rows": sum(sizes),
        "n_outputs": weights.n_outputs,
        "batch_sizes": sizes,
        "context_sha256": context_fingerprint(public_context),
    }
    return wire.pack_envelope(header, outputs)


def _rows(weights: LinearWeights):
    return zip(weights.coef, weights.intercept)


def _parse_request(public_context: bytes, request: bytes, weights: LinearWeights):
    """All byte-level checks of a request; returns (preset, batch sizes, blobs)."""
    if not isinstance(public_context, bytes) or len(public_context) > MAX_BODY_BYTES:
        raise HEError("The public context must be bytes within the body limit.")
    _refuse_private_keys(public_context)
    header, offset = wire.read_header(request, max_bytes=MAX_REQUEST_BYTES, what="request")
    spec, n_rows = _check_request_header(header, weights)
    sizes = _check_batch_sizes(header, n_rows, spec, "request")
    if len(sizes) * weights.n_outputs * spec.max_ciphertext_bytes > MAX_RESPONSE_BYTES:
        raise HEError("The response would be too large; send fewer rows per request.")
    _check_fingerprint(header, public_context, "request")
    _check_context_bytes(public_context, spec)
    count = len(sizes) * weights.n_features
    blobs = wire.read_blobs(
        request, offset, count, max_blob=spec.max_ciphertext_bytes, what="request"
    )
    for blob in blobs:
        _check_vector_blob(blob, spec)
    return spec, sizes, blobs


def _check_request_header(header: dict, weights: LinearWeights) -> tuple[HEPreset, int]:
    """Validate a request header against the model."""
    wire.check_keys(header, _REQUEST_KEYS, "request")
    if header["kind"] != "request":
        raise HEError("The envelope is not a request.")
    spec = _preset(header["preset"])
    n_rows = wire.check_int(header, "n_rows", 1, MAX_ROWS, "request")
    n_features = wire.check_int(header, "n_features", 1, MAX_FEATURES, "request")
    if n_features != weights.n_features:
        raise HEError(
            f"The model takes {weights.n_features} features; the request has {n_features}."
        )
    return spec, n_rows


def _check_batch_sizes(header: dict, n_rows: int, spec: HEPreset, what: str) -> list[int]:
    """Batch sizes must be the canonical split of n_rows into N/2-row batches."""
    sizes = header.get("batch_sizes")
    if sizes != _batch_sizes(n_rows, spec.slots) or any(type(s) is not int for s in sizes):
        raise HEError(
            f"The {what} batch sizes do not split {n_rows} rows into batches of {spec.slots}."
        )
    return sizes


def _check_fingerprint(header: dict, public_context: bytes, what: str) -> None:
    """The envelope must name the SHA-256 of the context it was made under."""
    if header.get("context_sha256") != context_fingerprint(public_context):
        raise HEError(f"The {what} was made under a different HE context than the one supplied.")


def _check_weights(weights: LinearWeights, spec: HEPreset) -> None:
    """Every output needs a weight the preset's fixed point can represent."""
    if not isinstance(weights, LinearWeights):
        raise HEError("The weights must come from linear_model_fold.")
    if (np.abs(weights.coef).max(axis=1) * spec.scale < 1).any():
        raise HEError(f"An output's weights all round to zero under the {spec.name!r} preset.")


def _check_context_bytes(public_context: bytes, spec: HEPreset) -> None:
    """Walk the context protobuf: parameters and public key only, no other key."""
    fields = _unique_fields(public_context)
    if len(public_context) > spec.max_context_bytes:
        raise HEError(f"The public context must be at most {spec.max_context_bytes} bytes.")
    if set(fields) - {1, 2, 4} or fields.get(4, (0, 0))[1] != 0:
        raise HEError("The context is not a public-key CKKS context.")
    if fields.get(1, (None,))[0] != 2 or fields.get(2, (None,))[0] != 2:
        raise HEError("The context lacks its parameters or its public part.")
    wire.check_seal_object(fields[1][1], "context parameters")
    _check_public_part(fields[2][1], spec)


def _refuse_private_keys(public_context: bytes) -> None:
    """Refuse, by name and before anything else, a secret key or evaluation keys.

    A secret key must never reach the server; Galois and relinearisation keys
    are never needed by this computation.
    """
    fields = _unique_fields(public_context)
    if 3 in fields:
        raise HEError("The context holds a secret key; the server must never receive one.")
    if 2 in fields and fields[2][0] == 2 and {4, 5} & set(_unique_fields(fields[2][1])):
        raise HEError(
            "The context carries relinearisation or Galois keys; "
            "send a public context without them."
        )


def _check_public_part(public: bytes, spec: HEPreset) -> None:
    """The public part: a public key, flags and the preset's scale; no evaluation keys."""
    fields = _unique_fields(public)
    if set(fields) - {1, 2, 3} or fields.get(1, (None,))[0] != 2 or fields.get(3, (None,))[0] != 1:
        raise HEError("The context's public part is malformed or lacks a public key.")
    wire.check_seal_object(fields[1][1], "public key")
    if wire.as_double(fields[3][1]) != spec.scale:
        raise HEError(f"The context's scale is not the {spec.name!r} preset's.")


def _unique_fields(message: bytes) -> dict[int, tuple[int, object]]:
    """Protobuf fields by number; a repeated field (protobuf would merge it) is refused."""
    fields = wire.proto_fields(message)
    unique = {number: (kind, value) for number, kind, value in fields}
    if len(unique) != len(fields):
        raise HEError("The context repeats a field TenSEAL writes once.")
    return unique


def _check_vector_blob(blob: bytes, spec: HEPreset) -> None:
    """One CKKSVector protobuf: sizes, exactly one SEAL ciphertext, the preset's scale."""
    fields = wire.proto_fields(blob)
    layout = [(number, kind) for number, kind, _ in fields]
    if layout != [(1, 2), (2, 2), (3, 1)]:
        raise HEError("A ciphertext is not a single-chunk CKKS vector.")
    (sizes, ciphertext, scale) = (value for _, _, value in fields)
    if len(wire.packed_varints(sizes)) != 1:
        raise HEError("A ciphertext is not a single-chunk CKKS vector.")
    wire.check_seal_object(ciphertext, "ciphertext")
    if wire.as_double(scale) != spec.scale:
        raise HEError(f"A ciphertext's scale is not the {spec.name!r} preset's.")


def _load_public_context(public_context: bytes, spec: HEPreset) -> ts.Context:
    """Load a pre-checked public context and pin its flags for evaluation."""
    try:
        context = ts.context_from(public_context, n_threads=1)
    except Exception:
        raise HEError("The public context could not be parsed.") from None
    if context.is_private() or context.has_galois_keys() or context.has_relin_keys():
        raise HEError("The context holds keys the server must not receive.")
    if not context.has_public_key():
        raise HEError("The context lacks its public key.")
    if tuple(context.seal_context().data.key_parms_id()) != _reference_parms_id(spec.name):
        raise HEError(f"The context's parameters are not the {spec.name!r} preset's.")
    # Products stay at scale Δ² on the top level: no rescale, relin or mod switch.
    context.auto_rescale = False
    context.auto_relin = False
    context.auto_mod_switch = False
    return context


def _load_vector(context: ts.Context, blob: bytes, spec: HEPreset, size: int, scale: float):
    """Parse one pre-checked vector and check it is a fresh-shaped ciphertext of this context."""
    try:
        vector = ts.ckks_vector_from(context, blob)
        (ciphertext,) = vector.ciphertext()
    except Exception:
        raise HEError("A ciphertext could not be parsed under the supplied context.") from None
    top = context.seal_context().data.first_parms_id()
    if vector.size() != size or ciphertext.size() != 2 or ciphertext.parms_id() != top:
        raise HEError("A ciphertext has the wrong length, size or level for this request.")
    if ciphertext.scale != scale or not ciphertext.is_ntt_form:
        raise HEError("A ciphertext has the wrong scale or form for this request.")
    return vector


def _linear_output(columns: list, coef: np.ndarray, bias: float, spec: HEPreset) -> bytes:
    """``sum_j coef_j * x_j + bias`` on encrypted columns, serialized.

    Weights that round to zero at the preset's scale are skipped: SEAL refuses
    a product with a zero plaintext (a transparent ciphertext).
    """
    k = int(np.argmax(np.abs(coef)))
    try:
        total = (columns[k] + float(bias / coef[k])) * float(coef[k])
        for j in np.flatnonzero(np.abs(coef) * spec.scale >= 0.5):
            if j != k:
                total += columns[j] * float(coef[j])
        return total.serialize()
    except (ValueError, RuntimeError, TypeError, ArithmeticError):
        raise HEError("The request could not be evaluated under the supplied context.") from None


# --------------------------------------------------------------------------- HTTP body


def join_request_body(public_context: bytes, request: bytes) -> bytes:
    """The HTTP body of an evaluate call: 8-byte context length, context, request."""
    return _BODY_PREFIX.pack(len(public_context)) + public_context + request


def split_request_body(body: bytes) -> tuple[bytes, bytes]:
    """Split an evaluate body into (public context, request), checking sizes first."""
    if not isinstance(body, bytes | bytearray) or len(body) > MAX_BODY_BYTES:
        raise HEError(f"The request body must be bytes of at most {MAX_BODY_BYTES}.")
    if len(body) < _BODY_PREFIX.size:
        raise HEError("The request body is too short.")
    (length,) = _BODY_PREFIX.unpack_from(body)
    limit = max(p.max_context_bytes for p in PRESETS.values())
    if length > limit or _BODY_PREFIX.size + length > len(body):
        raise HEError("The request body's context length does not fit.")
    start = _BODY_PREFIX.size
    return bytes(body[start : start + length]), bytes(body[start + length :])
