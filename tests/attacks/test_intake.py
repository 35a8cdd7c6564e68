"""Tests of attacks.intake: hostile files are refused with one clear sentence."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import skops.io
from sklearn.compose import make_column_transformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder

from attacks import intake
from attacks.exceptions import IntakeError
from attacks.intake import build_target, load_model, load_record, load_table
from attacks.target import Target
from safe_model import loader
from safe_model.exceptions import ModelRefused
from safe_model.refusal import repeated
from tests import hostile_files
from tests.intake_support import FEATURES, one_sentence


def refusal(function, *args, **kwargs) -> str:
    """Call ``function``, expect IntakeError, and return its one-line message."""
    return one_sentence(IntakeError, function, *args, **kwargs)


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


# --------------------------------------------------------------------------- load_model
# The loader itself is tested in tests/safe_model/test_loader.py.


def test_load_model_refuses_with_the_loaders_sentence(forest_skops):
    with pytest.raises(ModelRefused) as expected:
        loader.load_model(forest_skops, max_bytes=1000)
    assert refusal(load_model, forest_skops, max_bytes=1000) == str(expected.value)


def test_load_model_returns_the_loaded_classifier(forest, forest_skops, test):
    model = load_model(forest_skops, filename="forest.skops")
    np.testing.assert_array_equal(model.predict(test[FEATURES]), forest.predict(test[FEATURES]))


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


def _parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def test_load_table_refuses_parquet_row_bomb_by_rows_decoded(monkeypatch):
    data = hostile_files.parquet_row_bomb(200_000)
    assert len(data) < 100_000
    monkeypatch.setattr(intake, "MAX_TABLE_ROWS", 100_000)
    message = refusal(load_table, data, filename="bomb.parquet")
    assert message == (
        "The Parquet file is refused: it has more than 100,000 rows, the most a table of "
        "2 columns may have (50,000,000 cells at most)."
    )


def test_parquet_row_bomb_metadata_understates_it():
    data = hostile_files.parquet_row_bomb(200_000)
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    assert declared < 200_000 * 16 // 10  # what the bomb decodes to, 16 bytes a row


def test_load_table_refuses_parquet_row_bomb_at_the_default_caps():
    data = hostile_files.parquet_row_bomb(intake.MAX_TABLE_ROWS + 1)
    assert "more than 10,000,000 rows" in refusal(load_table, data, filename="bomb.parquet")


def test_load_table_caps_parquet_cells(monkeypatch):
    monkeypatch.setattr(intake, "MAX_TABLE_CELLS", 100)
    data = _parquet(pa.table({f"c{i}": np.arange(11) for i in range(10)}))
    assert "more than 10 rows, the most a table of 10 columns" in refusal(
        load_table, data, filename="t.parquet"
    )


def test_load_table_refuses_parquet_text_bomb_before_expanding_it():
    data = hostile_files.parquet_text_bomb(n_rows=2**12, value_bytes=2**20)  # 4 GiB decoded
    assert len(data) < 2**20
    message = refusal(load_table, data, filename="bomb.parquet", max_bytes=2**20)
    assert message == "The Parquet file is refused: it decodes to more than 4 MiB."


def test_load_table_reads_parquet_text_and_categories():
    frame = pd.DataFrame({"s": ["a", "bb", "a"], "c": pd.Categorical(["u", "v", "u"])})
    loaded = load_table(_parquet(pa.Table.from_pandas(frame)), filename="t.parquet")
    assert loaded["s"].tolist() == ["a", "bb", "a"]
    assert loaded["c"].tolist() == ["u", "v", "u"]


def test_load_table_refuses_nested_parquet_columns():
    data = _parquet(pa.table({"a": [[1, 2], [3]], "y": [0, 1]}))
    assert "nested (list, struct or map) columns 'a'" in refusal(
        load_table, data, filename="t.parquet"
    )


def test_load_table_refuses_wide_csv_quickly_in_one_sentence():
    data = hostile_files.csv_wide(20_000)
    assert len(data) < 600_000
    message = refusal(load_table, data, filename="wide.csv")
    assert (
        message == "The CSV file is refused: it has 20,000 columns, more than the limit of 10,000."
    )


def test_load_table_refuses_wide_parquet():
    data = _parquet(pa.table({f"c{i}": [0] for i in range(intake.MAX_COLUMNS + 1)}))
    assert "more than the limit of 10,000" in refusal(load_table, data, filename="t.parquet")


def test_load_table_finds_a_repeated_name_among_many_columns():
    data = hostile_files.csv_wide(intake.MAX_COLUMNS, repeat="c7")
    assert refusal(load_table, data, filename="t.csv") == (
        "The CSV file repeats the column name(s) 'c7'."
    )


class _CountingName(str):
    """A column name that counts how often it is hashed and compared."""

    n_hashes = 0
    n_comparisons = 0

    def __hash__(self):
        type(self).n_hashes += 1
        return str.__hash__(self)

    def __eq__(self, other):
        type(self).n_comparisons += 1
        return str.__eq__(self, other)


def test_the_duplicate_check_is_linear_in_the_columns(monkeypatch):
    names = [_CountingName(f"c{i}") for i in range(20_000)] + [_CountingName("c3")]
    monkeypatch.setattr(_CountingName, "n_hashes", 0)
    monkeypatch.setattr(_CountingName, "n_comparisons", 0)
    assert repeated(names) == ["c3"]
    # a list.count per name would compare 20,001 x 20,001 times
    assert _CountingName.n_hashes == len(names)
    assert _CountingName.n_comparisons < 100


def test_load_table_caps_csv_rows(monkeypatch):
    monkeypatch.setattr(intake, "MAX_TABLE_ROWS", 5)
    message = refusal(load_table, b"a,b\n" + b"1,2\n" * 6, filename="t.csv")
    assert "more than 5 rows" in message
    assert len(load_table(b"a,b\n" + b"1,2\n" * 5, filename="t.csv")) == 5


def test_load_table_refuses_a_csv_header_longer_than_the_cap(monkeypatch):
    monkeypatch.setattr(intake, "MAX_HEADER_CHARS", 100)
    data = ("x" * 200 + ",b\n1,2\n").encode()
    assert "header is longer than 100 characters" in refusal(load_table, data, filename="t.csv")


def test_load_table_reads_quoted_header_names():
    data = b'"a,1","b\nc"\n1,2\n'
    assert list(load_table(data, filename="t.csv").columns) == ["a,1", "b\nc"]


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


def test_build_target_turns_nullable_numbers_into_numpy(forest, train, test):
    nullable = train.astype({"f0": "Float64"})
    target = build_target(forest, nullable, test, label="y")
    assert target.X_train["f0"].dtype == np.float64
    broken = nullable.copy()
    broken.loc[2, "f0"] = pd.NA
    assert "1 missing value" in refusal(build_target, forest, broken, test, label="y")


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
        ("{" + ", ".join(f'"k{i % 3}": 1' for i in range(50_000)) + "}", "repeats the key(s)"),
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
