"""The teaching networks: an MLP on breast cancer and two CNNs on 8x8 digits.

Made by tre-audit, as a researcher's submission would look: the data split, the
declaration (JSON data, as a researcher writes it), the network trained on it by
:class:`~attacks.nn.torch_model.TorchRecipeClassifier` and its ONNX export. The
tests, the demo and the benchmark use them; scikit-learn's 8x8 digits are the only
image set available offline.

- ``breast_cancer_mlp``: 30-16-2 with ReLU on standardised features (the scaler is
  fitted on the training half, as the researcher would), 284 members, 285
  non-members.
- Both digits cases: 100 training images (members) and 100 others (non-members).
- ``digits_cnn_overfit``: Conv(1, 8, 3, padding 1)-ReLU-MaxPool(2)-Flatten-
  Linear(128, 10) on pixels scaled by 1/16, trained far past convergence on
  few images with no weight decay: it should come out high.
- ``digits_cnn_regularised``: the same data and layers plus BatchNorm and
  Dropout, trained briefly with weight decay and random crops: lower.

Importing this module needs no torch; training and exporting do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: The label column of the teaching data files.
LABEL = "label"

#: Training images of both digits CNNs: few, so that the over-trained one memorises.
#: With 200 (and 200 non-members) it still generalises to 94% and LiRA reaches only
#: AUC 0.68 at 8 shadows; with 100 against 100, 0.80 at 8 and 0.81 at 16, on the high
#: line; with 60 against 60, 0.86 (95% CI 0.80 to 0.93) at 8: high with a margin, while
#: the regularised CNN's strongest attack is 0.71, medium.
N_DIGITS_TRAIN = 60
#: Non-members of the digits cases, as many as members: each shadow then trains on as
#: many images as the target did (against 300, LiRA fell from 0.81 to 0.76 at 8 shadows).
N_DIGITS_TEST = 60


def _conv_layers(*, regularised: bool) -> list:
    conv = {"type": "Conv2d", "in_channels": 1, "out_channels": 8, "kernel_size": 3, "padding": 1}
    norm = [{"type": "BatchNorm2d", "num_features": 8}] if regularised else []
    dropout = [{"type": "Dropout", "p": 0.5}] if regularised else []
    return [
        conv,
        *norm,
        "ReLU",
        {"type": "MaxPool2d", "kernel_size": 2},
        "Flatten",
        *dropout,
        {"type": "Linear", "in_features": 128, "out_features": 10},
    ]


#: Each case's declaration, as the researcher's JSON file holds it.
DECLARATIONS = {
    "breast_cancer_mlp": {
        "input_shape": [30],
        "output": "logits",
        "architecture": [
            {"type": "Linear", "in_features": 30, "out_features": 16},
            "ReLU",
            {"type": "Linear", "in_features": 16, "out_features": 2},
        ],
        "recipe": {
            "optimizer": {"type": "adam", "lr": 0.01},
            "epochs": 100,
            "batch_size": 32,
            "seed": 0,
        },
    },
    "digits_cnn_overfit": {
        "input_shape": [1, 8, 8],
        "output": "logits",
        "architecture": _conv_layers(regularised=False),
        "recipe": {
            "optimizer": {"type": "adam", "lr": 0.01},
            "epochs": 200,
            "batch_size": 32,
            "weight_decay": 0.0,
            "seed": 0,
        },
    },
    "digits_cnn_regularised": {
        "input_shape": [1, 8, 8],
        "output": "logits",
        "architecture": _conv_layers(regularised=True),
        "recipe": {
            "optimizer": {"type": "adamw", "lr": 0.01},
            "epochs": 30,
            "batch_size": 32,
            "weight_decay": 0.05,
            "lr_schedule": "cosine",
            "augmentation": [{"type": "random_crop", "padding": 1}],
            "seed": 0,
        },
    },
}
CASES = tuple(DECLARATIONS)


@dataclass(frozen=True)
class TeachingCase:
    """One teaching network's declaration and data.

    Attributes
    ----------
    name : str
    declaration : dict
        JSON data; read it with :func:`attacks.nn.schema.parse_declaration`.
    X_train, X_test : DataFrame
        Members and non-members, flat features (a digit's 64 pixels in row order).
    y_train, y_test : ndarray of int
    """

    name: str
    declaration: dict
    X_train: pd.DataFrame
    y_train: np.ndarray
    X_test: pd.DataFrame
    y_test: np.ndarray


def teaching_case(name: str) -> TeachingCase:
    """The declaration and data of one of :data:`CASES`.

    Parameters
    ----------
    name : str

    Returns
    -------
    TeachingCase
    """
    if name not in DECLARATIONS:
        raise ValueError(f"No teaching network is called {name!r}; there are {', '.join(CASES)}.")
    split = _breast_cancer() if name.startswith("breast_cancer") else _digits()
    return TeachingCase(name, json.loads(json.dumps(DECLARATIONS[name])), *split)


def teaching_model(case: TeachingCase, *, random_state=None):
    """The case's network trained on its members by tre-audit's loop.

    Parameters
    ----------
    case : TeachingCase
    random_state : int or None, default=None
        None trains with the recipe's seed: the released teaching model.

    Returns
    -------
    TorchRecipeClassifier
        Fitted.
    """
    from attacks.nn.torch_model import TorchRecipeClassifier

    model = TorchRecipeClassifier(case.declaration, random_state=random_state)
    return model.fit(case.X_train, case.y_train)


def teaching_write(name: str, directory: str | Path) -> dict[str, Path]:
    """Write a teaching submission as a researcher uploads it.

    The files are ``model.onnx``, ``declaration.json``, ``train.csv`` and
    ``test.csv``; the CSV files hold the flat features and a :data:`LABEL` column.

    Parameters
    ----------
    name : str
        One of :data:`CASES`.
    directory : str or Path
        Created if missing.

    Returns
    -------
    dict of str to Path
        The four files, by their name without extension.
    """
    from attacks.nn.torch_model import export_onnx

    case = teaching_case(name)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {stem: directory / f"{stem}.{ext}" for stem, ext in _FILES}
    paths["model"].write_bytes(export_onnx(teaching_model(case)))
    paths["declaration"].write_text(json.dumps(case.declaration, indent=2) + "\n")
    case.X_train.assign(**{LABEL: case.y_train}).to_csv(paths["train"], index=False)
    case.X_test.assign(**{LABEL: case.y_test}).to_csv(paths["test"], index=False)
    return paths


_FILES = (("model", "onnx"), ("declaration", "json"), ("train", "csv"), ("test", "csv"))


def _breast_cancer():
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y.to_numpy(), test_size=0.5, stratify=y, random_state=0
    )
    scaler = StandardScaler().set_output(transform="pandas").fit(X_train)
    scaled = [scaler.transform(X).reset_index(drop=True) for X in (X_train, X_test)]
    return scaled[0], y_train, scaled[1], y_test


def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits(as_frame=True)
    X, y = digits.data / 16.0, digits.target.to_numpy()
    X_train, X_rest, y_train, y_rest = train_test_split(
        X, y, train_size=N_DIGITS_TRAIN, stratify=y, random_state=0
    )
    return (
        X_train.reset_index(drop=True),
        y_train,
        X_rest.iloc[:N_DIGITS_TEST].reset_index(drop=True),
        y_rest[:N_DIGITS_TEST],
    )
