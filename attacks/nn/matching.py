"""Is the declared network the ONNX file's? Its parameter shapes, layer by layer.

Shadow models are trained from the declaration, so the audit is only about the
released model if the declaration describes it. Two steps, both without torch:

- :func:`onnx_network` reads, from an ONNX graph, the input shape and every node
  that holds weights, in the graph's node order, as plain data.
- :func:`check_matches_onnx` walks the declared layers against those nodes and
  refuses, naming the first layer that differs.

What torch's legacy exporter (``torch.onnx.export(..., dynamo=False)``, opset 17)
really writes, found on the teaching models' exports (tests/attacks/test_nn.py):

- ``Linear`` becomes ``Gemm`` with ``transB=1`` (weight stored out x in, named
  ``"0.weight"``); without a bias, ``MatMul`` with the weight transposed to in x out
  under a generated name (``"onnx::MatMul_22"``). Shapes are compared in torch's
  out x in order, whatever the file stores.
- ``BatchNorm1d`` / ``BatchNorm2d`` become ``BatchNormalization`` with four stored
  tensors: scale, bias, running mean, running variance.
- In eval-mode export a ``Conv2d`` followed directly by ``BatchNorm2d`` is *fused*:
  one ``Conv`` with a bias even if the declared conv has none
  (``"onnx::Conv_27"``), and no ``BatchNormalization``. Both forms are accepted.
- The fused weights are stored after the others, so the order of
  ``graph.initializer`` is not the layers' order: nodes are walked in order and
  their inputs looked up, never the initializer list on its own.
- Tensors with equal values are stored once and aliased with ``Identity`` nodes
  (an untrained BatchNorm's running mean equals its zero bias); aliases are followed.
- ``Dropout`` vanishes; ``Flatten``, pools and activations hold no weights. GELU
  at opset 17 is ``Div``/``Erf``/``Add``/``Mul`` with scalar ``Constant`` nodes.

Any other node that consumes a stored floating-point tensor of more than one
value is weights the declaration does not have, and is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from attacks.exceptions import IntakeError
from attacks.nn.schema import BatchNorm2d, Conv2d, Declaration, Linear, dims

#: Which inputs of a weight-holding op are its stored parameters, in torch's order.
PARAMETER_INPUTS = {
    "Gemm": (1, 2),
    "MatMul": (1,),
    "Conv": (1, 2),
    "BatchNormalization": (1, 2, 3, 4),
}

#: ONNX TensorProto data types that hold weights: FLOAT, FLOAT16, DOUBLE, BFLOAT16.
_FLOAT_TYPES = {1, 10, 11, 16}


@dataclass(frozen=True)
class OnnxLayer:
    """One ONNX node that holds weights.

    Attributes
    ----------
    op_type : str
        ``"Gemm"``, ``"Conv"``, ``"BatchNormalization"``, ``"MatMul"``, or any other
        op that consumes a stored floating-point tensor.
    shapes : tuple
        Shape of each stored parameter, in torch's layout (a Linear weight out x in);
        None for an input the graph computes instead of storing.
    """

    op_type: str
    shapes: tuple[tuple[int, ...] | None, ...]


@dataclass(frozen=True)
class OnnxNetwork:
    """What of an ONNX graph the declaration is checked against.

    Attributes
    ----------
    input_shape : tuple or None
        One record's input shape, without the batch axis; an entry is None where
        the file names the size symbolically. None if the graph has no input.
    layers : tuple of OnnxLayer
        Weight-holding nodes in node order.
    """

    input_shape: tuple[int | None, ...] | None
    layers: tuple[OnnxLayer, ...]


def onnx_network(graph: Any) -> OnnxNetwork:
    """The input shape and weight-holding nodes of an ONNX ``GraphProto``.

    Reads only the protobuf's fields (no ``onnx`` import), so intake can call it
    inside its sandbox on a graph ``onnx.checker`` has passed.

    Parameters
    ----------
    graph : onnx.GraphProto

    Returns
    -------
    OnnxNetwork
    """
    stored = _stored_tensors(graph)
    layers = []
    for node in graph.node:
        if node.op_type in PARAMETER_INPUTS:
            layers.append(_parameter_layer(node, stored))
        elif not _is_alias(node) and any(_is_weight(stored.get(name)) for name in node.input):
            layers.append(
                OnnxLayer(node.op_type, tuple(stored[n][0] for n in node.input if n in stored))
            )
    return OnnxNetwork(input_shape=_input_shape(graph), layers=tuple(layers))


def check_matches_onnx(declaration: Declaration, network: OnnxNetwork) -> None:
    """IntakeError naming the first declared layer whose parameters differ from the file's.

    Parameters
    ----------
    declaration : Declaration
    network : OnnxNetwork
        From :func:`onnx_network`.

    Raises
    ------
    IntakeError
        If the input shapes differ, a declared layer with weights has no
        counterpart in the file, a weight, bias or BatchNorm statistic has another
        shape, or the file holds weights after the declared layers.
    """
    _check_input(declaration.input_shape, network.input_shape)
    layers, position = declaration.architecture, 0
    for index, layer in enumerate(layers):
        expected = _expected_op(layer)
        if expected is None or _fused_away(layers, index, network.layers, position):
            continue
        where = f"architecture[{index}] ({layer.kind})"
        found = network.layers[position] if position < len(network.layers) else None
        if found is None or found.op_type not in expected:
            raise IntakeError(f"{where} has no counterpart in the ONNX file, {_next(found)}.")
        fused = isinstance(layer, Conv2d) and _fused_away(
            layers, index + 1, network.layers, position + 1
        )
        _check_shapes(where, _declared_shapes(layer, fused), found)
        position += 1
    if position < len(network.layers):
        extra = network.layers[position].op_type
        raise IntakeError(
            f"The ONNX file has a {extra} node with weights the declaration does not list."
        )


# --------------------------------------------------------------------------- reading the graph


def _stored_tensors(graph: Any) -> dict[str, tuple[tuple[int, ...], int]]:
    """Name -> (shape, data type) of initializers, Constant tensors and their aliases.

    An alias is an ``Identity`` or ``Transpose`` of a stored tensor: without constant
    folding the exporter writes ``Transpose(weight)`` before a ``MatMul``.
    """
    stored = {t.name: (tuple(t.dims), t.data_type) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output and node.attribute:
            stored[node.output[0]] = _constant_tensor(node.attribute[0])
        if _is_alias(node) and node.input[0] in stored:
            shape, data_type = stored[node.input[0]]
            if node.op_type == "Transpose":
                shape = _transposed(shape, node)
            if shape is not None:
                stored[node.output[0]] = (shape, data_type)
    return stored


def _constant_tensor(attribute: Any) -> tuple[tuple[int, ...], int]:
    """Shape and data type of a Constant's value, whichever attribute holds it."""
    if attribute.name == "value":
        return tuple(attribute.t.dims), attribute.t.data_type
    if attribute.name == "sparse_value":
        return tuple(attribute.sparse_tensor.dims), attribute.sparse_tensor.values.data_type
    if attribute.name == "value_floats":
        return (len(attribute.floats),), 1
    return (), 0  # a scalar or integers: not weights


def _is_alias(node: Any) -> bool:
    return node.op_type in ("Identity", "Transpose") and bool(node.input) and bool(node.output)


def _transposed(shape: tuple[int, ...], node: Any) -> tuple[int, ...] | None:
    """``shape`` permuted as the Transpose says (reversed by default); None if it cannot be."""
    perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
    if perm is None:
        return shape[::-1]
    if sorted(perm) != list(range(len(shape))):
        return None
    return tuple(shape[i] for i in perm)


def _is_weight(tensor: tuple[tuple[int, ...], int] | None) -> bool:
    return tensor is not None and tensor[1] in _FLOAT_TYPES and math.prod(tensor[0]) > 1


def _parameter_layer(node: Any, stored: dict) -> OnnxLayer:
    names = [node.input[i] for i in PARAMETER_INPUTS[node.op_type] if i < len(node.input)]
    shapes = [stored[name][0] if name in stored else None for name in names if name]
    if shapes and shapes[0] is not None and _stores_in_by_out(node):
        shapes[0] = shapes[0][::-1]
    return OnnxLayer(node.op_type, tuple(shapes))


def _stores_in_by_out(node: Any) -> bool:
    """A MatMul, or a Gemm without transB, holds a Linear weight as in x out."""
    if node.op_type == "MatMul":
        return True
    if node.op_type != "Gemm":
        return False
    return not any(a.name == "transB" and a.i == 1 for a in node.attribute)


def _input_shape(graph: Any) -> tuple[int | None, ...] | None:
    stored = {t.name for t in graph.initializer}
    inputs = [value for value in graph.input if value.name not in stored]
    if not inputs:
        return None
    axes = inputs[0].type.tensor_type.shape.dim
    return tuple(axis.dim_value if axis.HasField("dim_value") else None for axis in axes[1:])


# --------------------------------------------------------------------------- comparing


def _expected_op(layer: Any) -> set[str] | None:
    """The ONNX ops a declared layer may become; None if it holds no weights."""
    if isinstance(layer, Linear):
        return {"Gemm"} if layer.bias else {"Gemm", "MatMul"}
    if isinstance(layer, Conv2d):
        return {"Conv"}
    if layer.n_parameters:
        return {"BatchNormalization"}
    return None


def _fused_away(layers, index: int, onnx_layers, position: int) -> bool:
    """Is ``layers[index]`` a BatchNorm2d the exporter folded into the Conv before it?"""
    if index >= len(layers) or not isinstance(layers[index], BatchNorm2d):
        return False
    if index == 0 or not isinstance(layers[index - 1], Conv2d):
        return False
    found = onnx_layers[position] if position < len(onnx_layers) else None
    return found is None or found.op_type != "BatchNormalization"


def _declared_shapes(layer: Any, fused: bool) -> list[tuple[str, tuple[int, ...]]]:
    if isinstance(layer, Linear):
        weight = ("weight", (layer.out_features, layer.in_features))
        return [weight, ("bias", (layer.out_features,))] if layer.bias else [weight]
    if isinstance(layer, Conv2d):
        k = layer.kernel_size
        weight = ("weight", (layer.out_channels, layer.in_channels, k, k))
        has_bias = layer.bias or fused  # a fused BatchNorm leaves a bias in the Conv
        return [weight, ("bias", (layer.out_channels,))] if has_bias else [weight]
    roles = ("scale", "bias", "running mean", "running variance")
    return [(role, (layer.num_features,)) for role in roles]


def _check_shapes(where: str, declared: list, found: OnnxLayer) -> None:
    if len(declared) != len(found.shapes):
        roles = " and ".join(role for role, _ in declared)
        if {len(declared), len(found.shapes)} == {1, 2}:  # a weight, with or without bias
            has = "a bias" if len(found.shapes) == 2 else "no bias"
        else:
            has = f"{len(found.shapes)} stored tensors"
        raise IntakeError(
            f"{where} declares {roles}, but the ONNX file's {found.op_type} has {has}."
        )
    for (role, shape), onnx_shape in zip(declared, found.shapes):
        if onnx_shape is None:
            raise IntakeError(
                f"{where}: the ONNX file's {found.op_type} computes its {role} "
                "instead of storing it."
            )
        if tuple(onnx_shape) != shape:
            raise IntakeError(
                f"{where} declares {role} {dims(shape)}, the ONNX file has {dims(onnx_shape)}."
            )


def _check_input(declared: tuple[int, ...], onnx_shape) -> None:
    if onnx_shape is None:
        raise IntakeError("The ONNX file has no input to check input_shape against.")
    known = len(onnx_shape) == len(declared) and all(
        size is None or size == want for size, want in zip(onnx_shape, declared)
    )
    if not known:
        shown = "x".join("?" if size is None else str(size) for size in onnx_shape)
        raise IntakeError(
            f"input_shape is {dims(declared)}, but the ONNX file takes {shown or 'a scalar'} "
            "per record."
        )


def _next(found: OnnxLayer | None) -> str:
    if found is None:
        return "which has no more layers with weights"
    return f"whose next node with weights is a {found.op_type}"
