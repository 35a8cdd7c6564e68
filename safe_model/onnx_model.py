"""A checked ONNX graph seen by the attacks as a fitted scikit-learn classifier.

:class:`OnnxClassifier` holds the file's bytes, never an onnxruntime session: a
session cannot cross the sandbox's wire or a pickle, so each process builds its own
on first use, after :func:`~safe_model.onnx_check.check_onnx_model` passed. The
session runs on CPU only, with no custom-op library, the graph optimisations on and
``n_threads`` threads, and only inside the sandbox when the bytes are an upload
(:func:`safe_model.loader.load_model` is what the sandboxed intake calls).

The graph must read one float32 tensor, a batch of records whose other dimensions
are fixed: each record's flat features (a table's columns, in order) are reshaped
to them, so 64 pixel columns feed a [N, 1, 8, 8] CNN. It must write one float
tensor of shape (n, n_classes), the declared ``output`` kind: "probabilities" are
checked to be probabilities, "logits" go through a softmax. Column k is the k-th
class of ``classes``, the sorted training labels (as scikit-learn's ``classes_``,
whose order skl2onnx keeps). A plain skl2onnx export is accepted as it is: its
ZipMap (probabilities as a sequence of maps) is taken off, so the probability
tensor under it is the output, and its label output is dropped, as is any integer
or text output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import pandas as pd
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin

from safe_model.exceptions import ModelRefused
from safe_model.onnx_check import PROTOBUF_MAX_BYTES, check_onnx_model
from safe_model.refusal import checked_bytes, quote, reason

#: What the graph's output holds, as declared with the model.
OUTPUT_KINDS = ("probabilities", "logits")

#: Most records per run, and most input numbers per run: a run holds a batch's
#: activations at once, so a CNN on large images runs fewer records at a time.
MAX_BATCH_ROWS = 1024
MAX_BATCH_ELEMENTS = 2**22

#: Most numbers in one record's input (3 x 2048 x 2048 images fit).
MAX_INPUT_ELEMENTS = 2**24

#: How far declared probabilities may stray from [0, 1] and from summing to 1:
#: float32 rounding over a thousand classes stays below 1e-4.
PROBABILITY_TOLERANCE = 1e-3

_SCORE_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE})


def load_onnx_classifier(
    data: bytes,
    *,
    classes: Any,
    output: str = "probabilities",
    max_bytes: int,
    n_threads: int = 1,
) -> OnnxClassifier:
    """Check an untrusted ONNX file and return it as a classifier, run once on zeros.

    The trial run refuses, before any data is read, a graph whose output is not
    (n, n_classes), has a column count other than ``len(classes)``, or, declared
    as probabilities, does not give probabilities.

    Parameters
    ----------
    data : bytes
        Content of the uploaded file.
    classes : array-like of shape (n_classes,)
        The labels, sorted: see :func:`classes_from_labels`.
    output : {"probabilities", "logits"}, default="probabilities"
        What the graph's output holds.
    max_bytes : int
        Largest accepted file.
    n_threads : int, default=1
        onnxruntime's intra- and inter-op threads.

    Returns
    -------
    OnnxClassifier

    Raises
    ------
    ModelRefused
        With one sentence, as :func:`~safe_model.onnx_check.check_onnx_model`, or
        for any reason given in this module's docstring.
    """
    data = checked_bytes(data, max_bytes=max_bytes, what="model file", error=ModelRefused)
    model = OnnxClassifier(data, classes=classes, output=output, n_threads=n_threads)
    runner = model._onnx_runner()
    model.predict_proba(np.zeros((runner.batch or 2, runner.n_features), dtype=np.float32))
    return model


def classes_from_labels(labels: Any) -> np.ndarray:
    """The classes an ONNX model's output columns stand for: the labels' distinct values, sorted.

    Parameters
    ----------
    labels : array-like of shape (n_records,)
        The training labels; missing ones are left out (the intake refuses them).

    Returns
    -------
    ndarray of shape (n_classes,)

    Raises
    ------
    ModelRefused
        If the labels mix numbers and text, which have no order.
    """
    values = pd.unique(pd.Series(labels).dropna())
    try:
        return np.sort(np.asarray(values))
    except TypeError:
        raise ModelRefused(
            "The training labels mix numbers and text, so they cannot name an ONNX "
            "model's output columns in order."
        ) from None


class OnnxClassifier(ClassifierMixin, BaseEstimator):
    """A trained network (or exported scikit-learn model) in ONNX, used as a classifier.

    It is fitted already: nothing here trains, and ``fit`` does not exist. Build
    it from an upload with :func:`load_onnx_classifier`, which runs the graph once.

    Parameters
    ----------
    model_bytes : bytes
        The ONNX file. It is checked again whenever a process builds its session.
    classes : array-like of shape (n_classes,)
        The labels of the output's columns, in order.
    output : {"probabilities", "logits"}, default="probabilities"
        What the output holds; logits are turned into probabilities by a softmax.
    n_threads : int, default=1
        onnxruntime's intra- and inter-op threads. Audits already run in parallel
        processes, so one thread each does not oversubscribe the machine.
    shadow_template : estimator or None, default=None
        An unfitted estimator that trains as the released model was trained (built
        from the declared architecture and recipe). Shadow models are clones of
        it (:func:`attacks.shadows.training_template`); with None the attacks that
        need shadows are not run, as there is nothing to retrain.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        ``classes`` as an array.
    n_features_in_ : int
        Flat features per record: the product of the input's non-batch dimensions.
    """

    def __init__(
        self, model_bytes, *, classes, output="probabilities", n_threads=1, shadow_template=None
    ):
        self.model_bytes = model_bytes
        self.classes = classes
        self.output = output
        self.n_threads = n_threads
        self.shadow_template = shadow_template

    @property
    def classes_(self) -> np.ndarray:
        return np.asarray(self.classes)

    @property
    def n_features_in_(self) -> int:
        return self._onnx_runner().n_features

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, one row per record and one column per class.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_records, n_features_in_)
            Flat numeric features, cast to float32.

        Returns
        -------
        ndarray of float64, shape (n_records, n_classes)

        Raises
        ------
        ModelRefused
            If the graph fails, or its output is not what was declared.
        """
        runner = self._onnx_runner()
        scores = runner.scores(_records(X, runner))
        return _probabilities(scores, output=self.output, n_classes=len(self.classes_))

    def predict(self, X) -> np.ndarray:
        """The most probable class of each record.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_records, n_features_in_)

        Returns
        -------
        ndarray of shape (n_records,)
        """
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def _onnx_runner(self) -> _Runner:
        runner = self.__dict__.get("_runner")
        if runner is None:
            runner = self._runner = _runner_of(
                self.model_bytes, n_classes=len(self.classes_), n_threads=self.n_threads
            )
        return runner

    def __getstate__(self):
        state = dict(super().__getstate__())  # object's is the live __dict__
        state.pop("_runner", None)  # a session does not pickle: the next process builds one
        return state


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class _Runner:
    """A process's session of one graph and what feeding it takes."""

    session: Any
    input_name: str
    dims: tuple[int, ...]  # the input's dimensions after the batch
    batch: int | None  # a batch size fixed by the graph, or None when it is free
    output_name: str

    @property
    def n_features(self) -> int:
        return math.prod(self.dims)

    def scores(self, X: np.ndarray) -> np.ndarray:
        rows = self.batch or max(1, min(MAX_BATCH_ROWS, MAX_BATCH_ELEMENTS // self.n_features))
        return np.concatenate([self._run(X[i : i + rows]) for i in range(0, len(X), rows)])

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        n = len(chunk)
        if self.batch:  # the graph takes exactly this many: pad with zero records
            chunk = np.concatenate([chunk, np.zeros((self.batch - n, *self.dims), np.float32)])
        try:
            (out,) = self.session.run([self.output_name], {self.input_name: chunk})
        except Exception as exc:
            raise ModelRefused(f"The ONNX model failed to run: {reason(exc)}.") from None
        out = np.asarray(out)
        if out.ndim != 2 or len(out) != len(chunk):
            raise ModelRefused(
                f"The ONNX model's output has shape {_shape_text(out.shape)} for {len(chunk)} "
                "records; one row of scores per record, shape (n, n_classes), is needed."
            )
        return out[:n]


def _runner_of(model_bytes: bytes, *, n_classes: int, n_threads: int) -> _Runner:
    model = check_onnx_model(model_bytes, max_bytes=PROTOBUF_MAX_BYTES)
    input_name, batch, dims = _graph_input(model.graph)
    output_name = _scores_output(model.graph, n_classes=n_classes)
    return _Runner(_session(model, n_threads), input_name, dims, batch, output_name)


def _session(model: onnx.ModelProto, n_threads: int) -> Any:
    # imported here, not at the top: importing onnxruntime starts a thread, and the
    # sandbox's zygote imports this module and must be single-threaded when it forks
    import onnxruntime as ort

    if isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 1:
        raise ValueError("n_threads must be a positive integer")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = n_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.use_deterministic_compute = True  # the same seed gives the same report
    options.log_severity_level = 3  # errors only; they are raised as sentences anyway
    options.add_session_config_entry("session.load_model_format", "ONNX")
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(
            model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise ModelRefused(f"onnxruntime could not load the ONNX model: {reason(exc)}.") from None


def _records(X: Any, runner: _Runner) -> np.ndarray:
    """Flat features as float32 records of the graph input's shape."""
    try:
        X = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError):
        raise ModelRefused("An ONNX model takes numeric features only.") from None
    if X.ndim != 2 or X.shape[1] != runner.n_features or not len(X):
        raise ModelRefused(
            f"The ONNX model takes {runner.n_features} features per record (its input is "
            f"{_shape_text(runner.dims)}); the data has shape {_shape_text(X.shape)}."
        )
    return X.reshape(len(X), *runner.dims)


def _probabilities(scores: np.ndarray, *, output: str, n_classes: int) -> np.ndarray:
    if output not in OUTPUT_KINDS:
        raise ModelRefused(
            f"The declared output must be 'probabilities' or 'logits', not {quote(output)}."
        )
    if scores.shape[1] != n_classes:
        raise _classes_refusal(scores.shape[1], n_classes)
    scores = scores.astype(np.float64)
    if not np.isfinite(scores).all():
        raise ModelRefused("The ONNX model gave scores that are not finite numbers.")
    if output == "logits":
        return softmax(scores, axis=1)
    in_range = ((scores >= -PROBABILITY_TOLERANCE) & (scores <= 1 + PROBABILITY_TOLERANCE)).all()
    if not in_range or (np.abs(scores.sum(axis=1) - 1) > PROBABILITY_TOLERANCE).any():
        raise ModelRefused(
            "The ONNX model's outputs are not probabilities (each in [0, 1], each row "
            "summing to 1); if they are logits, declare the output as 'logits'."
        )
    return np.clip(scores, 0.0, 1.0)


def _classes_refusal(n_scores: int, n_classes: int) -> ModelRefused:
    return ModelRefused(
        f"The ONNX model gives {n_scores} scores per record but the training labels have "
        f"{n_classes} classes; its output needs one column per class."
    )


def _shape_text(dims) -> str:
    return " x ".join(str(d) for d in dims) or "a scalar"


# --------------------------------------------------------------------------- the graph


def _graph_input(graph: onnx.GraphProto) -> tuple[str, int | None, tuple[int, ...]]:
    """The one real input's name, fixed batch size (None if free) and record dimensions."""
    initialised = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initialised]
    if len(inputs) != 1:
        raise ModelRefused(
            f"The ONNX model has {len(inputs)} inputs; one float32 tensor input is needed."
        )
    value = inputs[0]
    tensor = value.type.tensor_type
    is_tensor = value.type.WhichOneof("value") == "tensor_type"
    if not is_tensor or tensor.elem_type != onnx.TensorProto.FLOAT:
        raise ModelRefused("The ONNX model's input must be a float32 tensor.")
    dims = list(tensor.shape.dim)
    if len(dims) < 2:
        raise ModelRefused(
            "The ONNX model's input must have a batch dimension followed by the dimensions "
            "of one record."
        )
    free = [d.dim_param or "?" for d in dims[1:] if not d.HasField("dim_value")]
    if free or any(d.dim_value < 1 for d in dims[1:]):
        raise ModelRefused(
            f"The ONNX model's input {quote(value.name)} has dimensions that are not fixed "
            "besides the batch; export it with every dimension but the first a number."
        )
    record = tuple(int(d.dim_value) for d in dims[1:])
    if math.prod(record) > MAX_INPUT_ELEMENTS:
        raise ModelRefused(
            f"The ONNX model's input holds more than {MAX_INPUT_ELEMENTS:,} numbers per record."
        )
    return value.name, _fixed_batch(dims[0]), record


def _fixed_batch(dim: onnx.TensorShapeProto.Dimension) -> int | None:
    if not dim.HasField("dim_value"):
        return None
    if not 1 <= dim.dim_value <= MAX_BATCH_ROWS:
        raise ModelRefused(
            f"The ONNX model's input has a fixed batch of {dim.dim_value} records; export it "
            "with a free batch dimension (dynamic_axes in torch.onnx.export)."
        )
    return int(dim.dim_value)


def _scores_output(graph: onnx.GraphProto, *, n_classes: int) -> str:
    """Keep only the float output (ZipMaps taken off, labels dropped); return its name."""
    _zipmaps_off(graph)
    scores = []
    for value in graph.output:
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            raise ModelRefused(
                f"The ONNX model's output {quote(value.name)} is not a tensor; one output "
                "of shape (n, n_classes) is needed."
            )
        if value.type.tensor_type.elem_type in _SCORE_TYPES:
            scores.append(value)
    if len(scores) != 1:
        names = ", ".join(quote(value.name) for value in scores[:5]) or "none"
        raise ModelRefused(
            f"The ONNX model has {len(scores)} float outputs ({names}); exactly one, of "
            "shape (n, n_classes), is needed."
        )
    (kept,) = scores
    _check_scores_shape(kept, n_classes=n_classes)
    kept = onnx.ValueInfoProto.FromString(kept.SerializeToString())
    del graph.output[:]
    graph.output.append(kept)
    return kept.name


def _zipmaps_off(graph: onnx.GraphProto) -> None:
    """An output made by skl2onnx's ZipMap becomes the probability tensor it zips."""
    outputs = {value.name: value for value in graph.output}
    for node in list(graph.node):
        if node.op_type != "ZipMap" or node.domain != "ai.onnx.ml" or len(node.input) != 1:
            continue
        if len(node.output) != 1 or node.output[0] not in outputs:
            continue
        labels = next((a for a in node.attribute if a.name.startswith("classlabels")), None)
        n_labels = len(labels.ints) + len(labels.strings) if labels is not None else None
        tensor = onnx.helper.make_tensor_value_info(
            node.input[0], onnx.TensorProto.FLOAT, [None, n_labels]
        )
        outputs[node.output[0]].CopyFrom(tensor)
        graph.node.remove(node)


def _check_scores_shape(value: onnx.ValueInfoProto, *, n_classes: int) -> None:
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return  # unknown until run: the trial run checks it
    dims = tensor.shape.dim
    if len(dims) != 2:
        raise ModelRefused(
            f"The ONNX model's output {quote(value.name)} has {len(dims)} dimensions; one "
            "row of scores per record, shape (n, n_classes), is needed."
        )
    if dims[1].HasField("dim_value") and dims[1].dim_value != n_classes:
        raise _classes_refusal(dims[1].dim_value, n_classes)
