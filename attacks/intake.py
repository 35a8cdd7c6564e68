"""Intake of researchers' files: a skops model, data tables and single records.

Image archives (.zip) and NumPy arrays (.npz) are data tables too: they are
read by :mod:`attacks.images`, imported only when one is uploaded, into the
same table of float features and a label column.

Everything here reads untrusted, possibly hostile bytes. Every refusal raises
:class:`attacks.exceptions.IntakeError` carrying one sentence that can be shown
to the researcher as it is: no traceback text and no raw record values. The
model is loaded by :mod:`safe_model.loader`; tables are bounded by what they
really decode to (rows, cells, bytes), never by what they declare.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import warnings
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from attacks.exceptions import IntakeError
from attacks.target import Target
from safe_model import loader
from safe_model.exceptions import ModelRefused
from safe_model.loader import DEFAULT_MAX_BYTES, EXPANSION_LIMIT
from safe_model.refusal import checked_bytes, quote, quote_all, reason, repeated, size

if TYPE_CHECKING:
    from attacks.images import Preprocessing

_NOT_FOUND = object()

#: A single record is a small JSON object; anything larger is refused.
MAX_RECORD_BYTES = 2**20

#: Cap on a table's columns. Intake and the attacks do per-column work in
#: Python, and an audit of more features than this is beyond what the
#: service's shadow models train on in an audit's time.
MAX_COLUMNS = 10_000

#: Cap on the characters of a CSV header: MAX_COLUMNS names of up to 100
#: characters. The header is split before anything else is parsed.
MAX_HEADER_CHARS = 100 * MAX_COLUMNS

#: Caps on a table's rows and cells (rows x columns). Every cell becomes at
#: least 8 bytes in memory, and the audit holds several copies of a table
#: while its shadow models train, so 50 million cells (400 MB as float64) is
#: the most a worker can take; beyond 10 million rows an audit does not end.
MAX_TABLE_ROWS = 10_000_000
MAX_TABLE_CELLS = 50_000_000

#: Kinds of data file read by :mod:`attacks.images`, named by their suffix.
IMAGE_KINDS = ("zip", "npz")

#: Parquet is decoded this many rows at a time, its real rows and bytes
#: counted as they are decoded (never the file's own metadata).
PARQUET_BATCH_ROWS = 65_536


# --------------------------------------------------------------------------- model


def load_model(
    data: bytes,
    *,
    filename: str = "model.skops",
    max_bytes: int = DEFAULT_MAX_BYTES,
    labels: Any = None,
    output: str = "probabilities",
) -> Any:
    """Load a fitted classifier from an untrusted skops or ONNX file.

    The loading is :func:`safe_model.loader.load_model`'s; this wrapper only
    turns its refusal into the attacks library's error.

    Parameters
    ----------
    data : bytes
        Content of the uploaded file.
    filename : str, default="model.skops"
        Name the researcher gave the file; only its extension is read
        (``.onnx``: an ONNX model, whose content must agree).
    max_bytes : int, default=200 MiB
        Largest accepted file.
    labels : array-like, optional
        The training labels: an ONNX model's classes are their sorted values.
    output : {"probabilities", "logits"}, default="probabilities"
        What an ONNX model's output holds.

    Returns
    -------
    model : estimator
        Fitted scikit-learn classifier, or Pipeline ending in one, or an
        :class:`~safe_model.onnx_model.OnnxClassifier`.

    Raises
    ------
    IntakeError
        With the sentence of :class:`safe_model.exceptions.ModelRefused`.
    """
    try:
        return loader.load_model(
            data, filename=filename, max_bytes=max_bytes, labels=labels, output=output
        )
    except ModelRefused as exc:
        raise IntakeError(str(exc)) from exc


# --------------------------------------------------------------------------- tables


def load_table(
    data: bytes,
    *,
    filename: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    preprocessing: Preprocessing | None = None,
) -> pd.DataFrame:
    """Read an untrusted CSV, Parquet, image archive or array file into a DataFrame.

    Parameters
    ----------
    data : bytes
        Content of the uploaded file.
    filename : str
        Name the researcher gave the file. ``.csv`` is read as UTF-8 CSV;
        ``.parquet`` and ``.pq``, or any file opening with the Parquet magic
        ``PAR1``, as Parquet; ``.zip`` as an image archive and ``.npz`` as
        arrays, by :func:`attacks.images.load_images` and
        :func:`attacks.images.load_arrays` at their default limits.
    max_bytes : int, default=200 MiB
        Largest accepted file. A Parquet file may decode to at most
        ``EXPANSION_LIMIT`` times this.
    preprocessing : attacks.images.Preprocessing, optional
        The declared mode and normalisation of an image archive or array
        file; not used for tables.

    Returns
    -------
    DataFrame
        Columns named by strings, a fresh ``RangeIndex`` and at least one row.

    Raises
    ------
    IntakeError
        If the file is empty, too large, of an unknown kind, not UTF-8, not
        parseable, has no rows, repeats a column name, or has more columns
        (``MAX_COLUMNS``), rows (``MAX_TABLE_ROWS``), cells
        (``MAX_TABLE_CELLS``) or decoded bytes than allowed; or, for an
        image archive or array file, as :mod:`attacks.images` refuses it.
    """
    data = checked_bytes(data, max_bytes=max_bytes, what="data file", error=IntakeError)
    kind = _table_kind(data, filename)
    if kind in IMAGE_KINDS:
        from attacks import images  # Pillow is loaded only for image data

        frame = images.load_data(data, kind=kind, preprocessing=preprocessing, max_bytes=max_bytes)
    elif kind == "parquet":
        frame = _read_parquet(data, max_bytes=max_bytes)
    else:
        frame = _read_csv(data)
    return _checked_table(frame)


def table_columns(data: bytes, *, filename: str, max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    """The column names of an untrusted data file, without reading its rows.

    Parameters
    ----------
    data : bytes
        Content of the uploaded file.
    filename : str
        Name the researcher gave the file, read as by :func:`load_table`.
    max_bytes : int, default=200 MiB
        Largest accepted file.

    Returns
    -------
    list of str
        The header of a CSV file or the schema's names of a Parquet file; the
        one label column of an image archive or array file, by
        :func:`attacks.images.label_columns`.

    Raises
    ------
    IntakeError
        If the file is empty, too large, of an unknown kind, not UTF-8, its
        header cannot be parsed, or it has no, repeated or too many columns.
    """
    data = checked_bytes(data, max_bytes=max_bytes, what="data file", error=IntakeError)
    kind = _table_kind(data, filename)
    if kind in IMAGE_KINDS:
        from attacks import images

        return images.label_columns(data, kind=kind)
    if kind == "parquet":
        names = [str(name) for name in _parquet_schema(data).names]
        where = "Parquet file"
    else:
        names = _csv_header(_utf8_text(data))
        where = "CSV file"
    if not names:
        raise IntakeError(f"The {where} has no columns.")
    _check_columns(names, where=where)
    return names


#: Most column names a refusal lists: enough to find the label among them.
MAX_COLUMNS_NAMED = 20


def columns_named(names: list[str], *, limit: int = MAX_COLUMNS_NAMED) -> str:
    """The first ``limit`` column names quoted, then how many more there are.

    Parameters
    ----------
    names : list of str
    limit : int, default=MAX_COLUMNS_NAMED

    Returns
    -------
    str
    """
    shown = ", ".join(quote(name) for name in names[:limit])
    hidden = len(names) - limit
    return f"{shown} and {hidden:,} more" if hidden > 0 else shown


def _table_kind(data: bytes, filename: str) -> str:
    if data.startswith(b"PAR1"):
        return "parquet"
    suffix = PurePath(str(filename)).suffix.lower()
    if suffix in (".csv", ".zip", ".npz"):
        return suffix[1:]
    if suffix in (".parquet", ".pq"):
        raise IntakeError("The data file is named as Parquet but is not a Parquet file.")
    raise IntakeError(
        "Data files must be CSV (.csv), Parquet (.parquet, .pq), a zip of images (.zip) or "
        f"NumPy arrays (.npz), not {quote(suffix or 'none')}."
    )


def _read_csv(data: bytes) -> pd.DataFrame:
    text = _utf8_text(data)
    n_columns = _check_columns(_csv_header(text), where="CSV file")
    frame = _parse_csv(text, nrows=_row_limit(n_columns) + 1)
    _check_rows(len(frame), n_columns=n_columns, where="CSV file")
    return frame


def _utf8_text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IntakeError(
            f"The CSV file is not UTF-8 text (first bad byte at offset {exc.start}); "
            "save it as UTF-8."
        ) from exc


def _csv_header(text: str) -> list[str]:
    """The first non-blank record, split by the csv module before pandas sees the file."""
    head = io.StringIO(text[:MAX_HEADER_CHARS])
    try:
        names = next((row for row in csv.reader(head) if row), [])
    except csv.Error as exc:
        raise IntakeError("The CSV file's header could not be parsed.") from exc
    if head.tell() >= MAX_HEADER_CHARS and len(text) > MAX_HEADER_CHARS:
        raise IntakeError(f"The CSV file's header is longer than {MAX_HEADER_CHARS:,} characters.")
    return names


def _parse_csv(text: str, **options: Any) -> pd.DataFrame:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(io.StringIO(text), index_col=False, **options)
    except pd.errors.EmptyDataError as exc:
        raise IntakeError("The CSV file is empty.") from exc
    except pd.errors.ParserWarning as exc:
        raise IntakeError("The CSV file has rows with more fields than its header.") from exc
    except Exception as exc:
        line = re.search(r"line (\d+)", str(exc))
        where = f" near line {line.group(1)}" if line else ""
        raise IntakeError(f"The CSV file could not be parsed{where}.") from exc


def _read_parquet(data: bytes, *, max_bytes: int) -> pd.DataFrame:
    import pyarrow as pa

    schema = _parquet_schema(data)
    _check_columns(schema.names, where="Parquet file")
    nested = [field.name for field in schema if pa.types.is_nested(field.type)]
    if nested:
        raise IntakeError(
            f"The Parquet file has nested (list, struct or map) columns {quote_all(nested)}; "
            "only flat columns are accepted."
        )
    try:
        batches = _parquet_batches(data, schema, limit=EXPANSION_LIMIT * max_bytes)
        return pa.Table.from_batches(batches, schema=schema).to_pandas()
    except IntakeError:
        raise
    except Exception as exc:
        raise IntakeError(f"The Parquet file could not be read: {reason(exc)}.") from exc


def _parquet_schema(data: bytes) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(io.BytesIO(data)).schema_arrow
    except Exception as exc:
        raise IntakeError("The Parquet file is corrupt or unreadable.") from exc


def _parquet_batches(data: bytes, schema: Any, *, limit: int) -> list:
    """Decode in batches, counting real rows and bytes, and stop at the first cap passed.

    Text columns are read as dictionaries, so a value repeated a billion times
    by run-length encoding is counted before it is ever expanded.
    """
    import pyarrow.parquet as pq

    text = [field.name for field in schema if _is_bytes_like(field.type)]
    parquet = pq.ParquetFile(io.BytesIO(data), read_dictionary=text)
    n_rows = n_bytes = 0
    batches = []
    # a batch never decodes more rows than the limit allows, however wide the table
    batch_rows = max(1, min(PARQUET_BATCH_ROWS, _row_limit(len(schema)) + 1))
    for batch in parquet.iter_batches(batch_size=batch_rows):
        n_rows += batch.num_rows
        _check_rows(n_rows, n_columns=len(schema), where="Parquet file")
        n_bytes += sum(
            _decoded_nbytes(column, field) for column, field in zip(batch.columns, schema)
        )
        if n_bytes > limit:
            raise IntakeError(
                f"The Parquet file is refused: it decodes to more than {size(limit)}."
            )
        batches.append(batch.cast(schema))
    return batches


def _is_bytes_like(data_type: Any) -> bool:
    import pyarrow as pa

    return any(
        test(data_type)
        for test in (
            pa.types.is_string,
            pa.types.is_large_string,
            pa.types.is_binary,
            pa.types.is_large_binary,
        )
    )


def _decoded_nbytes(column: Any, field: Any) -> int:
    """Bytes the column takes once decoded to the type the file declares."""
    import pyarrow.compute as pc

    if not _is_bytes_like(field.type) or not hasattr(column, "dictionary"):
        return column.nbytes
    lengths = pc.take(pc.binary_length(column.dictionary), column.indices)
    return (pc.sum(lengths).as_py() or 0) + 8 * len(column)


def _row_limit(n_columns: int) -> int:
    return min(MAX_TABLE_ROWS, MAX_TABLE_CELLS // max(n_columns, 1))


def _check_rows(n_rows: int, *, n_columns: int, where: str) -> None:
    limit = _row_limit(n_columns)
    if n_rows > limit:
        raise IntakeError(
            f"The {where} is refused: it has more than {limit:,} rows, the most a table of "
            f"{n_columns:,} columns may have ({MAX_TABLE_CELLS:,} cells at most)."
        )


def _check_columns(names: list[str], *, where: str) -> int:
    if len(names) > MAX_COLUMNS:
        raise IntakeError(
            f"The {where} is refused: it has {len(names):,} columns, more than the limit of "
            f"{MAX_COLUMNS:,}."
        )
    _check_unique_names(names, where=where)
    return len(names)


def _checked_table(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    frame.columns = [str(column) for column in frame.columns]
    _check_unique_names(list(frame.columns), where="data file")
    if frame.shape[1] == 0:
        raise IntakeError("The data file has no columns.")
    if frame.shape[0] == 0:
        raise IntakeError("The data file has a header but no rows.")
    return frame


def _check_unique_names(names: list[str], *, where: str) -> None:
    duplicates = repeated(names)
    if duplicates:
        raise IntakeError(f"The {where} repeats the column name(s) {quote_all(duplicates)}.")


# --------------------------------------------------------------------------- target


def build_target(
    model: Any,
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    label: str,
    record_key: bytes = b"",
) -> Target:
    """Check a model against its training and test tables and build the Target.

    Parameters
    ----------
    model : estimator
        Fitted classifier, as returned by :func:`load_model`.
    train, test : DataFrame
        Members and non-members, each holding the ``label`` column and the
        same feature columns.
    label : str
        Name of the label column; every other column is a feature.
    record_key : bytes, default=b""
        Key naming records in reports, see :class:`attacks.target.Target`.

    Returns
    -------
    Target
        Features in the order the model expects, with fresh indexes, and
        labels with the dtype of ``model.classes_``.

    Raises
    ------
    IntakeError
        If columns are missing, extra or do not match the model, a value is
        missing or infinite, a feature is not numeric (only a Pipeline may take
        text), a label is unknown to the model, or a set is too small.
    """
    train = _str_columns(train, where="training file")
    test = _str_columns(test, where="test file")
    features = _feature_columns(model, train, test, label=label)
    allow_text = isinstance(model, Pipeline)
    classes = _model_classes(model)
    X_train = _feature_frame(train, features, allow_text=allow_text, where="training file")
    X_test = _feature_frame(test, features, allow_text=allow_text, where="test file")
    y_train = coerce_labels(train[label], classes=classes, where="training file")
    y_test = coerce_labels(test[label], classes=classes, where="test file")
    _check_sizes(y_train, y_test)
    _check_predicts(model, X_train, where="training file")
    _check_predicts(model, X_test, where="test file")
    return Target(model, X_train, y_train, X_test, y_test, record_key=record_key)


def _str_columns(frame: pd.DataFrame, *, where: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise IntakeError(f"The {where} must be a table.")
    frame = frame.rename(columns=str)
    _check_unique_names(list(frame.columns), where=where)
    return frame


def _model_classes(model: Any) -> np.ndarray:
    try:
        classes = np.asarray(model.classes_)
    except Exception as exc:
        raise IntakeError("The model is not a fitted classifier: it has no classes_.") from exc
    if classes.ndim != 1 or len(classes) < 2:
        raise IntakeError("The model is not a fitted classifier: it has fewer than 2 classes.")
    return classes


def _feature_columns(
    model: Any, train: pd.DataFrame, test: pd.DataFrame, *, label: str
) -> list[str]:
    for frame, where in ((train, "training file"), (test, "test file")):
        label_column(frame, label=label, where=where)
    train_features = [c for c in train.columns if c != label]
    difference = _difference(train_features, [c for c in test.columns if c != label])
    if difference:
        raise IntakeError(
            f"The test file's feature columns differ from the training file's: {difference}."
        )
    if not train_features:
        raise IntakeError(f"The data has no feature columns besides the label {quote(label)}.")
    return _model_order(model, train_features)


def label_column(frame: pd.DataFrame, *, label: str, where: str = "training file") -> pd.Series:
    """The label column of a table read by :func:`load_table`.

    Parameters
    ----------
    frame : DataFrame
    label : str
        Name of the label column.
    where : str, default="training file"
        What the table came from, for the refusal sentence.

    Returns
    -------
    Series

    Raises
    ------
    IntakeError
        If the table has no such column.
    """
    if label not in frame.columns:
        raise IntakeError(
            f"The label column {quote(label)} is not in the {where}; "
            f"its columns are {columns_named(list(frame.columns))}."
        )
    return frame[label]


def _model_order(model: Any, columns: list[str]) -> list[str]:
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        expected = [str(name) for name in names]
        difference = _difference(expected, columns)
        if difference:
            raise IntakeError(f"The data's feature columns do not match the model's: {difference}.")
        return expected
    n_features = getattr(model, "n_features_in_", None)
    if n_features is not None and n_features != len(columns):
        raise IntakeError(
            f"The model expects {n_features} features but the data has {len(columns)}."
        )
    return columns


def _difference(expected: list[str], got: list[str]) -> str:
    expected_set, got_set = set(expected), set(got)
    missing = [c for c in expected if c not in got_set]
    extra = [c for c in got if c not in expected_set]
    parts = [f"missing {quote_all(missing)}"] if missing else []
    parts += [f"extra {quote_all(extra)}"] if extra else []
    return "; ".join(parts)


def _feature_frame(
    frame: pd.DataFrame, features: list[str], *, allow_text: bool, where: str
) -> pd.DataFrame:
    """The feature columns, each checked in order, counting over the whole frame at once."""
    X = frame[features].reset_index(drop=True)
    n_missing = X.isna().sum().to_dict()
    n_infinite = _infinite_counts(X)
    for name, dtype in X.dtypes.items():
        problem = _column_problem(
            X[name] if not _is_numeric(dtype) else None,
            dtype,
            n_missing=n_missing[name],
            n_infinite=n_infinite.get(name, 0),
            allow_text=allow_text,
        )
        if problem:
            raise IntakeError(f"Column {quote(name)} of the {where} {problem}.")
    extension = {
        name: dtype.numpy_dtype for name, dtype in X.dtypes.items() if hasattr(dtype, "numpy_dtype")
    }
    return X.astype(extension) if extension else X


def _infinite_counts(X: pd.DataFrame) -> dict[str, int]:
    floats = X.select_dtypes(include="floating")
    if floats.shape[1] == 0:
        return {}
    counts = np.isinf(floats.to_numpy(dtype=float, na_value=np.nan)).sum(axis=0)
    return dict(zip(floats.columns, counts.tolist()))


def _column_problem(
    series: pd.Series | None, dtype: Any, *, n_missing: int, n_infinite: int, allow_text: bool
) -> str | None:
    """What is wrong with one feature column, or None; ``series`` is given if not numeric."""
    if n_missing:
        return f"has {_count(n_missing, 'missing value')}"
    if series is None:
        return f"has {_count(n_infinite, 'infinite value')}" if n_infinite else None
    text = _is_text(series)
    if text and allow_text:
        return None
    kind = "text" if text else f"of type {dtype}"
    return (
        f"is {kind}, not numeric; only a Pipeline model that encodes its own inputs may take "
        "text columns"
    )


def _is_numeric(dtype: Any) -> bool:
    if isinstance(dtype, pd.CategoricalDtype):
        return False
    if pd.api.types.is_bool_dtype(dtype):
        return True
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype)


def _is_text(series: pd.Series) -> bool:
    if pd.api.types.is_string_dtype(series.dtype) and not pd.api.types.is_object_dtype(
        series.dtype
    ):
        return True
    if isinstance(series.dtype, pd.CategoricalDtype):
        return _is_text(pd.Series(series.cat.categories))
    return pd.api.types.is_object_dtype(series.dtype) and all(
        isinstance(value, str) for value in series
    )


def coerce_labels(values: Any, *, classes: Any, where: str = "record") -> np.ndarray:
    """Map labels onto the model's classes, tolerating int versus text.

    A CSV gives ``1`` where the model may hold ``np.int64(1)`` or ``"1"``, and
    ``1.0`` where it holds ``1``; each label is matched exactly first, then by
    a canonical text form.

    Parameters
    ----------
    values : array-like of shape (n_records,)
        Labels as read from a file or record.
    classes : array-like of shape (n_classes,)
        The model's ``classes_``.
    where : str, default="record"
        What the labels came from, for the refusal sentence.

    Returns
    -------
    ndarray of shape (n_records,)
        The labels, with the dtype of ``classes``.

    Raises
    ------
    IntakeError
        If a label is missing, not a number or text, or not one of ``classes``.
    """
    classes = np.asarray(classes)
    series = pd.Series(np.asarray(values, dtype=object))
    n_missing = int(series.isna().sum())
    if n_missing:
        raise IntakeError(f"The {where} has {_count(n_missing, 'missing label')}.")
    try:
        codes, uniques = pd.factorize(series)
    except TypeError as exc:
        raise IntakeError(f"The {where} has labels that are neither numbers nor text.") from exc
    lookup = _class_lookup(classes)
    mapped = [lookup(value) for value in uniques]
    unknown = [value for value, match in zip(uniques, mapped) if match is _NOT_FOUND]
    if unknown:
        raise IntakeError(
            f"The {where} has labels the model does not know: {quote_all(unknown)}; "
            f"its classes are {quote_all(classes.tolist())}."
        )
    return np.asarray(mapped, dtype=classes.dtype)[codes]


def _class_lookup(classes: np.ndarray) -> Any:
    exact, canonical = {}, {}
    for cls in classes.tolist():
        exact.setdefault(cls, cls)
        canonical.setdefault(_canonical(cls), cls)

    def lookup(value: Any) -> Any:
        value = value.item() if isinstance(value, np.generic) else value
        try:
            if value in exact:
                return exact[value]
        except TypeError:
            return _NOT_FOUND
        key = _canonical(value)
        return _NOT_FOUND if key is None else canonical.get(key, _NOT_FOUND)

    return lookup


def _canonical(value: Any) -> str | None:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return _canonical_float(float(value))
    if isinstance(value, str):
        try:
            return _canonical_float(float(value.strip()))
        except ValueError:
            return value.strip()
    return None


def _canonical_float(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _check_sizes(y_train: np.ndarray, y_test: np.ndarray) -> None:
    for labels, where in ((y_train, "training file"), (y_test, "test file")):
        if len(labels) < 2:
            raise IntakeError(f"The {where} needs at least 2 rows; it has {len(labels)}.")
    if len(set(y_train.tolist())) < 2:
        raise IntakeError("The training file's labels must cover at least 2 classes.")


def _check_predicts(model: Any, X: pd.DataFrame, *, where: str) -> None:
    try:
        model.predict(X.head(5))
    except ModelRefused as exc:  # an ONNX graph that failed: its own sentence
        raise IntakeError(str(exc)) from None
    except Exception as exc:
        raise IntakeError(
            f"The model could not predict on the {where} ({type(exc).__name__}); "
            "check that its columns have the types the model was trained on."
        ) from exc


# --------------------------------------------------------------------------- record


def load_record(
    data: bytes | str | dict,
    *,
    feature_names: list[str],
    label: str | None = None,
    allow_text: bool = False,
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Read one record, given as a JSON object mapping features to values.

    Parameters
    ----------
    data : bytes, str or dict
        UTF-8 JSON text, or the already decoded object.
    feature_names : list of str
        The model's features, in order; all must be present.
    label : str, optional
        Name of the label key, which may also be present.
    allow_text : bool, default=False
        Accept text values, as :func:`build_target` does for a Pipeline model.

    Returns
    -------
    X : DataFrame of shape (1, n_features)
        The record, columns in ``feature_names`` order.
    y : ndarray of shape (1,) or None
        The label, or None when the record has none. Pass it through
        :func:`coerce_labels` to match the model's classes.

    Raises
    ------
    IntakeError
        If the record is not a JSON object, misses a feature, has an unknown
        key, or holds a value that is not a finite number (or text, if
        allowed).
    """
    record = _record_object(data)
    _check_record_keys(record, feature_names=list(feature_names), label=label)
    row = {
        name: [_record_value(record[name], name=name, allow_text=allow_text)]
        for name in feature_names
    }
    X = pd.DataFrame(row, columns=list(feature_names))
    value = record.get(label) if label is not None else None
    y = None if value is None else np.asarray([_record_label(value)])
    return X, y


def _record_object(data: Any) -> dict:
    record = data if isinstance(data, dict) else _parse_record(data)
    if not isinstance(record, dict):
        raise IntakeError(
            "The record must be one JSON object mapping each feature name to its value."
        )
    if not all(isinstance(key, str) for key in record):
        raise IntakeError("The record's keys must be feature names.")
    return record


def _parse_record(data: Any) -> Any:
    if not isinstance(data, (bytes, bytearray, str)):
        raise IntakeError("The record must be given as JSON text or an object.")
    if len(data) > MAX_RECORD_BYTES:
        raise IntakeError(f"The record is larger than the limit of {size(MAX_RECORD_BYTES)}.")
    try:
        text = data.decode("utf-8-sig") if isinstance(data, (bytes, bytearray)) else data
        return json.loads(text, object_pairs_hook=_unique_keys)
    except IntakeError:
        raise
    except UnicodeDecodeError as exc:
        raise IntakeError("The record is not UTF-8 text.") from exc
    except json.JSONDecodeError as exc:
        raise IntakeError(
            f"The record is not valid JSON (line {exc.lineno}, column {exc.colno})."
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise IntakeError("The record is not valid JSON.") from exc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    duplicates = repeated(key for key, _ in pairs)
    if duplicates:
        raise IntakeError(f"The record repeats the key(s) {quote_all(duplicates)}.")
    return dict(pairs)


def _check_record_keys(record: dict, *, feature_names: list[str], label: str | None) -> None:
    missing = [name for name in feature_names if name not in record]
    if missing:
        raise IntakeError(f"The record lacks the feature(s) {quote_all(missing)}.")
    known = set(feature_names) | ({label} if label is not None else set())
    unknown = [key for key in record if key not in known]
    if unknown:
        raise IntakeError(f"The record has unknown key(s) {quote_all(unknown)}.")


def _record_value(value: Any, *, name: str, allow_text: bool) -> Any:
    if value is None:
        raise IntakeError(f"Feature {quote(name)} of the record has no value.")
    if isinstance(value, bool) or (isinstance(value, str) and allow_text):
        return value
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    expected = "a finite number or text" if allow_text else "a finite number"
    raise IntakeError(f"Feature {quote(name)} of the record must be {expected}.")


def _record_label(value: Any) -> Any:
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise IntakeError("The record's label must be a number or text.")


# --------------------------------------------------------------------------- wording


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
