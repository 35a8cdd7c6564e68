"""The teaching MLP as a researcher submits it: its ONNX file, its declaration and its
two tables, for the tests of every interface that takes a neural network.

The declared recipe is cut to :data:`LIGHT_EPOCHS` epochs: an audit trains the network
again for every shadow model, and 20 epochs keep a four-shadow audit to seconds.
"""

from __future__ import annotations

import json

import pytest

from attacks.audit import Upload
from attacks.nn.teaching import LABEL, teaching_write

LIGHT_EPOCHS = 20
#: The label column of the teaching tables.
MLP_LABEL = LABEL


def declaration_upload(declared: dict, name: str = "declaration.json") -> Upload:
    return Upload(name, json.dumps(declared).encode())


def recipe_changed(upload: Upload, **recipe) -> Upload:
    """The declaration ``upload`` with some of its recipe's fields changed."""
    declared = json.loads(upload.data)
    declared["recipe"].update(recipe)
    return declaration_upload(declared, upload.name)


def without_recipe(upload: Upload) -> Upload:
    """The declaration ``upload`` with its layers only: no shadow model can be trained."""
    declared = json.loads(upload.data)
    del declared["recipe"]
    return declaration_upload(declared, upload.name)


@pytest.fixture(scope="session")
def mlp_files(tmp_path_factory) -> dict[str, Upload]:
    """``model`` (model.onnx), ``declaration``, ``train`` and ``test`` of the breast-cancer
    MLP, trained once per session, its declaration's recipe light."""
    paths = teaching_write("breast_cancer_mlp", tmp_path_factory.mktemp("mlp"))
    uploads = {role: Upload(path.name, path.read_bytes()) for role, path in paths.items()}
    uploads["declaration"] = recipe_changed(uploads["declaration"], epochs=LIGHT_EPOCHS)
    return uploads
