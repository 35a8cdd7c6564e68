"""Two-party secure inference with a dealer: an approved model on a partner's rows.

The third serving mode beside :mod:`secure_compute.he` (linear models under
CKKS) and the enclave. The model owner (the TRE) holds the weights, the
partner holds the rows, and a dealer that sees neither supplies Beaver
triples and the other correlated randomness of CrypTen's trusted-third-party
provider; only the partner learns the outputs. The engine is CrypTen 0.4.1
(:mod:`secure_compute._crypten_compat`), its parties talk over mutual TLS
(:mod:`secure_compute.mpc_transport`), and each party runs in a process of its
own (:mod:`secure_compute.mpc_host` starts the owner's and the dealer's).

Folding (:func:`model_fold`, :func:`model_fold_file`) turns an approved model
into a public :class:`Architecture` (dense and ReLU layers, their sizes, how
outputs become predictions) and secret weights that never leave the owner's
process except as secret shares: linear models through
:func:`secure_compute.he.linear_model_fold` (scalers folded in), scikit-learn
``MLPClassifier`` with ReLU, and ONNX networks of Gemm, MatMul, Add and Relu.
Anything else is refused by name.

Arithmetic is CrypTen's fixed point: :data:`PRECISION_BITS` fractional bits in
a 64-bit ring. Each answer carries, per row, a bound on how far its logits can be
from the plaintext model's (:func:`row_error_bounds`); a decision whose logit
is closer to the threshold than that bound can differ from plaintext. See
``docs/mpc-inference.md`` for the trust model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from safe_model.exceptions import ModelRefused
from safe_model.sandbox import INTAKE_LIMITS, sandbox_call
from secure_compute import he
from secure_compute.exceptions import MPCError, MPCUnavailable, UnsupportedModel
from secure_compute.mpc_transport import DEALER, OWNER, PARTNER, Link, crypten_setup

#: Fractional bits of CrypTen's fixed-point encoding (its default).
PRECISION_BITS = 16
#: Most rows in one session, and most features, layers and units.
MAX_ROWS = 4096
MAX_FEATURES = 4096
MAX_LAYERS = 16
MAX_UNITS = 4096
#: Largest value a partner's input may hold, so that a product before truncation stays
#: far inside the 64-bit ring (see :func:`row_error_bounds` on truncation failures).
MAX_ABS_INPUT = 2.0**16
#: Most ring elements the dealer makes for one request (a 4096 x 4096 product).
MAX_DEALER_ELEMENTS = 2**24

OUTPUT_KINDS = ("logistic", "softmax", "linear_svm", "regression")
_DEALER_FUNCTIONS = {"additive": 3, "square": 1, "binary": 2, "wraps": 1, "B2A": 1}
_PRODUCTS = {"mul", "matmul"}


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Layer:
    """One public layer: ``"dense"`` (``n_in`` -> ``n_out``) or ``"relu"`` (sizes kept)."""

    kind: str
    n_in: int
    n_out: int


@dataclass(frozen=True)
class Architecture:
    """The public part of a folded model: what the partner needs to take part.

    Parameters
    ----------
    layers : tuple of Layer
    output : {"logistic", "softmax", "linear_svm", "regression"}
        How logits become predictions: one logistic logit (class 1 above 0), a
        softmax or one-vs-rest score per class (arg max), or values.
    classes : tuple or None
        Class labels, in the logits' order (a single logit: ``classes[1]`` above 0).
    feature_names : tuple of str or None
        The input's columns, in order, when the model knows them.
    """

    layers: tuple[Layer, ...]
    output: str
    classes: tuple | None = None
    feature_names: tuple[str, ...] | None = None

    @property
    def n_features(self) -> int:
        return self.layers[0].n_in

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].n_out

    def to_json(self) -> dict:
        return {
            "layers": [[layer.kind, layer.n_in, layer.n_out] for layer in self.layers],
            "output": self.output,
            "classes": None if self.classes is None else list(self.classes),
            "feature_names": None if self.feature_names is None else list(self.feature_names),
        }

    @classmethod
    def from_json(cls, data) -> Architecture:
        """Read an architecture from JSON as the service sends it; refuse anything malformed."""
        try:
            layers = tuple(Layer(str(k), int(i), int(o)) for k, i, o in data["layers"])
            classes = data.get("classes")
            names = data.get("feature_names")
            architecture = cls(
                layers=layers,
                output=str(data["output"]),
                classes=None if classes is None else tuple(classes),
                feature_names=None if names is None else tuple(str(n) for n in names),
            )
        except (KeyError, TypeError, ValueError):
            raise MPCError(
                "The model's architecture is not one secure inference can read."
            ) from None
        architecture_check(architecture)
        return architecture

    def sha256(self) -> str:
        """What both sides compare before a session: the same public model."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class FoldedModel:
    """A model as secure inference runs it; ``weights`` stay in the owner's process.

    ``weights`` holds one ``(W, b)`` per dense layer, ``W`` of shape (n_in, n_out).
    """

    architecture: Architecture
    weights: tuple[tuple[np.ndarray, np.ndarray], ...] = field(repr=False)


def architecture_check(architecture: Architecture) -> None:
    """Refuse a layer list secure inference does not run (sizes chained, kinds known)."""
    layers = architecture.layers
    if (
        not 1 <= len(layers) <= MAX_LAYERS
        or layers[0].kind != "dense"
        or layers[-1].kind != "dense"
    ):
        raise MPCError(
            f"A served model has 1 to {MAX_LAYERS} layers, from a dense one to a dense one."
        )
    if architecture.output not in OUTPUT_KINDS:
        raise MPCError(f"A served model's output is one of {', '.join(OUTPUT_KINDS)}.")
    for before, layer in zip((None, *layers), layers, strict=False):
        if layer.kind not in ("dense", "relu"):
            raise MPCError(f"A {layer.kind} layer is not one secure inference runs.")
        if not (1 <= layer.n_in <= MAX_UNITS and 1 <= layer.n_out <= MAX_UNITS):
            raise MPCError(f"A layer has 1 to {MAX_UNITS} inputs and outputs.")
        if layer.kind == "relu" and layer.n_in != layer.n_out:
            raise MPCError("A ReLU keeps its size.")
        if before is not None and before.n_out != layer.n_in:
            raise MPCError("The model's layers do not chain: a layer's outputs feed the next.")
    if architecture.classes is not None:
        n = architecture.n_outputs
        if len(architecture.classes) != (2 if n == 1 else n):
            raise MPCError("The model's classes do not match its outputs.")


def _folded(layers: list[Layer], weights: list, **public) -> FoldedModel:
    model = FoldedModel(Architecture(layers=tuple(layers), **public), tuple(weights))
    architecture_check(model.architecture)
    for W, b in model.weights:
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise MPCError("The model's weights are not finite.")
    return model


def _dense_stack(dense: list[tuple[np.ndarray, np.ndarray]]) -> list[Layer]:
    layers: list[Layer] = []
    for index, (W, _) in enumerate(dense):
        if index:
            layers.append(Layer("relu", W.shape[0], W.shape[0]))
        layers.append(Layer("dense", W.shape[0], W.shape[1]))
    return layers


# --------------------------------------------------------------------------- folding


#: The declared layers (:mod:`attacks.nn.schema` types) whose ONNX export folds: Linear
#: becomes Gemm or MatMul and Add, Dropout is gone from the export, Flatten is a no-op.
FOLDABLE_LAYERS = ("Linear", "ReLU", "Dropout", "Flatten")


def foldable_by_name(
    model_class: str,
    step_classes: Sequence[str] = (),
    *,
    activation: str | None = None,
    layers: Sequence[str] | None = None,
) -> bool:
    """Whether :func:`model_fold` takes a model so named, after these steps.

    A cheap first answer from a report's model summary, as
    :func:`secure_compute.he.foldable_by_name` gives for HE, so a page offers secure
    inference only for what it can serve; folding the model still decides.

    Parameters
    ----------
    model_class : str
        The final estimator's class name, such as ``"MLPClassifier"`` or
        ``"OnnxClassifier"``.
    step_classes : sequence of str, default=()
        The class names of the pipeline steps before it.
    activation : str, optional
        An ``MLPClassifier``'s ``activation``; None if not known.
    layers : sequence of str, optional
        An ONNX network's declared layer types, in order; None if not declared.

    Returns
    -------
    bool
    """
    if model_class == "OnnxClassifier":
        return layers is None or all(layer in FOLDABLE_LAYERS for layer in layers)
    if model_class == "MLPClassifier":
        return activation in (None, "relu") and he.scalers_by_name(step_classes)
    return he.foldable_by_name(model_class, step_classes)


def model_fold(model) -> FoldedModel:
    """Fold a fitted model into public layers and secret weights.

    Parameters
    ----------
    model : estimator, Pipeline or OnnxClassifier
        A linear model (or scaler pipeline) :func:`secure_compute.he.linear_model_fold`
        takes; an ``MLPClassifier`` with ``activation="relu"``, alone or after
        scalers; or an :class:`~safe_model.onnx_model.OnnxClassifier` whose graph
        is Gemm, MatMul, Add and Relu nodes in a chain (a final Softmax is dropped:
        the partner gets logits).

    Returns
    -------
    FoldedModel

    Raises
    ------
    MPCError
        For any other model, naming what it is.
    """
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline

    from safe_model.onnx_model import OnnxClassifier

    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    if isinstance(final, OnnxClassifier):
        return _onnx_fold(final)
    if isinstance(final, MLPClassifier):
        return _mlp_fold(model)
    try:
        weights = he.linear_model_fold(model)
    except UnsupportedModel as exc:
        name = type(final).__name__
        if "is not a linear model" not in str(exc):
            raise MPCError(str(exc)) from None
        raise MPCError(
            f"A {name} cannot be served by secure inference: only linear models, "
            "MLPClassifier with ReLU and ONNX networks of Gemm, MatMul, Add and Relu can; "
            "serve it in an attested enclave instead."
        ) from None
    kind = "softmax" if weights.kind == "logistic" and weights.n_outputs > 1 else weights.kind
    classes = None if weights.classes is None else tuple(np.asarray(weights.classes).tolist())
    return _folded(
        [Layer("dense", weights.n_features, weights.n_outputs)],
        [(weights.coef.T.copy(), weights.intercept.copy())],
        output=kind,
        classes=classes,
        feature_names=weights.feature_names,
    )


def _mlp_fold(model) -> FoldedModel:
    from sklearn.pipeline import Pipeline

    steps = model.steps if isinstance(model, Pipeline) else [("model", model)]
    mlp = steps[-1][1]
    if mlp.activation != "relu":
        raise MPCError(
            f"An MLPClassifier with activation={mlp.activation!r} cannot be served by secure "
            "inference: only activation='relu' can."
        )
    if not hasattr(mlp, "coefs_"):
        raise MPCError("The MLPClassifier is not fitted.")
    try:
        scale, shift = he._fold_scalers([step for _, step in steps[:-1]], mlp.n_features_in_)
    except UnsupportedModel as exc:
        raise MPCError(str(exc).replace("HE weights", "secure-inference weights")) from None
    dense = [
        (np.asarray(W, float), np.asarray(b, float))
        for W, b in zip(mlp.coefs_, mlp.intercepts_, strict=True)
    ]
    W0, b0 = dense[0]
    dense[0] = (W0 * scale[:, None], b0 + shift @ W0)
    output = "logistic" if mlp.out_activation_ == "logistic" else "softmax"
    if mlp.out_activation_ not in ("logistic", "softmax"):
        raise MPCError(
            f"An MLPClassifier whose output is {mlp.out_activation_} is not a classifier."
        )
    return _folded(
        _dense_stack(dense),
        dense,
        output=output,
        classes=tuple(np.asarray(mlp.classes_).tolist()),
        feature_names=he._feature_names(model),
    )


def _onnx_fold(classifier) -> FoldedModel:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_model_from_string(bytes(classifier.model_bytes)).graph
    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in constants]
    if len(inputs) != 1:
        raise MPCError("An ONNX model served by secure inference reads one input tensor.")
    current, dense, pending = inputs[0].name, [], None
    nodes = list(graph.node)
    for node in nodes:
        if current not in node.input:
            raise MPCError(
                "The ONNX graph is not one chain of layers, which secure inference needs."
            )
        if node.op_type == "Gemm":
            dense.append(_gemm(node, current, constants))
        elif node.op_type == "MatMul":
            weight = _constant_other(node, current, constants)
            dense.append((weight.astype(float), np.zeros(weight.shape[1])))
            pending = len(dense) - 1
        elif node.op_type == "Add" and pending == len(dense) - 1 and dense:
            W, b = dense[-1]
            dense[-1] = (W, b + np.broadcast_to(_constant_other(node, current, constants), b.shape))
            pending = None
        elif node.op_type == "Relu":
            dense.append(None)
        elif node.op_type == "Softmax" and node is nodes[-1]:
            pass  # logits are served; the arg max is the same
        elif node.op_type in ("Identity", "Flatten"):
            pass
        else:
            raise MPCError(
                f"The ONNX model uses {node.op_type}, which secure inference cannot evaluate: only "
                "Gemm, MatMul, Add and Relu layers can be served; serve it in an attested "
                "enclave instead."
            )
        current = node.output[0]
    weights, layers, after_dense = [], [], False
    for item in dense:
        if item is None:
            if not after_dense:
                raise MPCError("A Relu in the ONNX graph does not follow a dense layer.")
            layers.append(Layer("relu", layers[-1].n_out, layers[-1].n_out))
            after_dense = False
            continue
        W, b = item
        layers.append(Layer("dense", W.shape[0], W.shape[1]))
        weights.append((W, b))
        after_dense = True
    if not weights:
        raise MPCError("The ONNX graph has no dense layer.")
    classes = tuple(np.asarray(classifier.classes_).tolist())
    n_out = layers[-1].n_out
    return _folded(layers, weights, output="softmax" if n_out > 1 else "logistic", classes=classes)


def _gemm(node, current: str, constants: dict) -> tuple[np.ndarray, np.ndarray]:
    attributes = {a.name: a for a in node.attribute}
    if node.input[0] != current or attributes.get("transA") and attributes["transA"].i:
        raise MPCError("A Gemm in the ONNX graph must multiply its input, not a transposed one.")
    if node.input[1] not in constants:
        raise MPCError("A Gemm's weights in the ONNX graph must be constants.")
    W = constants[node.input[1]].astype(float)
    if "transB" in attributes and attributes["transB"].i:
        W = W.T
    alpha = attributes["alpha"].f if "alpha" in attributes else 1.0
    beta = attributes["beta"].f if "beta" in attributes else 1.0
    b = np.zeros(W.shape[1])
    if len(node.input) > 2 and node.input[2]:
        if node.input[2] not in constants:
            raise MPCError("A Gemm's bias in the ONNX graph must be a constant.")
        b = np.broadcast_to(constants[node.input[2]].astype(float) * beta, (W.shape[1],)).copy()
    return W * alpha, b


def _constant_other(node, current: str, constants: dict) -> np.ndarray:
    others = [name for name in node.input if name != current]
    if len(others) != 1 or others[0] not in constants or node.input[0] != current:
        raise MPCError(f"A {node.op_type} in the ONNX graph must take its input and one constant.")
    return np.asarray(constants[others[0]])


def model_fold_file(
    data: bytes, *, filename: str = "model.skops", labels=None, output: str = "probabilities"
) -> FoldedModel:
    """Load an untrusted model file and fold it, in a sandbox process.

    ``labels`` and ``output`` are an ONNX model's, as :func:`safe_model.loader.load_model`
    reads them. Only the layer list and weights come back, checked again here.

    Raises
    ------
    MPCError
        If the file is refused, cannot be served, or crashed, hung or overran the sandbox.
    """
    try:
        parts = sandbox_call(
            "secure_compute.mpc:_fold_in_child",
            kwargs={"data": data, "filename": filename, "labels": labels, "output": output},
            limits=INTAKE_LIMITS,
            reraise=(MPCError, ModelRefused),
        )
    except ModelRefused as exc:
        raise MPCError(str(exc)) from None
    try:
        architecture = Architecture.from_json(parts["architecture"])
        weights = tuple(
            (np.asarray(W, dtype=float), np.asarray(b, dtype=float)) for W, b in parts["weights"]
        )
    except (KeyError, TypeError, ValueError):
        raise MPCError("The model's folded weights came back inconsistent.") from None
    dense = [layer for layer in architecture.layers if layer.kind == "dense"]
    if len(dense) != len(weights) or any(
        W.shape != (layer.n_in, layer.n_out) or b.shape != (layer.n_out,)
        for layer, (W, b) in zip(dense, weights, strict=True)
    ):
        raise MPCError("The model's folded weights came back inconsistent.")
    return _folded(list(architecture.layers), list(weights), **_public(architecture))


def _public(architecture: Architecture) -> dict:
    return {
        "output": architecture.output,
        "classes": architecture.classes,
        "feature_names": architecture.feature_names,
    }


def _fold_in_child(*, data: bytes, filename: str, labels, output: str) -> dict:
    from safe_model.loader import load_model

    model = load_model(data, filename=filename, labels=labels, output=output)
    folded = model_fold(model)
    return {
        "architecture": folded.architecture.to_json(),
        "weights": [[W, b] for W, b in folded.weights],
    }


# --------------------------------------------------------------------------- precision


def layer_norms(model: FoldedModel) -> list[float]:
    """Each dense layer's ``max_j sum_i |W_ij|``: all the owner tells the partner for the bound.

    One number per layer, the largest total weight into one unit: it bounds how
    an input error grows through the layer and says nothing of single weights.
    """
    return [float(np.abs(W).sum(axis=0).max()) for W, _ in model.weights]


def row_error_bounds(
    norms: Sequence[float],
    X: np.ndarray,
    relu_sums: Sequence[np.ndarray],
    *,
    precision_bits: int = PRECISION_BITS,
) -> np.ndarray:
    """Per row, how far the revealed logits can be from the plaintext model's.

    Fixed point stores each value to ``d = 2**-precision_bits``, truncating: an
    input, weight or bias is encoded with an error below ``d``, and each
    product's truncation adds below ``2 d`` (the two parties truncate their
    shares separately). Through a dense layer ``W`` whose computed inputs
    ``x~`` are within ``e`` of the true ones, ``W~ x~ - W x = W (x~ - x) + (W~ -
    W) x~``, so the output error is below ``A e + d sum_i |x~_i| + 3 d`` with
    ``A`` the layer's norm (:func:`layer_norms`). A ReLU is evaluated exactly
    and is 1-Lipschitz, so it keeps ``e``. ``sum_i |x~_i|`` is the row's own
    for the first layer and, after a ReLU, the revealed sum of that ReLU's
    outputs. The bound holds except when CrypTen's two-party truncation fails
    by a ring wrap, with probability about ``|v| 2**-64`` for a value ``v`` at
    scale ``2**(2 precision_bits)``: about ``2**-27`` per output for breast-cancer
    features of up to 4,300.
    """
    d = 2.0**-precision_bits
    error = np.full(X.shape[0], d)
    totals = [np.abs(X).sum(axis=1), *relu_sums]
    for norm, total in zip(norms, totals, strict=True):
        error = norm * error + d * np.asarray(total, dtype=float) + 3 * d
    return error


# --------------------------------------------------------------------------- the parties


@dataclass(frozen=True)
class SessionStats:
    """What one party's links carried in a session: bytes and frames, each way."""

    bytes_sent: int
    bytes_received: int
    rounds: int

    @classmethod
    def of(cls, links: dict[int, Link]) -> SessionStats:
        stats = [link.stats for link in links.values()]
        return cls(
            bytes_sent=sum(s.bytes_sent for s in stats),
            bytes_received=sum(s.bytes_received for s in stats),
            rounds=sum(s.frames_sent for s in stats),
        )


@dataclass(frozen=True)
class Prediction:
    """What the partner learns: logits, predictions and the logit error bound."""

    logits: np.ndarray
    predictions: np.ndarray
    error_bounds: np.ndarray
    stats: SessionStats

    @property
    def error_bound(self) -> float:
        """The largest row's logit error bound."""
        return float(self.error_bounds.max())

    def settled(self) -> np.ndarray:
        """True where a row's logits are further from a decision than its bound: the
        plaintext model decides the same."""
        return _margin(self.logits) > self.error_bounds


def _margin(logits: np.ndarray) -> np.ndarray:
    if logits.shape[1] == 1:
        return np.abs(logits[:, 0])
    top = np.sort(logits, axis=1)
    return (top[:, -1] - top[:, -2]) / 2


def predictions_of(architecture: Architecture, logits: np.ndarray) -> np.ndarray:
    """Turn revealed logits into predictions as the plaintext model would."""
    if architecture.output == "regression":
        return logits[:, 0] if logits.shape[1] == 1 else logits
    classes = np.asarray(
        architecture.classes if architecture.classes else range(max(2, logits.shape[1]))
    )
    if logits.shape[1] == 1:
        return classes[(logits[:, 0] > 0).astype(int)]
    return classes[np.argmax(logits, axis=1)]


def rows_check(architecture: Architecture, X) -> np.ndarray:
    """The partner's rows as a float matrix secure inference can take, or one sentence why not."""
    try:
        array = np.asarray(X, dtype=float)
    except (TypeError, ValueError):
        raise MPCError("The rows hold values that are not numbers.") from None
    if array.ndim != 2 or array.shape[1] != architecture.n_features:
        width = array.shape[1] if array.ndim == 2 else "no"
        raise MPCError(f"The rows have {width} columns; the model reads {architecture.n_features}.")
    if not 1 <= array.shape[0] <= MAX_ROWS:
        raise MPCError(f"A secure-inference call takes 1 to {MAX_ROWS} rows, not {array.shape[0]}.")
    if not np.isfinite(array).all():
        raise MPCError("The rows hold missing or infinite values; secure inference needs numbers.")
    if np.abs(array).max() > MAX_ABS_INPUT:
        raise MPCError(
            f"The rows hold values beyond ±{MAX_ABS_INPUT:g}, too large for fixed point."
        )
    return array


def _crypten_session(rank: int, links: dict[int, Link], precision_bits: int):
    import torch

    torch.set_num_threads(1)
    crypten = crypten_setup(rank, links, precision_bits=precision_bits)
    crypten.init()
    return crypten, torch


def owner_session(
    model: FoldedModel,
    links: dict[int, Link],
    *,
    max_rows: int,
    precision_bits: int = PRECISION_BITS,
) -> tuple[int, SessionStats]:
    """The model owner's part of one session; returns the rows served and what crossed.

    ``links`` reach the partner and the dealer. The partner first says how many
    rows it brings (at most ``max_rows``, its certificate's) and the architecture
    it expects; the owner answers with one norm per dense layer
    (:func:`layer_norms`, for the partner's error bound), then both run the
    model under CrypTen.
    """
    partner = links[PARTNER]
    n_rows = _hello_check(partner.receive_object(), model.architecture, max_rows)
    partner.send_object({"layer_norms": layer_norms(model)})
    crypten, torch = _crypten_session(OWNER, links, precision_bits)
    x = torch.zeros((n_rows, model.architecture.n_features))
    shares = _forward(crypten, torch, model.architecture, model.weights, x, rank=OWNER)
    crypten.communicator.get().reduce(shares, PARTNER, batched=True)
    links[DEALER].send_object("terminate")
    return n_rows, SessionStats.of(links)


def _hello_check(hello, architecture: Architecture, max_rows: int) -> int:
    if not isinstance(hello, dict):
        raise MPCError("The partner's first message is not a session hello.")
    if hello.get("architecture") != architecture.sha256():
        raise MPCError("The partner expects another model than this endpoint serves.")
    n_rows = hello.get("n_rows")
    if not isinstance(n_rows, int) or not 1 <= n_rows <= min(max_rows, MAX_ROWS):
        raise MPCError(f"The partner may send 1 to {min(max_rows, MAX_ROWS)} rows in this session.")
    return n_rows


def partner_session(
    architecture: Architecture,
    X: np.ndarray,
    links: dict[int, Link],
    *,
    precision_bits: int = PRECISION_BITS,
) -> Prediction:
    """The partner's part of one session: share the rows, learn the logits."""
    X = rows_check(architecture, X)
    owner = links[OWNER]
    owner.send_object({"n_rows": int(X.shape[0]), "architecture": architecture.sha256()})
    answer = owner.receive_object()
    norms = answer.get("layer_norms") if isinstance(answer, dict) else None
    n_dense = sum(layer.kind == "dense" for layer in architecture.layers)
    if not (
        isinstance(norms, list)
        and len(norms) == n_dense
        and all(isinstance(n, int | float) and math.isfinite(n) and n >= 0 for n in norms)
    ):
        raise MPCError("The model owner's answer to the session hello is malformed.")
    crypten, torch = _crypten_session(PARTNER, links, precision_bits)
    x = torch.from_numpy(X.astype(np.float64))
    shares = _forward(crypten, torch, architecture, None, x, rank=PARTNER)
    revealed = crypten.communicator.get().reduce(shares, PARTNER, batched=True)
    values = [_decode(ring, precision_bits) for ring in revealed]
    logits = values[0].reshape(X.shape[0], architecture.n_outputs)
    bounds = row_error_bounds(norms, X, values[1:], precision_bits=precision_bits)
    return Prediction(
        logits=logits,
        predictions=predictions_of(architecture, logits),
        error_bounds=bounds,
        stats=SessionStats.of(links),
    )


def _forward(crypten, torch, architecture, weights, x, *, rank):
    """Run the layers on shares; return this party's shares (ring elements) of what the
    partner learns: the logits, then each ReLU's per-row output sum (for the error bound)."""
    encrypted = crypten.cryptensor(x.float(), src=PARTNER)
    dense, relu_sums = iter(weights or ()), []
    for layer in architecture.layers:
        if layer.kind == "relu":
            encrypted = encrypted.relu()
            relu_sums.append(encrypted.sum(dim=1)._tensor.share)
            continue
        if rank == OWNER:
            W, b = next(dense)
            W, b = torch.from_numpy(W).float(), torch.from_numpy(b).float()
        else:  # the partner knows only the shapes
            W, b = torch.zeros((layer.n_in, layer.n_out)), torch.zeros(layer.n_out)
        encrypted = encrypted.matmul(crypten.cryptensor(W, src=OWNER)) + crypten.cryptensor(
            b, src=OWNER
        )
    return [encrypted._tensor.share, *relu_sums]


def _decode(ring, precision_bits: int) -> np.ndarray:
    values = ring.numpy().astype(np.int64)
    return values.astype(np.float64) / float(2**precision_bits)


def dealer_session(links: dict[int, Link]) -> int:
    """The dealer's part of one session; returns how many requests it answered.

    It seeds each computing party's generator, then answers the owner's requests
    for correlated randomness until the owner says ``"terminate"``. It never
    receives a share of anyone's data: only sizes and the names of products.
    """
    from secure_compute._crypten_compat import crypten_module

    crypten_module()
    import torch
    from crypten.mpc.provider.ttp_provider import TTPServer

    torch.set_num_threads(1)
    server = TTPServer.__new__(TTPServer)  # its arithmetic, not its torch.distributed loop
    server.device = "cpu"
    server.generators, server.generators_cuda = [], [None, None]
    for rank in (OWNER, PARTNER):
        seed = int.from_bytes(os.urandom(8), "big", signed=True)
        generator = torch.Generator(device="cpu")
        generator.manual_seed(seed)
        server.generators.append(generator)
        links[rank].send_tensor(torch.tensor(seed, dtype=torch.long))
    owner, answered = links[OWNER], 0
    while True:
        message = owner.receive_object()
        if message == "terminate":
            return answered
        function, args = _dealer_request(message)
        result = getattr(server, function)(*args)
        owner.send_object(result.size())
        owner.send_tensor(result)
        answered += 1


def _dealer_request(message) -> tuple[str, tuple]:
    """Check one request for correlated randomness: a known function, sizes within limits."""
    import torch

    if not isinstance(message, dict) or set(message) != {"function", "device", "args", "kwargs"}:
        raise MPCError("The model owner's request to the dealer is malformed.")
    function, args = message["function"], message["args"]
    if function not in _DEALER_FUNCTIONS or message["device"] not in (None, "cpu"):
        raise MPCError("The model owner asked the dealer for something it does not make.")
    if message["kwargs"] or not isinstance(args, tuple) or len(args) != _DEALER_FUNCTIONS[function]:
        raise MPCError(f"The model owner's {function} request to the dealer is malformed.")
    sizes = args[:2] if function in ("additive", "binary") else args[:1]
    for size in sizes:
        if not isinstance(size, torch.Size) or math.prod(size) > MAX_DEALER_ELEMENTS:
            raise MPCError(f"The model owner's {function} request asks for too many values.")
    if function == "additive" and args[2] not in _PRODUCTS:
        raise MPCError(
            "The model owner asked the dealer for a product secure inference never uses."
        )
    return function, args


def plaintext_logits(model: FoldedModel, X: Sequence) -> np.ndarray:
    """The folded model run in the clear (float64): what secure inference approximates."""
    out = np.asarray(X, dtype=float)
    dense = iter(model.weights)
    for layer in model.architecture.layers:
        if layer.kind == "relu":
            out = np.maximum(out, 0.0)
        else:
            W, b = next(dense)
            out = out @ W + b
    return out


__all__ = [
    "Architecture",
    "FoldedModel",
    "Layer",
    "MPCError",
    "MPCUnavailable",
    "Prediction",
    "SessionStats",
    "dealer_session",
    "layer_norms",
    "model_fold",
    "model_fold_file",
    "owner_session",
    "partner_session",
    "plaintext_logits",
    "predictions_of",
    "row_error_bounds",
    "rows_check",
]
