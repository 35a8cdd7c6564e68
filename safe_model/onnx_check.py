"""Checking an untrusted ONNX file before anything runs it: the ONNX side of the loader.

An ONNX file is a protobuf graph of operators, and onnxruntime runs it in native
code that trusts the graph. :func:`check_onnx_model` lets a graph through only if
it is small enough to parse (the caller's byte cap), parses, and passes every
check below before ``onnx.checker`` (full check, shape inference included) reads
it; each refusal is one :class:`~safe_model.exceptions.ModelRefused` sentence.

- Operators come only from the standard domains, at the opsets of :data:`OPSETS`,
  and each is on :data:`ALLOWED_OPS`: what MLPs and small CNNs export to, and what
  skl2onnx writes for scikit-learn classifiers. Control flow (If, Loop, Scan hold
  subgraphs), random operators, string operators and operators that make a tensor
  whose size is read from data (ConstantOfShape, Expand, Tile, Range, Resize, Pad)
  are not on it.
- No model-local functions, no subgraph attributes, no sparse tensors, and no
  external data: a tensor stored "elsewhere" names a path onnxruntime would open.
- At most :data:`MAX_NODES` nodes and :data:`MAX_ELEMENTS` numbers in weights and
  attributes, counted from the declared shapes, never from what the file says it
  holds.

Passing does not make a graph harmless: a crafted one can still crash native
code, so graphs are run only inside :mod:`safe_model.sandbox`.
"""

from __future__ import annotations

import math
from pathlib import PurePath

import onnx

from safe_model.exceptions import ModelRefused
from safe_model.refusal import checked_bytes, quote, reason

#: File name suffix that makes an upload an ONNX model (its content must agree).
ONNX_SUFFIX = ".onnx"

#: Accepted opsets per operator domain ("" and "ai.onnx" are the same domain).
#: ai.onnx 9..22: skl2onnx 1.20 declares the lowest opset its nodes need (9 for a
#: LogisticRegression or a forest) up to 22, its newest; torch 2.13's legacy exporter
#: writes 7..20, 20 by default (7 and 8 predate BatchNormalization's and Dropout's
#: present inference semantics). ai.onnx.ml 1..3: skl2onnx writes 1; 4 and 5 change
#: the tree and label-encoder operators.
OPSETS = {"": (9, 22), "ai.onnx.ml": (1, 3)}

#: Standard operators a network's inference graph may use. Shape, Gather, Unsqueeze,
#: Concat and Reshape are what exporters write for Flatten and view(); Erf, Pow, Sqrt
#: and ReduceMean make GELU and LayerNorm in opsets that lack them as one operator.
STANDARD_OPS = frozenset(
    {
        # arithmetic and linear algebra
        *("Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Sqrt", "Pow"),
        *("Exp", "Log", "Erf", "ReduceMean", "ReduceSum", "Max", "Min"),
        # activations and output layers
        *("Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Gelu", "Tanh", "Sigmoid"),
        *("HardSigmoid", "HardSwish", "Softplus", "Clip", "Softmax", "LogSoftmax"),
        # convolution, pooling and normalisation
        *("Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"),
        *("BatchNormalization", "LayerNormalization", "Dropout"),
        # shapes and plumbing (none makes a tensor larger than its inputs' data)
        *("Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat"),
        *("Shape", "Gather", "Slice", "Identity", "Constant", "Cast", "ArgMax"),
    }
)

#: ai.onnx.ml operators skl2onnx writes for LogisticRegression (LinearClassifier,
#: Normalizer), forests, trees and boosting (TreeEnsembleClassifier), SVC
#: (SVMClassifier), MLPClassifier (ArrayFeatureExtractor), a StandardScaler step
#: (Scaler) and its probability output (ZipMap, which the classifier takes off:
#: see :mod:`safe_model.onnx_model`). Encoders, imputers and text features are not.
ML_OPS = frozenset(
    {
        "LinearClassifier",
        "TreeEnsembleClassifier",
        "SVMClassifier",
        "Normalizer",
        "Scaler",
        "ArrayFeatureExtractor",
        "ZipMap",
    }
)

ALLOWED_OPS = {"": STANDARD_OPS, "ai.onnx.ml": ML_OPS}

#: Cap on nodes: an exported ResNet-50 has a few hundred, a small CNN a dozen.
MAX_NODES = 10_000

#: Cap on the numbers held by initializers and attributes: 50 million float32
#: weights are 200 MB, the service's upload cap, and a forest of 500 deep trees
#: holds a few million attribute values.
MAX_ELEMENTS = 50_000_000

#: Protobuf cannot serialise a message of 2 GiB or more: no ONNX file is larger.
PROTOBUF_MAX_BYTES = 2**31 - 1

#: Every ModelProto opens with its ir_version (field 1, a varint): tag byte 0x08.
_IR_VERSION_TAG = 0x08
#: IR 3 is the oldest with opset imports; onnx.IR_VERSION the newest this onnx reads.
_IR_VERSIONS = range(3, onnx.IR_VERSION + 1)
_NOT_ONNX = "The model file is named .onnx but is not an ONNX model"
_A = onnx.AttributeProto


def is_onnx_name(filename: str) -> bool:
    """Whether an upload's name says it is an ONNX model (its content must agree).

    Parameters
    ----------
    filename : str

    Returns
    -------
    bool
    """
    return PurePath(str(filename)).suffix.lower() == ONNX_SUFFIX


def onnx_file_problem(data: bytes) -> str | None:
    """Why a file named .onnx plainly is not an ONNX model, or None.

    Reads only its first bytes, never parses it: cheap and safe outside the
    sandbox, for a form to refuse a renamed zip or a random file at once.

    Parameters
    ----------
    data : bytes
        Content of the uploaded file.

    Returns
    -------
    str or None
        One sentence for the researcher; None when the file may be an ONNX model.
    """
    if data.startswith(b"PK\x03\x04"):
        return (
            f"{_NOT_ONNX}: it is a zip archive (a skops or PyTorch file?); "
            "export the network with torch.onnx.export or skl2onnx."
        )
    if data[:1] != bytes([_IR_VERSION_TAG]) or _ir_version(data) not in _IR_VERSIONS:
        return f"{_NOT_ONNX}: it does not open with an ONNX model's header."
    return None


def _ir_version(data: bytes) -> int | None:
    """The varint after the tag byte, read by hand (at most 4 bytes: IR versions are small)."""
    value = 0
    for shift, byte in enumerate(data[1:5]):
        value |= (byte & 0x7F) << (7 * shift)
        if not byte & 0x80:
            return value
    return None


def check_onnx_model(data: bytes, *, max_bytes: int) -> onnx.ModelProto:
    """Parse an untrusted ONNX file and refuse it unless every check passes.

    Parameters
    ----------
    data : bytes
        Content of the uploaded file.
    max_bytes : int
        Largest accepted file, checked before parsing.

    Returns
    -------
    onnx.ModelProto
        The parsed model, as it was uploaded.

    Raises
    ------
    ModelRefused
        If the file is empty, too large, not an ONNX model, truncated or corrupt,
        defines functions, holds a subgraph, sparse tensors or external data, has
        more nodes or numbers than allowed, uses a custom domain, an opset outside
        :data:`OPSETS` or an operator not on :data:`ALLOWED_OPS`, or fails
        ``onnx.checker``'s full check.
    """
    data = checked_bytes(data, max_bytes=max_bytes, what="model file", error=ModelRefused)
    problem = onnx_file_problem(data)
    if problem:
        raise ModelRefused(problem)
    model = _parsed(data)
    _check_contents(model)
    _check_opsets(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ModelRefused(f"The ONNX model is not a valid ONNX graph: {reason(exc)}.") from None
    return model


def _parsed(data: bytes) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:
        raise ModelRefused(
            "The model file could not be read as an ONNX model: it is truncated or corrupt."
        ) from None
    if not model.HasField("graph"):
        raise ModelRefused("The model file could not be read as an ONNX model: it has no graph.")
    return model


def _check_contents(model: onnx.ModelProto) -> None:
    """Functions, node count, operators, and every tensor's storage and size."""
    graph = model.graph
    if model.functions:
        raise ModelRefused(
            "The ONNX model defines functions of its own, which are not accepted; "
            "export it without export_modules_as_functions."
        )
    if len(graph.node) > MAX_NODES:
        raise ModelRefused(
            f"The ONNX model has {len(graph.node):,} nodes, more than the limit of {MAX_NODES:,}."
        )
    if graph.sparse_initializer:
        raise ModelRefused("The ONNX model holds sparse initializers, which are not accepted.")
    n_elements = sum(_tensor_elements(tensor) for tensor in graph.initializer)
    for node in graph.node:
        _check_operator(node)
        n_elements += sum(_attribute_elements(node, attribute) for attribute in node.attribute)
    if n_elements > MAX_ELEMENTS:
        raise ModelRefused(
            f"The ONNX model holds {n_elements:,} weights and attribute values, more than "
            f"the limit of {MAX_ELEMENTS:,}."
        )


def _domain(name: str) -> str:
    return "" if name == "ai.onnx" else name


def _check_operator(node: onnx.NodeProto) -> None:
    domain = _domain(node.domain)
    if domain not in ALLOWED_OPS:
        raise ModelRefused(
            f"The ONNX model uses the operator {quote(node.op_type)} of the custom domain "
            f"{quote(node.domain)}; only the standard ai.onnx and ai.onnx.ml operators are "
            "accepted."
        )
    if node.op_type not in ALLOWED_OPS[domain]:
        raise ModelRefused(
            f"The ONNX model uses the operator {quote(node.op_type)}, which is not one of "
            "the standard inference operators tre-audit runs."
        )


def _attribute_elements(node: onnx.NodeProto, attribute: onnx.AttributeProto) -> int:
    """Numbers an attribute holds; a subgraph or sparse tensor is refused."""
    if attribute.type in (_A.GRAPH, _A.GRAPHS) or attribute.HasField("g") or attribute.graphs:
        raise ModelRefused(
            f"The ONNX model's operator {quote(node.op_type)} holds a subgraph, "
            "which is not accepted."
        )
    if attribute.HasField("sparse_tensor") or attribute.sparse_tensors:
        raise ModelRefused("The ONNX model holds sparse tensors, which are not accepted.")
    tensors = [attribute.t] if attribute.HasField("t") else []
    tensors += list(attribute.tensors)
    listed = len(attribute.ints) + len(attribute.floats) + len(attribute.strings)
    return listed + sum(_tensor_elements(tensor) for tensor in tensors)


def _tensor_elements(tensor: onnx.TensorProto) -> int:
    """Elements by the declared shape; a tensor stored outside the file is refused."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
        raise ModelRefused(
            f"The ONNX model keeps the tensor {quote(tensor.name)} in an external file; "
            "save it with every weight inside the .onnx file."
        )
    return math.prod(max(int(d), 0) for d in tensor.dims)


def _check_opsets(model: onnx.ModelProto) -> None:
    for opset in model.opset_import:
        domain = _domain(opset.domain)
        if domain not in OPSETS:
            raise ModelRefused(
                f"The ONNX model declares the custom operator domain {quote(opset.domain)}; "
                "only the standard ai.onnx and ai.onnx.ml domains are accepted."
            )
        low, high = OPSETS[domain]
        if not low <= opset.version <= high:
            name = opset.domain or "ai.onnx"
            raise ModelRefused(
                f"The ONNX model uses {name} opset {opset.version}, outside the supported "
                f"{low} to {high}; export it with an opset in that range."
            )
