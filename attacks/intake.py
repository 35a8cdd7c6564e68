"""Intake of researchers' files: a skops model, data tables and single records.

Everything here reads untrusted, possibly hostile bytes. Every refusal raises
:class:`attacks.exceptions.IntakeError` carrying one sentence that can be shown
to the researcher as it is: no traceback text and no raw record values.
Pickle and joblib files are refused without being unpickled, and a skops file
is loaded only when every type it names passes :func:`type_is_allowed`.
"""

from __future__ import annotations

import importlib
import io
import json
import math
import re
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse
import skops.io
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from attacks.exceptions import IntakeError
from attacks.target import Target

#: Default size cap of one uploaded file.
DEFAULT_MAX_BYTES = 512 * 2**20

#: A zip or Parquet file may expand to at most this many times the size cap;
#: beyond that it is treated as a decompression bomb and refused unread.
EXPANSION_LIMIT = 4

#: Cap on the members of a skops zip. Each array is one member: a random
#: forest of 100 trees has about 500, and a HistGradientBoosting model with
#: 1000 iterations over 10 classes about 30,000.
MAX_ZIP_MEMBERS = 50_000

#: A single record is a small JSON object; anything larger is refused.
MAX_RECORD_BYTES = 2**20

#: Top-level packages whose classes a skops model may name.
ALLOWED_PACKAGES = frozenset({"sklearn", "numpy", "scipy"})

#: File extensions of pickle-based formats, refused whatever their content.
PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib", ".sav"})

#: Opening bytes of joblib's compressed dumps: zlib (levels 1, 2-5, 6, 7-9),
#: gzip, bz2, xz, raw lzma, lz4 and joblib's old "ZF" container.
COMPRESSED_PICKLE_MAGICS = (
    b"\x78\x01",
    b"\x78\x5e",
    b"\x78\x9c",
    b"\x78\xda",
    b"\x1f\x8b",
    b"BZh",
    b"\xfd7zXZ\x00",
    b"\x5d\x00\x00",
    b"\x04\x22\x4d\x18",
    b"ZF0x",
)

PICKLE_REFUSAL = (
    "Pickle and joblib files are refused because loading them can run arbitrary code; "
    "convert the model inside your project with: "
    "python -c \"import joblib, skops.io; skops.io.dump(joblib.load('model.pkl'), "
    "'model.skops')\""
)

#: Module path segments never imported while checking a type name: tests,
#: build tooling, vendored third-party code and dunder modules such as
#: ``__main__``, whose import can run a program.
BLOCKED_SEGMENTS = frozenset({"conftest", "distutils", "externals", "f2py", "_pyinstaller"})

#: Most names and values quoted in one refusal sentence.
MAX_QUOTED = 5

_DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_HEAP_TYPE_FLAG = 1 << 9  # Py_TPFLAGS_HEAPTYPE: set on classes defined in Python
_ARRAY_CONTAINERS = (np.ndarray, scipy.sparse.spmatrix, scipy.sparse.sparray)
_NOT_FOUND = object()


# --------------------------------------------------------------------------- model


def load_model(
    data: bytes, *, filename: str = "model.skops", max_bytes: int = DEFAULT_MAX_BYTES
) -> Any:
    """Load a fitted classifier from an untrusted skops file.

    Parameters
    ----------
    data : bytes
        Content of the uploaded file.
    filename : str, default="model.skops"
        Name the researcher gave the file; only its extension is read.
    max_bytes : int, default=512 MiB
        Largest accepted file. Its members may expand to at most
        ``EXPANSION_LIMIT`` times this.

    Returns
    -------
    model : estimator
        Fitted scikit-learn classifier, or Pipeline ending in one.

    Raises
    ------
    IntakeError
        If the file is pickle or joblib, not a sound skops zip, too large, names
        a type that :func:`type_is_allowed` refuses, or does not hold a fitted
        classifier.
    """
    data = _checked_bytes(data, max_bytes=max_bytes, what="model file")
    if _looks_like_pickle(data, filename):
        raise IntakeError(PICKLE_REFUSAL)
    _check_skops_zip(data, max_bytes=max_bytes)
    trusted = _allowed_untrusted_types(data)
    model = _skops_call(skops.io.loads, data, trusted=trusted)
    _check_fitted_classifier(model)
    return model


def type_is_allowed(name: str) -> bool:
    """Whether a type named in a skops file may be loaded.

    A name is allowed only if it is a dotted path under ``sklearn``, ``numpy``
    or ``scipy`` that imports to a class defined in one of those packages, and
    the class has no finalizer (``__del__`` runs on attacker-set attributes:
    NumPy's ``DataSource`` deletes a directory). Functions are refused. Classes
    of NumPy and SciPy must moreover be compiled types or array containers,
    which excludes Python-level helpers such as ``numpy.memmap`` (writes
    files), ``numpy.vectorize`` or SciPy's ``_FunctionWrapper`` (binds
    arguments to any callable).

    Parameters
    ----------
    name : str
        Fully qualified name, as listed by ``skops.io.get_untrusted_types``.

    Returns
    -------
    bool
    """
    if not _DOTTED_NAME.fullmatch(name) or not _module_path_is_allowed(name):
        return False
    module_name, _, attribute = name.rpartition(".")
    cls = _import_attribute(module_name, attribute)
    return isinstance(cls, type) and _class_is_allowed(cls)


def _module_path_is_allowed(path: str) -> bool:
    parts = path.split(".")
    return parts[0] in ALLOWED_PACKAGES and not any(_segment_is_blocked(p) for p in parts)


def _segment_is_blocked(segment: str) -> bool:
    if segment.startswith("__") or segment in BLOCKED_SEGMENTS:
        return True
    return segment.lstrip("_").startswith("test")


def _import_attribute(module_name: str, attribute: str) -> Any:
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attribute, _NOT_FOUND)
    except (Exception, SystemExit):
        return _NOT_FOUND


def _class_is_allowed(cls: type) -> bool:
    module = getattr(cls, "__module__", None)
    if not isinstance(module, str) or not _module_path_is_allowed(module):
        return False
    if any("__del__" in vars(klass) for klass in cls.__mro__ if klass is not object):
        return False
    if module.partition(".")[0] == "sklearn":
        return True
    if issubclass(cls, np.memmap):
        return False
    return not cls.__flags__ & _HEAP_TYPE_FLAG or issubclass(cls, _ARRAY_CONTAINERS)


def _checked_bytes(data: Any, *, max_bytes: int, what: str) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise IntakeError(f"The {what} must be given as bytes.")
    data = bytes(data)
    if not data:
        raise IntakeError(f"The {what} is empty.")
    if len(data) > max_bytes:
        raise IntakeError(f"The {what} is larger than the limit of {_size(max_bytes)}.")
    return data


def _looks_like_pickle(data: bytes, filename: str) -> bool:
    suffixes = [suffix.lower() for suffix in PurePath(str(filename)).suffixes]
    if suffixes[-1:] != [".skops"] and set(suffixes) & PICKLE_SUFFIXES:
        return True
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return True
    if data.startswith(COMPRESSED_PICKLE_MAGICS):
        return True
    # protocols 0 and 1 open with MARK, GLOBAL, EMPTY_LIST/DICT/TUPLE and end with STOP
    return data[:1] in (b"(", b"c", b"]", b"}", b")") and data.rstrip()[-1:] == b"."


def _check_skops_zip(data: bytes, *, max_bytes: int) -> None:
    if not data.startswith(b"PK\x03\x04"):
        raise IntakeError("The model file is not a skops file: it is not a zip archive.")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except Exception as exc:
        raise IntakeError(
            "The model file is not a skops file: its zip archive is corrupt."
        ) from exc
    if len(members) > MAX_ZIP_MEMBERS:
        raise IntakeError(
            f"The model file is refused: it holds {len(members)} zip members, "
            f"more than the limit of {MAX_ZIP_MEMBERS}."
        )
    if sum(member.file_size for member in members) > EXPANSION_LIMIT * max_bytes:
        raise IntakeError(
            "The model file is refused: it would expand to more than "
            f"{_size(EXPANSION_LIMIT * max_bytes)}."
        )
    if "schema.json" not in {member.filename for member in members}:
        raise IntakeError("The model file is not a skops file: it has no schema.json.")


def _allowed_untrusted_types(data: bytes) -> list[str]:
    names = _skops_call(skops.io.get_untrusted_types, data=data)
    refused = [name for name in names if not type_is_allowed(name)]
    if refused:
        raise IntakeError(
            f"The model file names types that are not allowed: {_quote_all(refused)}; "
            "only scikit-learn, NumPy and SciPy classes are accepted."
        )
    return names


def _skops_call(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except IntakeError:
        raise
    except Exception as exc:
        raise IntakeError(
            f"The model file could not be read as a skops file: {_reason(exc)}."
        ) from exc


def _check_fitted_classifier(model: Any) -> None:
    try:
        reason = _classifier_problem(model)
    except Exception:
        reason = "its attributes could not be inspected"
    if reason:
        raise IntakeError(f"The model is not a fitted classifier: {reason}.")


def _classifier_problem(model: Any) -> str | None:
    if not callable(getattr(model, "predict", None)):
        return "it has no predict method"
    try:
        check_is_fitted(model)
    except Exception:
        return "it was never fitted, so fit it before saving it with skops"
    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    if not hasattr(final, "classes_"):
        return "it has no classes_, as a regressor or transformer would"
    classes = np.asarray(model.classes_)
    if classes.ndim != 1 or len(classes) < 2:
        return "its classes_ is not a list of at least two classes"
    return None


# --------------------------------------------------------------------------- tables


def load_table(data: bytes, *, filename: str, max_bytes: int = DEFAULT_MAX_BYTES) -> pd.DataFrame:
    """Read an untrusted CSV or Parquet file into a DataFrame.

    Parameters
    ----------
    data : bytes
        Content of the uploaded file.
    filename : str
        Name the researcher gave the file. ``.csv`` is read as UTF-8 CSV;
        ``.parquet`` and ``.pq``, or any file opening with the Parquet magic
        ``PAR1``, as Parquet.
    max_bytes : int, default=512 MiB
        Largest accepted file.

    Returns
    -------
    DataFrame
        Columns named by strings, a fresh ``RangeIndex`` and at least one row.

    Raises
    ------
    IntakeError
        If the file is empty, too large, of an unknown kind, not UTF-8, not
        parseable, has no rows or repeats a column name.
    """
    data = _checked_bytes(data, max_bytes=max_bytes, what="data file")
    if _table_kind(data, filename) == "parquet":
        frame = _read_parquet(data, max_bytes=max_bytes)
    else:
        frame = _read_csv(data)
    return _checked_table(frame)


def _table_kind(data: bytes, filename: str) -> str:
    if data.startswith(b"PAR1"):
        return "parquet"
    suffix = PurePath(str(filename)).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        raise IntakeError("The data file is named as Parquet but is not a Parquet file.")
    raise IntakeError(
        f"Data files must be CSV (.csv) or Parquet (.parquet, .pq), not {_quote(suffix or 'none')}."
    )


def _read_csv(data: bytes) -> pd.DataFrame:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IntakeError(
            f"The CSV file is not UTF-8 text (first bad byte at offset {exc.start}); "
            "save it as UTF-8."
        ) from exc
    header = _parse_csv(text, header=None, nrows=1, dtype=str, keep_default_na=False)
    _check_unique_names(header.iloc[0].tolist(), where="CSV file")
    return _parse_csv(text)


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
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
        names = parquet.schema_arrow.names
        meta = parquet.metadata
        expanded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    except Exception as exc:
        raise IntakeError("The Parquet file is corrupt or unreadable.") from exc
    _check_unique_names(names, where="Parquet file")
    if expanded > EXPANSION_LIMIT * max_bytes:
        raise IntakeError(
            f"The Parquet file is refused: it would expand to more than "
            f"{_size(EXPANSION_LIMIT * max_bytes)}."
        )
    try:
        return pd.read_parquet(io.BytesIO(data), engine="pyarrow")
    except Exception as exc:
        raise IntakeError(f"The Parquet file could not be read: {_reason(exc)}.") from exc


def _checked_table(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    frame.columns = [str(column) for column in frame.columns]
    _check_unique_names(list(frame.columns), where="data file")
    if frame.shape[1] == 0:
        raise IntakeError("The data file has no columns.")
    if frame.shape[0] == 0:
        raise IntakeError("The data file has a header but no rows.")
    return frame


def _check_unique_names(names: Iterable[Any], *, where: str) -> None:
    names = [str(name) for name in names]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise IntakeError(f"The {where} repeats the column name(s) {_quote_all(repeated)}.")


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
    _check_unique_names(frame.columns, where=where)
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
        if label not in frame.columns:
            raise IntakeError(f"The label column {_quote(label)} is not in the {where}.")
    train_features = [c for c in train.columns if c != label]
    difference = _difference(train_features, [c for c in test.columns if c != label])
    if difference:
        raise IntakeError(
            f"The test file's feature columns differ from the training file's: {difference}."
        )
    if not train_features:
        raise IntakeError(f"The data has no feature columns besides the label {_quote(label)}.")
    return _model_order(model, train_features)


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
    missing = [c for c in expected if c not in set(got)]
    extra = [c for c in got if c not in set(expected)]
    parts = [f"missing {_quote_all(missing)}"] if missing else []
    parts += [f"extra {_quote_all(extra)}"] if extra else []
    return "; ".join(parts)


def _feature_frame(
    frame: pd.DataFrame, features: list[str], *, allow_text: bool, where: str
) -> pd.DataFrame:
    columns = {
        name: _checked_column(frame[name], allow_text=allow_text, where=where) for name in features
    }
    return pd.DataFrame(columns).reset_index(drop=True)


def _checked_column(series: pd.Series, *, allow_text: bool, where: str) -> pd.Series:
    name = _quote(series.name)
    n_missing = int(series.isna().sum())
    if n_missing:
        raise IntakeError(f"Column {name} of the {where} has {_count(n_missing, 'missing value')}.")
    if _is_numeric(series.dtype):
        values = series.to_numpy(dtype=getattr(series.dtype, "numpy_dtype", None))
        n_infinite = int(np.isinf(values).sum()) if values.dtype.kind == "f" else 0
        if n_infinite:
            raise IntakeError(
                f"Column {name} of the {where} has {_count(n_infinite, 'infinite value')}."
            )
        return pd.Series(values, index=series.index, name=series.name)
    if allow_text and _is_text(series):
        return series
    kind = "text" if _is_text(series) else f"of type {series.dtype}"
    raise IntakeError(
        f"Column {name} of the {where} is {kind}, not numeric; only a Pipeline model "
        "that encodes its own inputs may take text columns."
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
            f"The {where} has labels the model does not know: {_quote_all(unknown)}; "
            f"its classes are {_quote_all(classes.tolist())}."
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
        raise IntakeError(f"The record is larger than the limit of {_size(MAX_RECORD_BYTES)}.")
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
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise IntakeError(f"The record repeats the key(s) {_quote_all(repeated)}.")
    return dict(pairs)


def _check_record_keys(record: dict, *, feature_names: list[str], label: str | None) -> None:
    missing = [name for name in feature_names if name not in record]
    if missing:
        raise IntakeError(f"The record lacks the feature(s) {_quote_all(missing)}.")
    known = set(feature_names) | ({label} if label is not None else set())
    unknown = [key for key in record if key not in known]
    if unknown:
        raise IntakeError(f"The record has unknown key(s) {_quote_all(unknown)}.")


def _record_value(value: Any, *, name: str, allow_text: bool) -> Any:
    if value is None:
        raise IntakeError(f"Feature {_quote(name)} of the record has no value.")
    if isinstance(value, bool) or (isinstance(value, str) and allow_text):
        return value
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    expected = "a finite number or text" if allow_text else "a finite number"
    raise IntakeError(f"Feature {_quote(name)} of the record must be {expected}.")


def _record_label(value: Any) -> Any:
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise IntakeError("The record's label must be a number or text.")


# --------------------------------------------------------------------------- wording


def _quote(value: Any, limit: int = 60) -> str:
    """One-line, length-capped quotation of a name for a refusal sentence."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value)[: limit + 1])
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"'{text}'"


def _quote_all(values: Iterable[Any]) -> str:
    values = list(values)
    shown = ", ".join(_quote(value) for value in values[:MAX_QUOTED])
    hidden = len(values) - MAX_QUOTED
    return f"{shown} and {hidden} more" if hidden > 0 else shown


def _reason(exc: BaseException) -> str:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
    return _quote(text, limit=160)[1:-1].rstrip(".")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _size(n_bytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:g} {unit}"
    return f"{n_bytes} bytes"
