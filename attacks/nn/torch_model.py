"""The declared network, built in PyTorch and trained by tre-audit's own loop.

Imports torch, the optional ``tre-audit[torch]`` extra: import this module only
when a neural-network recipe is trained (shadow models, the teaching models).

:class:`TorchRecipeClassifier` is a scikit-learn classifier, so the shadow pool
(:mod:`attacks.shadows`) clones, reseeds and fits it as it does the researcher's
scikit-learn estimator. Training is bit-for-bit repeatable for a given
``random_state`` and ``n_threads``: weights are initialised and dropout drawn from
torch's global generator seeded inside :func:`torch.random.fork_rng` (so the
caller's generator is left as it was), batches and augmentations come from a
generator of their own, deterministic algorithms are switched on, and the thread
count is fixed; all of it is restored when ``fit`` returns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_array, check_is_fitted

from attacks.checks import check_whole_number
from attacks.exceptions import IntakeError
from attacks.nn.schema import Declaration, Recipe, check_classes, dims, parse_declaration
from attacks.shadows import base_seed_of

#: Records per forward pass when predicting: bounds memory, not the result.
PREDICT_BATCH = 1024

#: The ONNX opset of exports: torch's legacy exporter's tested range ends at 20;
#: 17 is what onnxruntime and every ONNX consumer of the last years read.
ONNX_OPSET = 17


def build_network(declaration: Declaration) -> torch.nn.Sequential:
    """The declared layers as a ``torch.nn.Sequential``, initialised as torch does.

    A layer's ``kind`` is its ``torch.nn`` class name and its fields are that
    class's arguments (:mod:`attacks.nn.schema`), and only the schema's
    allow-listed dataclasses reach here. Initial weights come from torch's global
    generator: seed it first (``fit`` does).

    Parameters
    ----------
    declaration : Declaration

    Returns
    -------
    torch.nn.Sequential
    """
    return torch.nn.Sequential(
        *(
            getattr(torch.nn, layer.kind)(
                **{f.name: getattr(layer, f.name) for f in dataclasses.fields(layer)}
            )
            for layer in declaration.architecture
        )
    )


class TorchRecipeClassifier(ClassifierMixin, BaseEstimator):
    """The declared network trained on the declared recipe, as a scikit-learn classifier.

    Parameters
    ----------
    declaration : Declaration, dict or str
        The network and its recipe; a dict or JSON text is read with
        :func:`~attacks.nn.schema.parse_declaration` at ``fit`` (default limits).
    random_state : int, RandomState instance or None, default=None
        Seeds initial weights, dropout, batch order and augmentation. None uses
        the recipe's ``seed``, so the declared model is the one trained by default.
    n_threads : int, default=1
        Torch threads while fitting and predicting; shadows run one per core.
    classes : array-like or None, default=None
        Every class the network scores, in the order of its outputs after
        sorting. None takes the classes of ``y``; pass the audited model's so
        that a shadow whose half of the data lacks a class still scores it.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    network_ : torch.nn.Sequential
        The trained network, in eval mode; it outputs logits.
    declaration_ : Declaration
    n_features_in_ : int
    """

    def __init__(self, declaration, *, random_state=None, n_threads=1, classes=None):
        self.declaration = declaration
        self.random_state = random_state
        self.n_threads = n_threads
        self.classes = classes

    def fit(self, X, y):
        """Train a freshly initialised network on ``X`` (flat features) and ``y``.

        Parameters
        ----------
        X : array-like of shape (n_records, prod(input_shape))
            Each row is one record flattened in C order (channels, height, width).
        y : array-like of shape (n_records,)

        Returns
        -------
        self
        """
        check_whole_number("The number of torch threads", self.n_threads, low=1)
        X = check_array(X, dtype=np.float32)
        classes, targets = _class_indices(y, self.classes)
        declaration = _declaration_of(self.declaration, n_classes=len(classes))
        if declaration.recipe is None:
            raise IntakeError("The declaration has no recipe, so no shadow model can be trained.")
        inputs = _records(X, declaration.input_shape)
        seed = _seed(self.random_state, declaration.recipe.seed)
        with _seeded(seed, self.n_threads):
            network = build_network(declaration)
            train_network(network, inputs, torch.as_tensor(targets), declaration.recipe, seed)
        self.network_ = network.eval()
        self.declaration_ = declaration
        self.classes_ = classes
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X):
        """Softmax of the network's logits, computed in float64.

        float64 because membership scores take logits of these probabilities: in
        float32 every confidence above 1 - 6e-8 would round to exactly 1.

        Parameters
        ----------
        X : array-like of shape (n_records, prod(input_shape))

        Returns
        -------
        ndarray of shape (n_records, n_classes)
        """
        return torch.softmax(self.logits(X), dim=1).numpy()

    def logits(self, X) -> torch.Tensor:
        """The network's outputs before the softmax, as float64.

        Parameters
        ----------
        X : array-like of shape (n_records, prod(input_shape))

        Returns
        -------
        torch.Tensor of shape (n_records, n_classes)
        """
        check_is_fitted(self, "network_")
        inputs = _records(check_array(X, dtype=np.float32), self.declaration_.input_shape)
        with _threads(self.n_threads), torch.no_grad():
            chunks = [self.network_(chunk) for chunk in torch.split(inputs, PREDICT_BATCH)]
        return torch.cat(chunks).double()

    def predict(self, X):
        """The most probable class of each record.

        Parameters
        ----------
        X : array-like of shape (n_records, prod(input_shape))

        Returns
        -------
        ndarray of shape (n_records,)
        """
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def train_network(
    network: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    recipe: Recipe,
    seed: int,
) -> None:
    """Train ``network`` in place with cross-entropy on the recipe.

    Each epoch visits the records in a fresh random order in batches of
    ``recipe.batch_size``; a last batch of one record is skipped (BatchNorm
    cannot train on one), a different record each epoch. The learning-rate
    schedule steps once per epoch.

    Parameters
    ----------
    network : torch.nn.Module
    inputs : Tensor of shape (n_records, *input_shape)
    targets : Tensor of int64, shape (n_records,)
        Index of each record's class.
    recipe : Recipe
    seed : int
        Seeds the batch order and augmentation (not the weights: seed torch first).
    """
    generator = torch.Generator().manual_seed(_stream(seed, 1))
    optimizer = _optimizer(network, recipe)
    schedule = _schedule(optimizer, recipe)
    loss = torch.nn.CrossEntropyLoss()
    network.train()
    for _ in range(recipe.epochs):
        for batch in _batches(len(targets), recipe.batch_size, generator):
            optimizer.zero_grad()
            x = augment(inputs[batch], recipe.augmentation, generator)
            loss(network(x), targets[batch]).backward()
            optimizer.step()
        if schedule is not None:
            schedule.step()


def augment(x: torch.Tensor, steps: tuple, generator: torch.Generator) -> torch.Tensor:
    """A batch with the recipe's augmentations applied in order, drawn from ``generator``.

    Parameters
    ----------
    x : Tensor of shape (n_records, *input_shape)
    steps : tuple of HorizontalFlip, RandomCrop or GaussianNoise
    generator : torch.Generator

    Returns
    -------
    Tensor of the same shape
    """
    for step in steps:
        if step.kind == "hflip":
            flip = torch.rand(len(x), generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        elif step.kind == "random_crop":
            x = _random_crop(x, step.padding, generator)
        else:
            x = x + step.std * torch.randn(x.shape, generator=generator)
    return x


def export_onnx(classifier: TorchRecipeClassifier) -> bytes:
    """The fitted network as ONNX bytes, as a researcher would export it.

    torch's legacy exporter (``dynamo=False``), eval mode, opset :data:`ONNX_OPSET`,
    one input ``"input"`` of shape (batch, *input_shape) with a dynamic batch axis
    and one output ``"output"``: logits, or probabilities (a Softmax appended)
    when the declaration says so.

    Parameters
    ----------
    classifier : TorchRecipeClassifier
        Fitted.

    Returns
    -------
    bytes
    """
    check_is_fitted(classifier, "network_")
    network = classifier.network_
    if classifier.declaration_.output == "probabilities":
        network = torch.nn.Sequential(*network, torch.nn.Softmax(dim=1))
    example = torch.zeros(1, *classifier.declaration_.input_shape)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), _threads(classifier.n_threads):
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter's notice
        torch.onnx.export(
            network.eval(),
            (example,),
            buffer,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
    return buffer.getvalue()


# --------------------------------------------------------------------------- helpers


def _declaration_of(declaration, *, n_classes: int) -> Declaration:
    if isinstance(declaration, Declaration):
        check_classes(declaration, n_classes)
        return declaration
    return parse_declaration(declaration, n_classes=n_classes)


def _class_indices(y, classes) -> tuple[np.ndarray, np.ndarray]:
    """The sorted classes and each label's index among them (int64)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise IntakeError("The labels must be one column.")
    classes = np.unique(y) if classes is None else np.unique(np.asarray(classes))
    column = {c: i for i, c in enumerate(classes.tolist())}
    targets = np.array([column.get(v, -1) for v in y.tolist()], dtype=np.int64)
    if (targets < 0).any():
        raise IntakeError("The training labels hold a class that is not among the model's.")
    return classes, targets


def _records(X: np.ndarray, input_shape: tuple[int, ...]) -> torch.Tensor:
    if X.shape[1] != int(np.prod(input_shape)):
        raise IntakeError(
            f"The data has {X.shape[1]} feature columns, but input_shape {dims(input_shape)} "
            f"needs {int(np.prod(input_shape))}."
        )
    return torch.from_numpy(np.ascontiguousarray(X).reshape(-1, *input_shape))


def _seed(random_state, recipe_seed: int) -> int:
    return recipe_seed if random_state is None else base_seed_of(random_state)


def _stream(seed: int, stream: int) -> int:
    """An independent seed for one use of ``seed`` (weights and batches never share draws)."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


@contextlib.contextmanager
def _threads(n_threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _seeded(seed: int, n_threads: int) -> Iterator[None]:
    """Torch seeded, deterministic and on ``n_threads``; all three restored after."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    with _threads(n_threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(_stream(seed, 0))
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic)


def _batches(n_records: int, batch_size: int, generator: torch.Generator):
    order = torch.randperm(n_records, generator=generator)
    batches = list(torch.split(order, batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


def _optimizer(network: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    chosen, decay = recipe.optimizer, recipe.weight_decay
    if chosen.kind == "sgd":
        return torch.optim.SGD(
            network.parameters(), lr=chosen.lr, momentum=chosen.momentum, weight_decay=decay
        )
    kind = torch.optim.AdamW if chosen.kind == "adamw" else torch.optim.Adam
    return kind(network.parameters(), lr=chosen.lr, betas=chosen.betas, weight_decay=decay)


def _schedule(optimizer: torch.optim.Optimizer, recipe: Recipe):
    schedule = recipe.lr_schedule
    if schedule.kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, schedule.step_size, schedule.gamma)
    if schedule.kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs)
    return None


def _random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Each image zero-padded by ``padding``, then cut back to its size at a random offset."""
    n, channels, height, width = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (top[:, None] + torch.arange(height))[:, None, :, None]
    cols = (left[:, None] + torch.arange(width))[:, None, None, :]
    return padded[
        torch.arange(n)[:, None, None, None],
        torch.arange(channels)[None, :, None, None],
        rows,
        cols,
    ]
