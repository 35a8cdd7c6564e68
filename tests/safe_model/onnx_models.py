"""ONNX files for the ONNX intake tests: real exports, and crafted graphs that lie.

Real exports (each returns the in-memory model and the file's bytes):

* :func:`torch_mlp`: a PyTorch MLP on breast cancer's 30 features, logits out, a
  free batch axis; with ``softmax=True`` it ends in Softmax (probabilities out).
* :func:`torch_cnn`: a small CNN on 8x8 digits (Conv, BatchNorm, ReLU, MaxPool,
  GELU, Flatten, Dropout, Linear), logits out, exported with a *fixed* batch of
  :data:`CNN_BATCH` records, as ``torch.onnx.export`` does without dynamic_axes.
* :func:`sklearn_onnx`: any fitted scikit-learn classifier through skl2onnx with
  its default options (a label output and ZipMap'd probabilities).

Crafted graphs (:func:`graph`) are built with ``onnx.helper``: one float input
``x`` of shape (N, 2) unless told otherwise, the given nodes, output ``y``.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper
from skl2onnx import to_onnx

#: Records per run of the exported CNN (its input is [CNN_BATCH, 1, 8, 8]).
CNN_BATCH = 4


def _exported(module: torch.nn.Module, example: torch.Tensor, *, free_batch: bool) -> bytes:
    axes = {"x": {0: "batch"}, "y": {0: "batch"}} if free_batch else None
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the legacy exporter's DeprecationWarning
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            example,
            buffer,
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes=axes,
        )
    return buffer.getvalue()


def torch_mlp(*, softmax: bool = False) -> tuple[torch.nn.Module, bytes]:
    """A seeded, untrained 30-16-2 MLP (standardising its inputs) and its ONNX file."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)]
    layers += [torch.nn.Softmax(dim=1)] if softmax else []
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(30), *layers)
    net.train()
    with torch.no_grad():  # BatchNorm's running statistics from data-like inputs
        net(torch.randn(256, 30) * 300 + 100)
    return net.eval(), _exported(net, torch.zeros(1, 30), free_batch=True)


def torch_cnn() -> tuple[torch.nn.Module, bytes]:
    """A seeded, untrained CNN for 1x8x8 images with 10 classes, and its ONNX file."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 8, 3, padding=1),
        torch.nn.GELU(),
        torch.nn.Flatten(),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(8 * 4 * 4, 10),
    )
    return net.eval(), _exported(net, torch.zeros(CNN_BATCH, 1, 8, 8), free_batch=False)


def sklearn_onnx(estimator, X: np.ndarray) -> bytes:
    """A fitted scikit-learn classifier as skl2onnx writes it by default."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_onnx(estimator, np.asarray(X[:1], dtype=np.float32)).SerializeToString()


# --------------------------------------------------------------------------- crafted


def graph(
    nodes: list,
    *,
    inputs: list | None = None,
    outputs: list | None = None,
    initializers: list | None = None,
    opsets: dict[str, int] | None = None,
    functions: list | None = None,
) -> bytes:
    """Serialise a small graph: input ``x`` (N, 2) and output ``y`` (N, 2) by default."""
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "crafted",
            inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
            outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
            initializer=initializers or [],
        ),
        opset_imports=[helper.make_opsetid(d, v) for d, v in (opsets or {"": 17}).items()],
        functions=functions or [],
    )
    model.ir_version = 8
    return model.SerializeToString()


def softmax_graph(**kwargs) -> bytes:
    """A sound graph: y = softmax(x), two classes."""
    return graph([helper.make_node("Softmax", ["x"], ["y"], axis=1)], **kwargs)


def custom_domain_graph() -> bytes:
    """A node of Microsoft's contrib domain, which onnxruntime would run."""
    node = helper.make_node("FusedGemm", ["x", "x"], ["y"], domain="com.microsoft")
    return graph([node], opsets={"": 17, "com.microsoft": 1})


def external_data_graph() -> bytes:
    """An initializer whose bytes live in a file next to the model, named by path."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [2], [0.0, 0.0])
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../../etc/weights.bin"
    return graph([helper.make_node("Add", ["x", "w"], ["y"])], initializers=[weight])


def disallowed_op_graph() -> bytes:
    """Tile: the output's size is read from data, so it is not on the allowlist."""
    repeats = helper.make_tensor("r", TensorProto.INT64, [2], [1, 1])
    return graph([helper.make_node("Tile", ["x", "r"], ["y"])], initializers=[repeats])


def many_nodes_graph(n_nodes: int) -> bytes:
    """A chain of ``n_nodes`` Identity nodes from x to y."""
    names = ["x", *(f"t{i}" for i in range(n_nodes - 1)), "y"]
    nodes = [helper.make_node("Identity", [a], [b]) for a, b in zip(names, names[1:])]
    return graph(nodes)


def rank3_output_graph() -> bytes:
    """y = x with an axis added: (N, 1, 2), declared as such."""
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    return graph(
        [helper.make_node("Unsqueeze", ["x", "axes"], ["y"])],
        initializers=[axes],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 2])],
    )


def pooled_output_graph() -> bytes:
    """Probabilities averaged over the batch: one row for N records, declared as (N, 2)."""
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
    nodes = [
        helper.make_node("Softmax", ["x"], ["p"], axis=1),
        helper.make_node("ReduceMean", ["p", "axes"], ["y"], keepdims=1),
    ]
    return graph(nodes, initializers=[axes], opsets={"": 18})


def two_outputs_graph() -> bytes:
    """Probabilities and the raw scores, both float: which to read is not said."""
    return graph(
        [helper.make_node("Softmax", ["x"], ["y"], axis=1), helper.make_node("Relu", ["x"], ["z"])],
        outputs=[
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 2]),
        ],
    )


def free_feature_dims_graph() -> bytes:
    """Input (N, F): the number of features is not fixed."""
    return softmax_graph(
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "F"])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "F"])],
    )


def function_graph() -> bytes:
    """A model-local function, called by a node of its own domain."""
    body = helper.make_function(
        "local",
        "Soft",
        ["a"],
        ["b"],
        [helper.make_node("Softmax", ["a"], ["b"], axis=1)],
        opset_imports=[helper.make_opsetid("", 17)],
    )
    node = helper.make_node("Soft", ["x"], ["y"], domain="local")
    return graph([node], opsets={"": 17, "local": 1}, functions=[body])


def subgraph_graph() -> bytes:
    """An allowed operator carrying a graph attribute (as If and Loop do)."""
    inner = onnx.parser.parse_graph("inner (float[N,2] a) => (float[N,2] b) { b = Relu(a) }")
    node = helper.make_node("Softmax", ["x"], ["y"], axis=1)
    node.attribute.append(helper.make_attribute("body", inner))
    return graph([node])
