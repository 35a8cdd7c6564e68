"""An ONNX model joined to its declaration: the check that the declared network is
the released one, and the template its shadow models are trained from.

No torch import at module level: a declaration without a recipe, and the check,
work on the core install; training needs the ``tre-audit[torch]`` extra.
"""

from __future__ import annotations

from typing import Any

from attacks.exceptions import IntakeError
from attacks.nn.matching import check_matches_onnx, onnx_network
from attacks.nn.schema import Declaration, DeclarationLimits, check_classes, parse_declaration
from attacks.policy import Policy, load_policy

#: The policy's ``[neural_networks]`` caps, named as :class:`DeclarationLimits`'s fields.
POLICY_CAPS = ("max_epochs", "max_parameters", "max_layers", "max_batch_size")

#: What a declaration given with a scikit-learn model is told.
NOT_ONNX = "A declaration goes with an ONNX model only; a skops model is its own recipe."
NO_TORCH = (
    "Training shadow models of a neural network needs PyTorch, which this installation "
    "lacks: install the torch extra (pip install 'tre-audit[torch]')."
)


def declaration_read(data: bytes, *, policy: Policy | None = None) -> Declaration:
    """The declaration's JSON, checked against ``policy``'s ``[neural_networks]`` caps
    (the default policy's if None), before the labels are read (their classes are
    checked against it by :func:`declared_model`)."""
    return parse_declaration(data, n_classes=None, limits=declaration_limits(policy))


def declaration_limits(policy: Policy | None) -> DeclarationLimits:
    """The caps a policy sets on declared networks and recipes."""
    caps = (policy or load_policy()).sections["neural_networks"]
    return DeclarationLimits(**{name: int(caps[name]) for name in POLICY_CAPS})


def declared_model(model: Any, declaration: Declaration, *, n_threads: int = 1) -> Any:
    """``model`` (an :class:`~safe_model.onnx_model.OnnxClassifier`) checked against
    ``declaration``, with the shadow template of its recipe, if one is declared.

    Raises
    ------
    IntakeError
        If the model is not ONNX, its classes or weights differ from the declared
        network's (naming the first differing layer), or a recipe is declared and
        torch is not installed.
    """
    if not hasattr(model, "shadow_template"):
        raise IntakeError(NOT_ONNX)
    import onnx  # a core dependency; the bytes passed onnx.checker at load

    check_classes(declaration, len(model.classes_))
    check_matches_onnx(declaration, onnx_network(onnx.load_from_string(model.model_bytes).graph))
    model.declaration_ = declaration.to_dict()  # for the report; clones do not carry it
    if declaration.recipe is None:
        return model
    try:
        from attacks.nn.torch_model import TorchRecipeClassifier
    except ImportError:
        raise IntakeError(NO_TORCH) from None
    template = TorchRecipeClassifier(declaration, n_threads=n_threads, classes=model.classes_)
    return model.set_params(shadow_template=template)
