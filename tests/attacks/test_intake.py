"""Tests of attacks.intake: hostile files are refused with one clear sentence."""

from __future__ import annotations

import io
import json
import os
import pickle
import posix
import zipfile

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import skops.io
from numpy.lib.npyio import DataSource
from sklearn.compose import make_column_transformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.svm import SVC

from attacks import intake
from attacks.exceptions import IntakeError
from attacks.intake import build_target, load_model, load_record, load_table
from attacks.target import Target

FEATURES = ["f0", "f1", "f2"]


class _Custom:
    """A class outside the allowlist."""


def refusal(function, *args, **kwargs) -> str:
    """Call ``function``, expect IntakeError, and return its one-line message."""
    with pytest.raises(IntakeError) as info:
        function(*args, **kwargs)
    message = str(info.value)
    assert message
    assert "\n" not in message
    assert "Traceback" not in message
    return message


def _frame(n_rows: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, len(FEATURES)))
    frame = pd.DataFrame(X, columns=FEATURES)
    frame["y"] = (X[:, 0] + X[:, 1] > 0).astype(int)
    return frame


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return _frame(40, seed=0)


@pytest.fixture(scope="module")
def test() -> pd.DataFrame:
    return _frame(20, seed=1)


@pytest.fixture(scope="module")
def forest(train) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=5, random_state=0).fit(train[FEATURES], train["y"])


@pytest.fixture(scope="module")
def forest_skops(forest) -> bytes:
    return skops.io.dumps(forest)


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


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


# --------------------------------------------------------------------------- load_model


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


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_load_model_refuses_pickle_without_unpickling(protocol, forest, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("pickle must not be loaded")

    monkeypatch.setattr(pickle, "loads", never)
    monkeypatch.setattr(pickle, "load", never)
    data = pickle.dumps({"model": [1, 2]} if protocol < 2 else forest, protocol=protocol)
    message = refusal(load_model, data)
    assert "Pickle and joblib files are refused" in message
    assert "skops.io.dump(joblib.load('model.pkl'), 'model.skops')" in message


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("bz2", 3), ("lzma", 3)])
def test_load_model_refuses_joblib(compress, forest, tmp_path):
    path = tmp_path / "model.bin"
    joblib.dump(forest, path, compress=compress)
    message = refusal(load_model, path.read_bytes(), filename="model.bin")
    assert "Pickle and joblib files are refused" in message


@pytest.mark.parametrize("filename", ["model.pkl", "MODEL.JOBLIB", "m.pickle", "m.sav", "m.pkl.gz"])
def test_load_model_refuses_pickle_extensions(filename, forest_skops):
    assert "Pickle and joblib" in refusal(load_model, forest_skops, filename=filename)


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
        ("numpy.ndarray", True),
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
    ],
)
def test_type_is_allowed(name, allowed):
    assert intake.type_is_allowed(name) is allowed


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
        archive.writestr("other.json", "{}")
    assert "no schema.json" in refusal(load_model, out.getvalue())


def test_load_model_refuses_broken_schema(forest_skops):
    data = _rewrite_schema(forest_skops, '"__loader__"', '"__loader__" [')
    assert "could not be read as a skops file" in refusal(load_model, data)


def test_load_model_refuses_oversize(forest_skops):
    assert "larger than the limit" in refusal(load_model, forest_skops, max_bytes=1000)


def test_load_model_refuses_zip_bomb():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("schema.json", b"{}")
        archive.writestr("bomb.npy", b"\x00" * 2_000_000)
    data = out.getvalue()
    assert len(data) < 50_000
    assert "would expand" in refusal(load_model, data, max_bytes=50_000)


def test_load_model_refuses_too_many_members(forest_skops, monkeypatch):
    monkeypatch.setattr(intake, "MAX_ZIP_MEMBERS", 3)
    assert "zip members" in refusal(load_model, forest_skops)


def test_load_model_refuses_empty_and_non_bytes():
    assert "empty" in refusal(load_model, b"")
    assert "bytes" in refusal(load_model, "PK")


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


# --------------------------------------------------------------------------- load_table


def test_load_table_reads_csv(train):
    frame = load_table(_csv(train), filename="train.csv")
    pd.testing.assert_frame_equal(frame, train, check_exact=False)


def test_load_table_accepts_utf8_bom():
    frame = load_table(b"\xef\xbb\xbfa,b\n1,2\n", filename="t.csv")
    assert list(frame.columns) == ["a", "b"]


@pytest.mark.parametrize("filename", ["train.parquet", "train.PQ", "upload"])
def test_load_table_reads_parquet(filename, train):
    buffer = io.BytesIO()
    train.to_parquet(buffer)
    frame = load_table(buffer.getvalue(), filename=filename)
    pd.testing.assert_frame_equal(frame, train)


@pytest.mark.parametrize(
    ("data", "filename", "expected"),
    [
        (b"a,b\n1,2\n", "train.xlsx", "must be CSV"),
        (b"a,b\n1,2\n", "train", "must be CSV"),
        (b"a,b\n1,2\n", "train.parquet", "not a Parquet file"),
        (b"", "train.csv", "empty"),
        (b"\n\n  \n", "train.csv", "empty"),
        (b"a,b\n\xff\xfe,1\n", "train.csv", "not UTF-8"),
        (b"a,b\n1,2\n3,4,5\n", "train.csv", "near line 3"),
        (b"a,b\n1,2,3\n", "train.csv", "more fields than its header"),
        (b"a,b\n", "train.csv", "no rows"),
        (b"a,b,a\n1,2,3\n", "train.csv", "repeats the column name(s) 'a'"),
        (b"PAR1 not really parquet PAR1", "train.parquet", "corrupt"),
    ],
)
def test_load_table_refusals(data, filename, expected):
    assert expected in refusal(load_table, data, filename=filename)


def test_load_table_refuses_parquet_with_duplicate_columns():
    table = pa.table([pa.array([1, 2]), pa.array([3, 4])], names=["a", "a"])
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    assert "'a'" in refusal(load_table, buffer.getvalue(), filename="t.parquet")


def test_load_table_refuses_oversize(train):
    assert "larger than the limit" in refusal(
        load_table, _csv(train), filename="t.csv", max_bytes=100
    )


# --------------------------------------------------------------------------- build_target


def test_build_target_returns_ordered_target(forest, train, test):
    shuffled = train[["y", "f2", "f0", "f1"]]
    target = build_target(forest, shuffled, test, label="y", record_key=b"k")
    assert isinstance(target, Target)
    assert target.feature_names == FEATURES
    assert target.y_train.dtype == forest.classes_.dtype
    assert (target.n_members, target.n_non_members) == (40, 20)
    assert target.record_key == b"k"
    np.testing.assert_array_equal(target.X_train.to_numpy(), train[FEATURES].to_numpy())


def test_build_target_from_loaded_files(forest_skops, train, test):
    model = load_model(forest_skops)
    target = build_target(
        model,
        load_table(_csv(train), filename="train.csv"),
        load_table(_csv(test), filename="test.csv"),
        label="y",
    )
    np.testing.assert_array_equal(target.y_test, test["y"].to_numpy())


def test_build_target_refuses_missing_label(forest, train, test):
    message = refusal(build_target, forest, train, test.drop(columns="y"), label="y")
    assert "label column 'y' is not in the test file" in message


def test_build_target_refuses_missing_test_column(forest, train, test):
    message = refusal(build_target, forest, train, test.drop(columns="f1"), label="y")
    assert "missing 'f1'" in message


def test_build_target_refuses_extra_test_column(forest, train, test):
    message = refusal(build_target, forest, train, test.assign(extra=1), label="y")
    assert "extra 'extra'" in message


def test_build_target_refuses_columns_the_model_lacks(forest, train, test):
    message = refusal(build_target, forest, train.assign(f9=1.0), test.assign(f9=1.0), label="y")
    assert "do not match the model's" in message
    assert "extra 'f9'" in message


def test_build_target_checks_feature_count_without_names(train, test):
    model = RandomForestClassifier(n_estimators=3, random_state=0)
    model.fit(train[FEATURES].to_numpy(), train["y"])
    message = refusal(build_target, model, train.assign(f9=1.0), test.assign(f9=1.0), label="y")
    assert "expects 3 features but the data has 4" in message


def test_build_target_refuses_missing_values_without_showing_them(forest, train, test):
    broken = train.copy()
    broken.loc[[3, 5], "f1"] = np.nan
    broken.loc[0, "f2"] = 123456.789
    message = refusal(build_target, forest, broken, test, label="y")
    assert "Column 'f1' of the training file has 2 missing values" in message
    assert "123456" not in message


def test_build_target_refuses_infinite_values(forest, train, test):
    broken = test.copy()
    broken.loc[1, "f0"] = np.inf
    assert "1 infinite value" in refusal(build_target, forest, train, broken, label="y")


def test_build_target_refuses_text_for_non_pipeline(forest, train, test):
    broken = train.assign(f2=["secret-value"] * len(train))
    message = refusal(build_target, forest, broken, test, label="y")
    assert "Column 'f2'" in message
    assert "not numeric" in message
    assert "secret-value" not in message


def test_build_target_accepts_text_for_pipeline():
    data = pd.DataFrame(
        {"colour": ["red", "blue"] * 10, "size": np.arange(20.0), "y": [0, 1, 1, 0] * 5}
    )
    encoder = make_column_transformer((OneHotEncoder(), ["colour"]), remainder="passthrough")
    model = make_pipeline(encoder, LogisticRegression()).fit(data[["colour", "size"]], data["y"])
    loaded = load_model(skops.io.dumps(model))
    csv = load_table(_csv(data), filename="d.csv")
    target = build_target(loaded, csv, csv, label="y")
    assert isinstance(target.model, Pipeline)
    assert target.feature_names == ["colour", "size"]


def test_build_target_refuses_unknown_label(forest, train, test):
    broken = test.copy()
    broken.loc[0, "y"] = 7
    message = refusal(build_target, forest, train, broken, label="y")
    assert "labels the model does not know: '7'" in message


def test_build_target_refuses_missing_label_values(forest, train, test):
    broken = test.astype({"y": float})
    broken.loc[0, "y"] = np.nan
    assert "1 missing label" in refusal(build_target, forest, train, broken, label="y")


def test_build_target_coerces_int_labels_to_text_classes(train, test):
    model = LogisticRegression().fit(train[FEATURES], train["y"].astype(str))
    target = build_target(model, train, test, label="y")
    assert target.y_train.dtype == model.classes_.dtype
    np.testing.assert_array_equal(target.y_test, test["y"].astype(str).to_numpy())


def test_build_target_coerces_text_and_float_labels_to_int_classes(forest, train, test):
    target = build_target(forest, train.astype({"y": str}), test.astype({"y": float}), label="y")
    assert target.y_train.dtype == forest.classes_.dtype
    np.testing.assert_array_equal(target.y_train, train["y"].to_numpy())


def test_build_target_refuses_tiny_sets(forest, train, test):
    assert "at least 2 rows" in refusal(build_target, forest, train, test.head(1), label="y")
    one_class = train[train["y"] == 1]
    assert "at least 2 classes" in refusal(build_target, forest, one_class, test, label="y")


# --------------------------------------------------------------------------- load_record


@pytest.mark.parametrize(
    "data",
    [
        b'{"f2": 3, "f0": 1.5, "f1": -2, "y": 1}',
        '{"f2": 3, "f0": 1.5, "f1": -2, "y": 1}',
        {"f2": 3, "f0": 1.5, "f1": -2, "y": 1},
    ],
)
def test_load_record_reads_one_row(data):
    X, y = load_record(data, feature_names=FEATURES, label="y")
    assert list(X.columns) == FEATURES
    assert X.iloc[0].tolist() == [1.5, -2, 3]
    np.testing.assert_array_equal(y, [1])


def test_load_record_without_label(forest):
    X, y = load_record('{"f0": 0, "f1": 1, "f2": 2}', feature_names=FEATURES, label="y")
    assert y is None
    assert forest.predict(X).shape == (1,)


def test_load_record_allows_text_only_when_asked():
    data = '{"colour": "red", "size": 2}'
    assert "must be a finite number" in refusal(load_record, data, feature_names=["colour", "size"])
    X, _ = load_record(data, feature_names=["colour", "size"], allow_text=True)
    assert X.loc[0, "colour"] == "red"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('{"f0": 1,', "not valid JSON (line 1"),
        (b'{"f0": "\xff"}', "not UTF-8"),
        ("[1, 2, 3]", "must be one JSON object"),
        ("3", "must be one JSON object"),
        (["f0"], "JSON text or an object"),
        ('{"f0": 1, "f1": 2}', "lacks the feature(s) 'f2'"),
        ('{"f0": 1, "f1": 2, "f2": 3, "zz": 4}', "unknown key(s) 'zz'"),
        ('{"f0": 1, "f0": 1, "f1": 2, "f2": 3}', "repeats the key(s) 'f0'"),
        ('{"f0": null, "f1": 2, "f2": 3}', "'f0' of the record has no value"),
        ('{"f0": NaN, "f1": 2, "f2": 3}', "'f0' of the record must be a finite number"),
        ('{"f0": [1], "f1": 2, "f2": 3}', "'f0' of the record must be a finite number"),
        ('{"f0": 1, "f1": 2, "f2": 3, "y": [1]}', "label must be a number or text"),
        ("[" * 100_000, "not valid JSON"),
        (" " * (intake.MAX_RECORD_BYTES + 1), "larger than the limit"),
    ],
)
def test_load_record_refusals(data, expected):
    assert expected in refusal(load_record, data, feature_names=FEATURES, label="y")


def test_load_record_refuses_secret_values_quietly():
    message = refusal(
        load_record, '{"f0": "secret-value", "f1": 1, "f2": 2}', feature_names=FEATURES
    )
    assert "secret-value" not in message


def test_load_record_label_is_coerced_with_classes(forest):
    _, y = load_record(
        json.dumps({"f0": 0, "f1": 0, "f2": 0, "y": "1"}), feature_names=FEATURES, label="y"
    )
    labels = intake.coerce_labels(y, classes=forest.classes_)
    assert labels.dtype == forest.classes_.dtype
    assert labels.tolist() == [1]
