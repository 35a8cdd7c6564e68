"""Tests of safe_model.loader: hostile model files are refused with one clear sentence."""

from __future__ import annotations

import ast
import io
import os
import pickle
import posix
import subprocess
import sys
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io
from numpy.lib.npyio import DataSource
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC

from safe_model import archive, loader
from safe_model.exceptions import ModelRefused
from safe_model.loader import load_model, type_is_allowed
from tests import hostile_files
from tests.intake_support import FEATURES, one_sentence

ROOT = Path(__file__).resolve().parents[2]


class _Custom:
    """A class outside the allowlist."""


def refusal(function, *args, **kwargs) -> str:
    """Call ``function``, expect ModelRefused, and return its one-line message."""
    return one_sentence(ModelRefused, function, *args, **kwargs)


def _rewrite_schema(data: bytes, old: str, new: str) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for member in source.infolist():
            content = source.read(member)
            if member.filename == "schema.json":
                content = content.decode().replace(old, new).encode()
            target.writestr(member, content)
    return out.getvalue()


def _declared_total(data: bytes) -> int:
    return sum(member.file_size for member in zipfile.ZipFile(io.BytesIO(data)).infolist())


# --------------------------------------------------------------------------- sound models


@pytest.mark.parametrize(
    "make_model",
    [
        lambda: RandomForestClassifier(n_estimators=5, random_state=0),
        lambda: make_pipeline(StandardScaler(), LogisticRegression()),
        lambda: KNeighborsClassifier(n_neighbors=3),
        lambda: SVC(probability=True, random_state=0),
    ],
    ids=["forest", "pipeline", "knn", "svc"],
)
def test_load_model_round_trips_classifiers(make_model, train, test):
    model = make_model().fit(train[FEATURES], train["y"])
    loaded = load_model(skops.io.dumps(model))
    np.testing.assert_array_equal(loaded.predict(test[FEATURES]), model.predict(test[FEATURES]))
    np.testing.assert_allclose(
        loaded.predict_proba(test[FEATURES]), model.predict_proba(test[FEATURES])
    )


def test_load_model_accepts_a_compressed_skops_file(forest, test):
    data = skops.io.dumps(forest, compression=zipfile.ZIP_DEFLATED)
    loaded = load_model(data)
    np.testing.assert_array_equal(loaded.predict(test[FEATURES]), forest.predict(test[FEATURES]))


# --------------------------------------------------------------------------- pickle


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_load_model_refuses_pickle_without_unpickling(protocol, forest, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("pickle must not be loaded")

    monkeypatch.setattr(pickle, "loads", never)
    monkeypatch.setattr(pickle, "load", never)
    data = pickle.dumps({"model": [1, 2]} if protocol < 2 else forest, protocol=protocol)
    message = refusal(load_model, data)
    assert "Pickle and joblib files are refused" in message
    assert "skops.io.dump(model, 'model.skops')" in message


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("bz2", 3), ("lzma", 3)])
def test_load_model_refuses_joblib(compress, forest, tmp_path):
    path = tmp_path / "model.bin"
    joblib.dump(forest, path, compress=compress)
    message = refusal(load_model, path.read_bytes(), filename="model.bin")
    assert "Pickle and joblib files are refused" in message


@pytest.mark.parametrize("filename", ["model.pkl", "MODEL.JOBLIB", "m.pickle", "m.sav", "m.pkl.gz"])
def test_load_model_refuses_pickle_extensions(filename, forest_skops):
    assert "Pickle and joblib" in refusal(load_model, forest_skops, filename=filename)


# --------------------------------------------------------------------------- allowlist


def test_load_model_refuses_os_system_without_calling_it(monkeypatch):
    data = skops.io.dumps(make_pipeline(FunctionTransformer(func=os.system), LogisticRegression()))
    calls = []
    monkeypatch.setattr(os, "system", lambda *args: calls.append(args))
    monkeypatch.setattr(posix, "system", lambda *args: calls.append(args))
    monkeypatch.setattr(skops.io, "loads", lambda *args, **kwargs: calls.append("loads"))
    message = refusal(load_model, data)
    assert "posix.system" in message
    assert "not allowed" in message
    assert calls == []


@pytest.mark.parametrize(
    ("func", "name"),
    [(eval, "builtins.eval"), (np.load, "numpy.load"), (_Custom, "_Custom")],
)
def test_load_model_refuses_types_outside_the_allowlist(func, name, monkeypatch):
    data = skops.io.dumps(FunctionTransformer(func=func))
    monkeypatch.setattr(skops.io, "loads", lambda *a, **k: pytest.fail("must not load"))
    assert name in refusal(load_model, data)


def test_load_model_refuses_custom_instance():
    data = skops.io.dumps(FunctionTransformer(kw_args={"x": _Custom()}))
    assert "_Custom" in refusal(load_model, data)


def test_load_model_refuses_finalizer_gadget(tmp_path):
    # DataSource.__del__ runs shutil.rmtree(self._destpath) when _istmpdest is set
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    source = DataSource(None)
    own_tempdir, source._destpath = source._destpath, str(victim)
    data = skops.io.dumps(FunctionTransformer(kw_args={"x": source}))
    source._destpath = own_tempdir
    message = refusal(load_model, data)
    assert "DataSource" in message
    assert (victim / "precious.txt").exists()


def test_load_model_refuses_reexported_class():
    data = skops.io.dumps(FunctionTransformer(func=dict))
    data = _rewrite_schema(data, '"__module__": "builtins"', '"__module__": "sklearn.base"')
    data = _rewrite_schema(data, '"__class__": "dict"', '"__class__": "defaultdict"')
    assert "sklearn.base.defaultdict" in refusal(load_model, data)


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("sklearn.tree._tree.Tree", True),
        ("sklearn.neighbors._kd_tree.KDTree", True),
        ("sklearn.metrics._dist_metrics.EuclideanDistance64", True),
        ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor", True),
        ("sklearn.linear_model._logistic.LogisticRegression", True),
        ("numpy.ndarray", True),
        ("numpy.dtype", True),
        ("scipy.sparse._csr.csr_matrix", True),
        ("builtins.eval", False),
        ("posix.system", False),
        ("numpy.load", False),
        ("numpy.memmap", False),
        ("numpy.vectorize", False),
        ("scipy._lib._util._FunctionWrapper", False),
        ("numpy.lib.npyio.DataSource", False),
        ("sklearn.base.defaultdict", False),
        ("numpy.f2py.__main__.main", False),
        ("sklearn.utils._testing.TempMemmap", False),
        ("sklearn.tree._tree.NoSuchClass", False),
        ("sklearn..Tree", False),
        ("sklearn.tree._tree.Tree\n", False),
        # compiled scikit-learn types that structural validation does not cover
        ("sklearn.tree._splitter.BestSplitter", False),
        ("sklearn.tree._criterion.Gini", False),
        ("sklearn.utils._seq_dataset.ArrayDataset64", False),
    ],
)
def test_type_is_allowed(name, allowed):
    assert type_is_allowed(name) is allowed


def test_compiled_sklearn_types_are_allowed_only_if_validated(monkeypatch):
    assert type_is_allowed("sklearn.tree._tree.Tree")
    monkeypatch.setattr(loader, "COMPILED_TYPES_ALLOWED", frozenset())
    assert not type_is_allowed("sklearn.tree._tree.Tree")
    assert type_is_allowed("sklearn.ensemble._forest.RandomForestClassifier")  # Python class


def test_load_model_refuses_a_compiled_type_that_cannot_be_validated(forest_skops, monkeypatch):
    monkeypatch.setattr(loader, "COMPILED_TYPES_ALLOWED", frozenset())
    monkeypatch.setattr(skops.io, "loads", lambda *a, **k: pytest.fail("must not load"))
    message = refusal(load_model, forest_skops)
    assert "sklearn.tree._tree.Tree" in message
    assert "not allowed" in message


def test_load_model_validates_structure_before_returning(forest_skops, monkeypatch):
    seen = []

    def check(model):
        seen.append(model)
        raise ModelRefused("The model's decision tree 1 is inconsistent.")

    monkeypatch.setattr(loader, "check_model_structure", check)
    assert refusal(load_model, forest_skops) == "The model's decision tree 1 is inconsistent."
    assert [type(model) for model in seen] == [RandomForestClassifier]


# --------------------------------------------------------------------------- zip


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"not a zip at all", "not a zip archive"),
        (b"PK\x03\x04" + b"\x00" * 200, "corrupt"),
    ],
)
def test_load_model_refuses_non_zip(data, expected):
    assert expected in refusal(load_model, data)


def test_load_model_refuses_truncated_zip(forest_skops):
    assert "corrupt" in refusal(load_model, forest_skops[: len(forest_skops) // 2])


def test_load_model_refuses_zip_without_schema():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("0.npy", b"")
    assert "no schema.json" in refusal(load_model, out.getvalue())


def test_load_model_refuses_broken_schema(forest_skops):
    data = _rewrite_schema(forest_skops, '"__loader__"', '"__loader__" [')
    assert "could not be read as a skops file" in refusal(load_model, data)


def test_load_model_refuses_oversize(forest_skops):
    assert "larger than the limit" in refusal(load_model, forest_skops, max_bytes=1000)


def test_load_model_refuses_empty_and_non_bytes():
    assert "empty" in refusal(load_model, b"")
    assert "bytes" in refusal(load_model, "PK")


def test_load_model_refuses_too_many_members(forest_skops, monkeypatch):
    monkeypatch.setattr(loader, "MAX_ZIP_MEMBERS", 3)
    assert "zip members" in refusal(load_model, forest_skops)


def test_load_model_refuses_schema_bomb(monkeypatch):
    data = hostile_files.skops_schema_bomb(loader.MAX_SCHEMA_BYTES + 2**20)
    assert len(data) < 2**20
    reads = hostile_files.count_reads(monkeypatch)
    message = refusal(load_model, data)
    assert message == "The model file is refused: its schema.json expands to more than 16 MiB."
    # refused at the cap: never more than one chunk past it was decompressed
    assert sum(reads) <= loader.MAX_SCHEMA_BYTES + 2 * archive.READ_CHUNK_BYTES


def test_schema_bomb_is_a_sound_model_below_the_cap():
    data = hostile_files.skops_schema_bomb(2**20)
    assert isinstance(load_model(data), LogisticRegression)


def test_load_model_refuses_array_bomb():
    data = hostile_files.skops_array_bomb(64 * 2**20)
    assert len(data) < 2**20
    message = refusal(load_model, data, max_bytes=2**20)
    assert message == "The model file is refused: it would expand to more than 4 MiB."


def test_load_model_refuses_zip_whose_headers_lie_about_sizes():
    data = hostile_files.skops_lying_sizes(64 * 2**20)
    assert _declared_total(data) < 2**20  # a check of the headers' sizes would pass it
    assert "corrupt" in refusal(load_model, data, max_bytes=2**20)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../x", "climbs out of the archive with '..'"),
        ("a/../../x", "climbs out of the archive with '..'"),
        ("/abs", "is an absolute path"),
        ("C:x.npy", "is an absolute path"),
        ("a\\b", "is a path, not a flat name"),
        ("dir/0.npy", "is a path, not a flat name"),
        ("dir/", "is a path, not a flat name"),
        ("0.exe", "is not a name skops writes"),
    ],
)
def test_load_model_refuses_zip_slip_and_foreign_names(name, problem):
    message = refusal(load_model, hostile_files.skops_zip_slip(name))
    assert message.startswith("The model file is refused: its zip member")
    assert message.endswith(f"{problem}.")


def test_load_model_refuses_duplicate_members():
    message = refusal(load_model, hostile_files.skops_duplicate_member())
    assert message == "The model file is refused: its zip repeats the member(s) 'schema.json'."


def test_load_model_refuses_symlink_members():
    link = zipfile.ZipInfo("0.bin")
    link.external_attr = 0o120777 << 16
    message = refusal(load_model, _with_member(hostile_files.skops_model(), link))
    assert "'0.bin' is a symbolic link" in message


def test_load_model_refuses_compression_skops_does_not_write():
    member = zipfile.ZipInfo("0.bin")
    member.compress_type = zipfile.ZIP_BZIP2
    message = refusal(load_model, _with_member(hostile_files.skops_model(), member))
    assert "'0.bin' uses a compression other than stored or deflated" in message


def _with_member(data: bytes, info: zipfile.ZipInfo) -> bytes:
    out = io.BytesIO(data)
    with zipfile.ZipFile(out, "a") as archive:
        archive.writestr(info, b"x" * 100)
    return out.getvalue()


# --------------------------------------------------------------------------- classifier


def test_load_model_refuses_unfitted_model():
    data = skops.io.dumps(RandomForestClassifier(n_estimators=5))
    assert "never fitted" in refusal(load_model, data)


def test_load_model_refuses_regressor(train):
    model = LinearRegression().fit(train[FEATURES], train["y"])
    message = refusal(load_model, skops.io.dumps(model))
    assert "not a fitted classifier" in message
    assert "classes_" in message


def test_load_model_refuses_transformer(train):
    model = StandardScaler().fit(train[FEATURES])
    assert "no predict method" in refusal(load_model, skops.io.dumps(model))


# --------------------------------------------------------------------------- package boundary


def test_safe_model_and_secure_compute_never_import_attacks():
    code = (
        "import sys, secure_compute.enclave, safe_model.loader\n"
        "from tests.hostile_files import skops_model\n"
        "safe_model.loader.load_model(skops_model())\n"
        "secure_compute.enclave.code_measurement_compute()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'attacks'))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("package", ["safe_model", "secure_compute"])
def test_no_module_of_the_package_imports_attacks_even_lazily(package):
    importing = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = _imported(node)
            if any(name.split(".")[0] == "attacks" for name in names):
                importing.append(path.name)
    assert importing == []
    assert (ROOT / package / "__init__.py").exists()


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0:
        return [node.module or ""]
    return []


def test_an_npz_member_is_counted_as_its_own_zip_expands():
    data = hostile_files.skops_npz_bomb(expanded_bytes=64 * 2**20)
    assert len(data) < 2**20  # small on the wire
    assert "would expand to more than" in refusal(load_model, data, max_bytes=4 * 2**20)


def test_reading_a_model_does_not_import_torch():
    """torch is an optional extra; skops's estimator walk would import it (2 s, 200 MB) in
    every process that reads a model, the sandbox's zygote among them."""
    code = (
        "import sys, safe_model.loader, safe_model.sandbox, attacks.intake, attacks.audit\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"
