"""The hostile-upload suite: crafted models and bombs through the web form, the API and the CLI.

Every case is refused in one sentence with nothing stored, and the process that
received it lives on: the test process itself for the web form and the API (a
segfault there would end the test run), the CLI's own process for the CLI.
"""

from __future__ import annotations

import functools
import hashlib
import html
import io
import subprocess
import sys

import pandas as pd
import pytest
import skops.io
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from sklearn.tree import DecisionTreeClassifier

from attacks.exceptions import IntakeError
from attacks.intake import table_columns
from tests import factories, hostile_files
from tests.safe_model import crafted_models
from tests.tre_audit.api.support import client_for
from tests.tre_audit.submissions.test_views import request_state, stored_state
from tre_audit import cli
from tre_audit.reviews.enums import Role
from tre_audit.submissions.models import StoredFile


def _custom_op_onnx() -> bytes:
    from tests.safe_model.onnx_models import custom_domain_graph  # imports torch: when run

    return custom_domain_graph()


#: case: (which upload is hostile, how it is built, a phrase its refusal must hold)
CASES = {
    "tree left child 10**12": (
        "model",
        crafted_models.tree_left_child_huge,
        "child index is out of range",
    ),
    "tree feature out of range": (
        "model",
        crafted_models.tree_feature_out_of_range,
        "feature is out of range",
    ),
    "tree negative child": (
        "model",
        crafted_models.tree_negative_child,
        "child index is out of range",
    ),
    "tree whose root is its own child": (
        "model",
        crafted_models.tree_cyclic_root,
        "its own ancestor",
    ),
    "tree with a latent bad node": (
        "model",
        crafted_models.tree_latent_bad_node,
        "RandomForestClassifier is inconsistent",
    ),
    "HistGradientBoosting node 10**9": (
        "model",
        crafted_models.hgb_node_index_huge,
        "HistGradientBoostingClassifier is inconsistent",
    ),
    "k-d tree index out of range": (
        "model",
        crafted_models.kdtree_index_out_of_range,
        "k-d tree has an index out of range",
    ),
    "SVC support vectors miscounted": (
        "model",
        crafted_models.svc_support_mismatch,
        "SVC is inconsistent",
    ),
    "schema.json bomb": ("model", hostile_files.skops_schema_bomb, "schema.json expands"),
    "array member bomb": ("model", hostile_files.skops_array_bomb, "would expand"),
    "zip header lying about sizes": ("model", hostile_files.skops_lying_sizes, "corrupt"),
    "zip-slip member ../x": (
        "model",
        lambda: hostile_files.skops_zip_slip("../x"),
        "climbs out of the archive",
    ),
    "zip-slip member /abs": (
        "model",
        lambda: hostile_files.skops_zip_slip("/abs"),
        "absolute path",
    ),
    "duplicate zip member": ("model", hostile_files.skops_duplicate_member, "repeats the member"),
    "Parquet of 100M RLE rows": (
        "train",
        hostile_files.parquet_row_bomb,
        "more than 10,000,000 rows",
    ),
    "Parquet of huge text cells": (
        "train",
        hostile_files.parquet_text_bomb,
        "decodes to more than",
    ),
    "CSV of 20,000 columns": ("train", lambda: hostile_files.csv_wide(20_000), "20,000 columns"),
    "ONNX graph with a custom op": (
        "model",
        _custom_op_onnx,
        "of the custom domain 'com.microsoft'",
    ),
    "declaration that is not JSON": (
        "declaration",
        lambda: b'{"input_shape": [3], "output": "logits",',
        "The declaration is not valid JSON",
    ),
}
FILE_NAMES = {
    "model": "model.skops",
    "declaration": "declaration.json",
    "train": "train.csv",
    "test": "test.csv",
}
#: The cases whose hostile file is named for what it claims to be.
CASE_FILE_NAMES = {"ONNX graph with a custom op": "model.onnx"}
#: The web form's name for an upload, where it is not the role's (the API's and library's).
FORM_NAMES = {"declaration": "architecture"}


@functools.cache
def honest_files() -> tuple[dict[str, bytes], str]:
    """A valid model and its tables, into which each case puts one hostile file."""
    train, test, label = crafted_models.matching_tables()
    table = pd.read_csv(io.BytesIO(train))
    model = DecisionTreeClassifier(max_depth=3, random_state=0)
    model.fit(table.drop(columns=[label]), table[label])
    return {"model": skops.io.dumps(model), "train": train, "test": test}, label


def hostile_uploads(name: str) -> tuple[dict[str, tuple[str, bytes]], str, str]:
    """The uploads (file name and bytes by role) of case ``name``, its label and phrase."""
    role, build, phrase = CASES[name]
    files, label = honest_files()
    data = build()
    file_name = "train.parquet" if data.startswith(b"PAR1") else FILE_NAMES[role]
    file_name = CASE_FILE_NAMES.get(name, file_name)
    uploads = {r: (FILE_NAMES[r], d) for r, d in files.items()} | {role: (file_name, data)}
    return uploads, label, phrase


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    return hostile_uploads(request.param)


def form_fields(label: str) -> dict[str, str]:
    """The declaration of a complete submission form, without its files."""
    return {
        "title": "Hostile",
        "label": label,
        "model_type": "tree",
        "preprocessing": "none",
        "purpose": "testing",
        "hosting": "public_file",
        "files_are_exact": "true",
    }


def assert_one_sentence(message: str, phrase: str) -> None:
    assert "\n" not in message.strip() and "Traceback" not in message, message
    assert message.strip().endswith("."), message
    assert phrase.lower() in message.lower(), message


def _form(uploads, label, *, names=None):
    """The form's fields and files, each file under ``names``' name for its role."""
    names = names or {}
    files = {
        names.get(role, role): SimpleUploadedFile(name, data)
        for role, (name, data) in uploads.items()
    }
    return form_fields(label) | files


def label_in(uploads, label: str) -> str:
    """The form checks the label against the training file's header before the intake
    check runs: a hostile training file gets a label it has, for the intake check to answer."""
    name, data = uploads["train"]
    try:
        columns = table_columns(data, filename=name)
    except IntakeError:
        return label
    return label if label in columns else columns[-1]


@pytest.mark.django_db
def test_the_web_form_refuses_it_and_stores_nothing(client, settings, case, request):
    uploads, label, phrase = case
    client.force_login(factories.create_user("researcher", Role.RESEARCHER))
    before = request_state()
    response = client.post(
        reverse("submissions:create"), _form(uploads, label_in(uploads, label), names=FORM_NAMES)
    )
    assert response.status_code == 400
    errors = html.unescape(response.content.decode())
    assert phrase.lower() in errors.lower()
    assert request_state() == before
    hostile = uploads[CASES[request.node.callspec.params["case"]][0]]
    assert not StoredFile.objects.filter(sha256=hashlib.sha256(hostile[1]).hexdigest()).exists()
    assert StoredFile.objects.count() == errors.count("Kept: ")  # only honest files are kept


@pytest.mark.django_db
def test_the_api_refuses_it_and_stores_nothing(settings, case):
    uploads, label, phrase = case
    api = client_for(factories.create_user("researcher", Role.RESEARCHER))
    before = stored_state(settings)
    response = api.post("/api/v1/requests/", _form(uploads, label), format="multipart")
    assert response.status_code == 400, response.content
    assert_one_sentence(response.json()["detail"], phrase)
    assert stored_state(settings) == before


def _cli_args(tmp_path, uploads, label) -> list[str]:
    paths = {}
    for role, (name, data) in uploads.items():
        paths[role] = tmp_path / name
        paths[role].write_bytes(data)
    declared = ["--architecture", str(paths["declaration"])] if "declaration" in paths else []
    return [
        *("audit", "--model", str(paths["model"]), "--train", str(paths["train"])),
        *("--test", str(paths["test"]), "--label", label, "--out", str(tmp_path / "audit")),
        *("--shadows", "2", "--no-sweep", "--quiet", *declared),
    ]


def test_the_cli_refuses_it_in_one_line_with_exit_2(tmp_path, capsys, case):
    """In this process (each upload is still loaded in the CLI's sandbox child): the
    console script's own process is the next test's, once."""
    uploads, label, phrase = case
    assert cli.main(_cli_args(tmp_path, uploads, label)) == 2
    assert_one_sentence(capsys.readouterr().err, phrase)
    assert not (tmp_path / "audit").exists()


def test_the_console_script_refuses_a_crafted_tree_in_one_line_with_exit_2(tmp_path):
    uploads, label, phrase = hostile_uploads("tree negative child")
    result = subprocess.run(
        [sys.executable, "-m", "tre_audit.cli", *_cli_args(tmp_path, uploads, label)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert_one_sentence(result.stderr, phrase)
    assert not (tmp_path / "audit").exists()
