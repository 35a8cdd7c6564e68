"""The declaration of a neural network: its layers and training recipe, validated.

The researcher's JSON (``docs/nn-declaration.md``) is read into frozen dataclasses.
Anything outside the schema, or beyond the service's :class:`DeclarationLimits`, is
refused with one :class:`~attacks.exceptions.IntakeError` sentence that names the
field's path (``architecture[2].out_features``). The layer chain is checked from
``input_shape`` to the last layer, which must give one score per class.

The JSON names are the schema: a layer's ``type`` is the name of its dataclass here,
which is the name of its ``torch.nn`` module, and its fields are that module's
arguments, so :func:`attacks.nn.torch_model.build_network` needs no table of its own.
No torch import: intake checks a declaration on the core install.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from attacks.checks import MAX_SEED
from attacks.exceptions import IntakeError
from attacks.images import Preprocessing
from safe_model.refusal import quote, quote_all, strict_json

#: A declaration is a short JSON file; a 64-layer network is about 8 KiB of it.
MAX_DECLARATION_BYTES = 256 * 2**10

#: Largest size, channel count or kernel a layer may name: keeps every number in
#: the sentences short and every shape computation far from overflow in torch.
MAX_SIZE = 2**31 - 1


@dataclass(frozen=True)
class DeclarationLimits:
    """What a declaration may ask of the service; the policy can lower each.

    Parameters
    ----------
    max_layers : int, default=64
    max_parameters : int, default=5_000_000
        Trainable parameters (weights and biases) of the whole network.
    max_epochs : int, default=1000
        Every shadow model trains this many epochs, so this bounds an audit's time.
    max_batch_size : int, default=4096
    max_input_values : int, default=3 * 256 * 256
        Values per record (the product of ``input_shape``).
    max_activation_values : int, default=4_000_000
        Values per record after any layer: bounds training memory per record.
    """

    max_layers: int = 64
    max_parameters: int = 5_000_000
    max_epochs: int = 1000
    max_batch_size: int = 4096
    max_input_values: int = 3 * 256 * 256
    max_activation_values: int = 4_000_000


# --------------------------------------------------------------------------- field checks
# Each dataclass field below carries its check in ``metadata["check"]``: a function
# of (value, path) that returns the value to store or raises IntakeError.


def _whole(low: int, high: int = MAX_SIZE) -> Callable[[Any, str], int]:
    """Integers from ``low`` (0 or 1) to ``high``; booleans and floats such as 16.0 refused."""

    def check(value: Any, path: str) -> int:
        whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if whole and low <= value <= high:
            return int(value)
        if whole and value > high:
            raise IntakeError(f"{path} must be at most {high}.")
        kind = "a non-negative integer" if low == 0 else "a positive integer"
        raise IntakeError(f"{path} must be {kind}.")

    return check


def _number(low: float, high: float, *, low_open: bool = False, high_open: bool = False):
    def check(value: Any, path: str) -> float:
        real = isinstance(value, int | float) and not isinstance(value, bool)
        if real and not (isinstance(value, float) and not math.isfinite(value)):  # 1e400 is inf
            above = value > low if low_open else value >= low
            below = value < high if high_open else value <= high
            if above and below:
                return float(value)
        start = f"above {low:g}" if low_open else f"at least {low:g}"
        end = f"below {high:g}" if high_open else f"at most {high:g}"
        raise IntakeError(f"{path} must be a number {start} and {end}.")

    return check


def _boolean(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    raise IntakeError(f"{path} must be true or false.")


def _one_of(*options: str) -> Callable[[Any, str], str]:
    def check(value: Any, path: str) -> str:
        if isinstance(value, str) and value in options:
            return value
        raise IntakeError(f"{path} must be {' or '.join(repr(o) for o in options)}.")

    return check


def _list_of(item: Callable[[Any, str], Any], *, what: str) -> Callable[[Any, str], tuple]:
    def check(value: Any, path: str) -> tuple:
        if not isinstance(value, list):
            raise IntakeError(f"{path} must be a list of {what}.")
        return tuple(item(v, f"{path}[{i}]") for i, v in enumerate(value))

    return check


def _input_shape(value: Any, path: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) not in (1, 3):
        raise IntakeError(
            f"{path} must be a list of one size (features) or three (channels, height, width)."
        )
    return _list_of(_whole(1), what="sizes")(value, path)


def _betas(value: Any, path: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise IntakeError(f"{path} must be a list of two numbers.")
    return _list_of(_number(0, 1, high_open=True), what="numbers")(value, path)


def _check(function: Callable[[Any, str], Any], default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose JSON value ``function`` checks."""
    return field(default=default, metadata={"check": function})


_POSITIVE = _whole(1)


# --------------------------------------------------------------------------- layers


def dims(shape: tuple[int, ...]) -> str:
    """A shape as people write it: ``1x8x8``, or ``30`` for a flat one."""
    return "x".join(str(n) for n in shape)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class _Layer:
    """What every layer type answers; one without parameters keeps its input's shape."""

    kind: ClassVar[str]
    n_parameters: ClassVar[int] = 0

    def output_shape(self, shape: tuple[int, ...], where: str, before: str) -> tuple[int, ...]:
        """The shape this layer gives for ``shape``; IntakeError if it cannot take it.

        ``where`` is the layer's path, ``before`` names what gives it ``shape``.
        """
        return shape


def _flat_input(layer: _Layer, shape, where: str, before: str, size: int, name: str) -> None:
    if len(shape) != 1:
        raise IntakeError(
            f"{where} ({layer.kind}) needs a flat input, but {before} gives {dims(shape)}; "
            "put a Flatten before it."
        )
    if shape[0] != size:
        raise IntakeError(
            f"{where}.{name} is {size}, but {before} gives {_count(shape[0], 'feature')}."
        )


def _image_input(layer: _Layer, shape, where: str, before: str, channels=None, name="") -> None:
    if len(shape) != 3:
        raise IntakeError(
            f"{where} ({layer.kind}) needs an input of channels x height x width, "
            f"but {before} gives {dims(shape)}."
        )
    if channels is not None and shape[0] != channels:
        raise IntakeError(
            f"{where}.{name} is {channels}, but {before} gives {_count(shape[0], 'channel')}."
        )


def _window(shape, where: str, kernel: int, stride: int, padding: int) -> tuple:
    """Output of a square window sliding over a channels x height x width input."""
    if kernel > min(shape[1:]) + 2 * padding:
        raise IntakeError(
            f"{where}.kernel_size is {kernel}, larger than its {dims(shape[1:])} input"
            + (" with its padding." if padding else ".")
        )
    return tuple((n + 2 * padding - kernel) // stride + 1 for n in shape[1:])


@dataclass(frozen=True)
class Linear(_Layer):
    """``torch.nn.Linear``: a fully connected layer on a flat input."""

    kind: ClassVar[str] = "Linear"
    in_features: int = _check(_POSITIVE)
    out_features: int = _check(_POSITIVE)
    bias: bool = _check(_boolean, True)

    @property
    def n_parameters(self) -> int:
        return self.out_features * (self.in_features + self.bias)

    def output_shape(self, shape, where, before):
        _flat_input(self, shape, where, before, self.in_features, "in_features")
        return (self.out_features,)


@dataclass(frozen=True)
class Conv2d(_Layer):
    """``torch.nn.Conv2d`` with a square kernel and the same stride and padding on both axes."""

    kind: ClassVar[str] = "Conv2d"
    in_channels: int = _check(_POSITIVE)
    out_channels: int = _check(_POSITIVE)
    kernel_size: int = _check(_POSITIVE)
    stride: int = _check(_POSITIVE, 1)
    padding: int = _check(_whole(0), 0)
    bias: bool = _check(_boolean, True)

    @property
    def n_parameters(self) -> int:
        return self.out_channels * (self.in_channels * self.kernel_size**2 + self.bias)

    def output_shape(self, shape, where, before):
        _image_input(self, shape, where, before, self.in_channels, "in_channels")
        if self.padding >= self.kernel_size:
            raise IntakeError(f"{where}.padding must be smaller than its kernel_size.")
        size = _window(shape, where, self.kernel_size, self.stride, self.padding)
        return (self.out_channels, *size)


@dataclass(frozen=True)
class BatchNorm1d(_Layer):
    """``torch.nn.BatchNorm1d`` on a flat input (torch's eps and momentum)."""

    kind: ClassVar[str] = "BatchNorm1d"
    num_features: int = _check(_POSITIVE)

    @property
    def n_parameters(self) -> int:
        return 2 * self.num_features

    def output_shape(self, shape, where, before):
        _flat_input(self, shape, where, before, self.num_features, "num_features")
        return shape


@dataclass(frozen=True)
class BatchNorm2d(_Layer):
    """``torch.nn.BatchNorm2d`` on channels x height x width (torch's eps and momentum)."""

    kind: ClassVar[str] = "BatchNorm2d"
    num_features: int = _check(_POSITIVE)

    @property
    def n_parameters(self) -> int:
        return 2 * self.num_features

    def output_shape(self, shape, where, before):
        _image_input(self, shape, where, before, self.num_features, "num_features")
        return shape


@dataclass(frozen=True)
class _Pool(_Layer):
    """A square pooling window; ``stride`` defaults to the window, as in torch."""

    kernel_size: int = _check(_POSITIVE)
    stride: int | None = _check(_POSITIVE, None)

    def __post_init__(self):
        if self.stride is None:
            object.__setattr__(self, "stride", self.kernel_size)

    def output_shape(self, shape, where, before):
        _image_input(self, shape, where, before)
        return (shape[0], *_window(shape, where, self.kernel_size, self.stride, 0))


@dataclass(frozen=True)
class MaxPool2d(_Pool):
    """``torch.nn.MaxPool2d`` without padding."""

    kind: ClassVar[str] = "MaxPool2d"


@dataclass(frozen=True)
class AvgPool2d(_Pool):
    """``torch.nn.AvgPool2d`` without padding."""

    kind: ClassVar[str] = "AvgPool2d"


@dataclass(frozen=True)
class ReLU(_Layer):
    """``torch.nn.ReLU``."""

    kind: ClassVar[str] = "ReLU"


@dataclass(frozen=True)
class GELU(_Layer):
    """``torch.nn.GELU`` (exact, erf-based)."""

    kind: ClassVar[str] = "GELU"


@dataclass(frozen=True)
class Tanh(_Layer):
    """``torch.nn.Tanh``."""

    kind: ClassVar[str] = "Tanh"


@dataclass(frozen=True)
class Dropout(_Layer):
    """``torch.nn.Dropout``: active while training, gone from the ONNX export."""

    kind: ClassVar[str] = "Dropout"
    p: float = _check(_number(0, 1, high_open=True), 0.5)


@dataclass(frozen=True)
class Flatten(_Layer):
    """``torch.nn.Flatten``: everything but the batch axis into one."""

    kind: ClassVar[str] = "Flatten"

    def output_shape(self, shape, where, before):
        return (math.prod(shape),)


#: The allow-listed layers, by the ``type`` the JSON names them with.
LAYERS = {
    cls.kind: cls
    for cls in (
        Linear,
        Conv2d,
        BatchNorm1d,
        BatchNorm2d,
        ReLU,
        GELU,
        Tanh,
        MaxPool2d,
        AvgPool2d,
        Dropout,
        Flatten,
    )
}


# --------------------------------------------------------------------------- recipe


@dataclass(frozen=True)
class Sgd:
    """Stochastic gradient descent (``torch.optim.SGD``)."""

    kind: ClassVar[str] = "sgd"
    lr: float = _check(_number(0, 10, low_open=True))
    momentum: float = _check(_number(0, 1, high_open=True), 0.0)


@dataclass(frozen=True)
class Adam:
    """``torch.optim.Adam``; its weight decay is the L2 penalty added to the gradient."""

    kind: ClassVar[str] = "adam"
    lr: float = _check(_number(0, 10, low_open=True))
    betas: tuple[float, float] = _check(_betas, (0.9, 0.999))


@dataclass(frozen=True)
class AdamW(Adam):
    """``torch.optim.AdamW``: decoupled weight decay (the recipe's, default 0, not torch's 0.01)."""

    kind: ClassVar[str] = "adamw"


@dataclass(frozen=True)
class NoSchedule:
    """The learning rate stays as the optimiser sets it."""

    kind: ClassVar[str] = "none"


@dataclass(frozen=True)
class StepSchedule:
    """``torch.optim.lr_scheduler.StepLR``: times ``gamma`` every ``step_size`` epochs."""

    kind: ClassVar[str] = "step"
    step_size: int = _check(_POSITIVE)
    gamma: float = _check(_number(0, 1, low_open=True), 0.1)


@dataclass(frozen=True)
class CosineSchedule:
    """``torch.optim.lr_scheduler.CosineAnnealingLR`` over all epochs, down to 0."""

    kind: ClassVar[str] = "cosine"


@dataclass(frozen=True)
class HorizontalFlip:
    """Each image mirrored left to right with probability 1/2."""

    kind: ClassVar[str] = "hflip"
    image_only: ClassVar[bool] = True


@dataclass(frozen=True)
class RandomCrop:
    """Each image zero-padded by ``padding`` on every side, then cropped back at random."""

    kind: ClassVar[str] = "random_crop"
    image_only: ClassVar[bool] = True
    padding: int = _check(_POSITIVE)


@dataclass(frozen=True)
class GaussianNoise:
    """Independent normal noise of standard deviation ``std`` added to every input value."""

    kind: ClassVar[str] = "gaussian_noise"
    image_only: ClassVar[bool] = False
    std: float = _check(_number(0, 10, low_open=True))


def _choice_of(*classes: type) -> Callable[[Any, str], Any]:
    """A check reading ``{"type": name, ...fields}``, or just ``name`` if it needs none."""
    table = {cls.kind: cls for cls in classes}

    def check(value: Any, path: str) -> Any:
        given = {"type": value} if isinstance(value, str) else value
        if not isinstance(given, dict):
            raise IntakeError(f'{path} must be an object with a "type", or a type\'s name.')
        kind = given.get("type")
        if "type" not in given:
            raise IntakeError(f"{path}.type is required (one of {', '.join(table)}).")
        if not isinstance(kind, str) or kind not in table:
            raise IntakeError(
                f"{path}.type must be one of {', '.join(table)}, not {quote(kind, 30)}."
            )
        return _dataclass_from(table[kind], {k: v for k, v in given.items() if k != "type"}, path)

    return check


@dataclass(frozen=True)
class Recipe:
    """How the network is trained: every shadow model is trained the same way."""

    optimizer: Sgd | Adam | AdamW = _check(_choice_of(Sgd, Adam, AdamW))
    epochs: int = _check(_POSITIVE)
    batch_size: int = _check(_POSITIVE)
    weight_decay: float = _check(_number(0, 1), 0.0)
    lr_schedule: NoSchedule | StepSchedule | CosineSchedule = _check(
        _choice_of(NoSchedule, StepSchedule, CosineSchedule), NoSchedule()
    )
    augmentation: tuple = _check(
        _list_of(_choice_of(HorizontalFlip, RandomCrop, GaussianNoise), what="augmentations"),
        (),
    )
    seed: int = _check(_whole(0, MAX_SEED), 0)


def _preprocessing(value: Any, path: str) -> Preprocessing | None:
    if value is None:  # as to_dict writes "none declared"
        return None
    if not isinstance(value, dict):
        raise IntakeError(f"{path} must be a JSON object (mode, scale, mean, std).")
    unknown = [key for key in value if key not in {"mode", "scale", "mean", "std"}]
    if unknown:
        raise IntakeError(f"{path} has unknown key(s) {quote_all(unknown)}.")
    for key in ("mean", "std"):
        if key in value and not isinstance(value[key], list):
            raise IntakeError(f"{path}.{key} must be a list of numbers, one per channel.")
    return Preprocessing(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})


def _recipe(value: Any, path: str) -> Recipe:
    if not isinstance(value, dict):
        raise IntakeError(f"{path} must be an object.")
    return _dataclass_from(Recipe, value, path)


# --------------------------------------------------------------------------- declaration


@dataclass(frozen=True)
class Declaration:
    """A validated network: input, layers and (optionally) the recipe it was trained with.

    Build it with :func:`parse_declaration`, which checks the layer chain.

    Attributes
    ----------
    input_shape : tuple of int
        One record's shape: ``(n_features,)`` or ``(channels, height, width)``.
    output : {"logits", "probabilities"}
        What the ONNX file's output holds. The architecture always ends in
        logits; "probabilities" says the file applies a softmax after it.
    architecture : tuple of layers
    recipe : Recipe or None
        None when the researcher declared none: no shadow model can be trained.
    preprocessing : Preprocessing or None
        How image or array data become the network's inputs (mode, scale, mean,
        std: :class:`attacks.images.Preprocessing`); None for tables.
    """

    input_shape: tuple[int, ...] = _check(_input_shape)
    output: str = _check(_one_of("logits", "probabilities"))
    architecture: tuple = _check(_list_of(_choice_of(*LAYERS.values()), what="layers"))
    recipe: Recipe | None = _check(_recipe, None)
    preprocessing: Preprocessing | None = _check(_preprocessing, None)

    @property
    def n_classes(self) -> int:
        """Scores the last layer gives per record."""
        return layer_shapes(self)[-1][0]

    @property
    def n_parameters(self) -> int:
        """Trainable parameters (weights and biases; not BatchNorm's running statistics)."""
        return sum(layer.n_parameters for layer in self.architecture)

    def to_dict(self) -> dict[str, Any]:
        """The declaration as JSON data, every default written out; it parses back to itself."""
        return _plain(self)


def parse_declaration(
    data: bytes | str | dict,
    *,
    n_classes: int | None,
    limits: DeclarationLimits = DeclarationLimits(),  # noqa: B008 - frozen, shared safely
) -> Declaration:
    """Read and check a declaration; one sentence naming the field if it is refused.

    Parameters
    ----------
    data : bytes, str or dict
        UTF-8 JSON text, or the already decoded object.
    n_classes : int or None
        Classes of the audited labels; the last layer must give one score per class.
        None checks that later (:func:`check_classes`), once the labels are read.
    limits : DeclarationLimits, optional
        The service's caps (layers, parameters, epochs, batch size, sizes).

    Returns
    -------
    Declaration

    Raises
    ------
    IntakeError
        If the JSON is malformed, a key is unknown or missing, a value has the
        wrong type or range, the layers do not chain from ``input_shape`` to
        ``n_classes`` scores, or a cap is exceeded.
    """
    if not isinstance(data, dict):
        data = strict_json(
            data, what="declaration", max_bytes=MAX_DECLARATION_BYTES, error=IntakeError
        )
    if not isinstance(data, dict):
        raise IntakeError("The declaration must be one JSON object.")
    declaration = _dataclass_from(Declaration, data, "")
    _check_limits(declaration, limits)
    _checked_shapes(declaration, limits)
    if n_classes is not None:
        check_classes(declaration, n_classes)
    _check_augmentation(declaration)
    return declaration


def check_classes(declaration: Declaration, n_classes: int) -> None:
    """IntakeError unless the last layer gives one score for each of ``n_classes`` classes."""
    if declaration.n_classes != n_classes:
        raise IntakeError(
            f"The architecture ends with {declaration.n_classes} outputs, "
            f"but the labels hold {n_classes} classes."
        )


def layer_shapes(declaration: Declaration) -> list[tuple[int, ...]]:
    """The shape each layer gives for one record, in order (IntakeError if they do not chain)."""
    shape, before, shapes = declaration.input_shape, "input_shape", []
    for index, layer in enumerate(declaration.architecture):
        where = f"architecture[{index}]"
        shape = layer.output_shape(shape, where, before)
        shapes.append(shape)
        before = f"{where} ({layer.kind})"
    return shapes


def _checked_shapes(declaration: Declaration, limits: DeclarationLimits) -> list[tuple]:
    shapes = layer_shapes(declaration)
    for index, shape in enumerate(shapes):
        if math.prod(shape) > limits.max_activation_values:
            raise IntakeError(
                f"architecture[{index}] gives {dims(shape)} values per record, above this "
                f"service's cap of {limits.max_activation_values}."
            )
    if len(shapes[-1]) != 1:
        raise IntakeError(
            f"The architecture must end in one score per class, but it gives {dims(shapes[-1])}; "
            "end it with a Linear layer."
        )
    return shapes


def _check_limits(declaration: Declaration, limits: DeclarationLimits) -> None:
    n_layers, n_inputs = len(declaration.architecture), math.prod(declaration.input_shape)
    recipe = declaration.recipe
    caps = [
        ("input_shape", n_inputs, limits.max_input_values, " values per record"),
        ("architecture", n_layers, limits.max_layers, " layers"),
        ("The architecture", declaration.n_parameters, limits.max_parameters, " parameters"),
    ]
    if recipe is not None:
        caps.append(("recipe.epochs", recipe.epochs, limits.max_epochs, ""))
        caps.append(("recipe.batch_size", recipe.batch_size, limits.max_batch_size, ""))
    for path, value, cap, unit in caps:
        if value > cap:
            raise IntakeError(
                f"{path} has {value}{unit}, above this service's cap of {cap}."
                if unit
                else f"{path} is {value}, above this service's cap of {cap}."
            )
    if n_layers == 0:
        raise IntakeError("architecture must list at least one layer.")
    if declaration.n_parameters == 0:
        raise IntakeError("The architecture has no layer with parameters to train.")


def _check_augmentation(declaration: Declaration) -> None:
    recipe = declaration.recipe
    if recipe is None or len(declaration.input_shape) == 3:
        return
    for index, step in enumerate(recipe.augmentation):
        if step.image_only:
            raise IntakeError(
                f"recipe.augmentation[{index}] ({step.kind}) needs images, but input_shape is flat."
            )


# --------------------------------------------------------------------------- reading


def _dataclass_from(cls: type, given: dict, path: str) -> Any:
    """``cls`` from a JSON object, each field checked by its ``metadata["check"]``."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in given if key not in names]
    if unknown:
        where = f"{path} has" if path else "The declaration has"
        raise IntakeError(f"{where} unknown key(s) {quote_all(unknown)}.")
    values = {}
    for f in dataclasses.fields(cls):
        inner = f"{path}.{f.name}" if path else f.name
        if f.name in given:
            values[f.name] = f.metadata["check"](given[f.name], inner)
        elif f.default is dataclasses.MISSING:
            raise IntakeError(f"{inner} is required.")
    return cls(**values)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        kind = {"type": value.kind} if hasattr(value, "kind") else {}
        return kind | {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def field_order(kind: Any) -> list[str]:
    """The fields of the layer or recipe step called ``kind`` (its JSON ``type``), in the
    schema's order; [] for an unknown kind. A stored report may have lost its keys' order
    (PostgreSQL's jsonb keeps them sorted its own way), so readers order by this."""
    classes = [*LAYERS.values(), Sgd, Adam, AdamW, NoSchedule, StepSchedule, CosineSchedule,
               HorizontalFlip, RandomCrop, GaussianNoise]  # fmt: skip
    for cls in classes:
        if cls.kind == kind:
            return [f.name for f in dataclasses.fields(cls)]
    return []
