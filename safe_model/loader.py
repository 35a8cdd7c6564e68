"""Loading an untrusted skops or ONNX model: the one safe loader of the project.

Pickle and joblib files are refused without being unpickled. A skops file is
a zip: its member names are checked and its members are read in chunks, their
real expanded sizes counted, before skops reads the same bytes, so skops never
decompresses more than was counted. The model is built only when every type
it names passes :func:`type_is_allowed`, and its compiled structures are
validated by :func:`safe_model.structure.check_model_structure` before
anything predicts with it. A file named ``.onnx`` is an ONNX model instead, and
must be one: it is checked and run by :mod:`safe_model.onnx_model`. Every refusal
raises :class:`safe_model.exceptions.ModelRefused` with one sentence.
"""

from __future__ import annotations

import importlib
import io
import re
import zipfile
from pathlib import PurePath
from typing import Any

import numpy as np
import scipy.sparse
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from safe_model import skops_io
from safe_model.archive import ZIP_METHODS, checked_members, expanded_size
from safe_model.exceptions import ModelRefused
from safe_model.onnx_check import is_onnx_name, onnx_file_problem
from safe_model.onnx_model import classes_from_labels, load_onnx_classifier
from safe_model.refusal import checked_bytes, quote_all, reason, size
from safe_model.structure import COMPILED_TYPES_ALLOWED, check_model_structure, is_compiled_type

#: Default size cap of one uploaded file: the service's default too
#: (``TRE_AUDIT_MAX_UPLOAD_BYTES``), so the CLI refuses what the service refuses.
DEFAULT_MAX_BYTES = 200 * 2**20

#: A zip or Parquet file may expand to at most this many times the size cap;
#: beyond that it is treated as a decompression bomb and refused.
EXPANSION_LIMIT = 4

#: Cap on the expanded schema.json. skops parses it whole with ``json.loads``
#: (a Python object per value, several times its size in memory), and it only
#: describes the model: a forest of 500 trees writes about 2 MiB.
MAX_SCHEMA_BYTES = 16 * 2**20

#: Cap on the members of a skops zip. Each array is one member: a random
#: forest of 100 trees has about 500, and a HistGradientBoosting model with
#: 1000 iterations over 10 classes about 30,000.
MAX_ZIP_MEMBERS = 50_000

#: Member names skops writes: ``schema.json``, and flat ``<id>.npy``,
#: ``<id>.npz`` and ``<uuid>.bin`` files holding arrays and bytes.
SKOPS_MEMBER_NAME = re.compile(r"schema\.json|[A-Za-z0-9_-]{1,64}\.(?:npy|npz|bin)")

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
    "convert it inside your project, where it was made: load it there as you saved it, "
    "then write it with skops.io.dump(model, 'model.skops')."
)

#: Module path segments never imported while checking a type name: tests,
#: build tooling, vendored third-party code and dunder modules such as
#: ``__main__``, whose import can run a program.
BLOCKED_SEGMENTS = frozenset({"conftest", "distutils", "externals", "f2py", "_pyinstaller"})

_DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_HEAP_TYPE_FLAG = 1 << 9  # Py_TPFLAGS_HEAPTYPE: set on classes defined in Python
_ARRAY_CONTAINERS = (np.ndarray, scipy.sparse.spmatrix, scipy.sparse.sparray)
_NOT_FOUND = object()


def load_model(
    data: bytes,
    *,
    filename: str = "model.skops",
    max_bytes: int = DEFAULT_MAX_BYTES,
    labels: Any = None,
    output: str = "probabilities",
) -> Any:
    """Load a fitted classifier from an untrusted skops or ONNX file.

    Parameters
    ----------
    data : bytes
        Content of the uploaded file.
    filename : str, default="model.skops"
        Name the researcher gave the file; only its extension is read. A name
        ending in ``.onnx`` makes it an ONNX model, whose content must agree.
    max_bytes : int, default=200 MiB
        Largest accepted file. Its members may expand to at most
        ``EXPANSION_LIMIT`` times this, and schema.json to ``MAX_SCHEMA_BYTES``.
    labels : array-like of shape (n_records,), optional
        The training labels. Read only for an ONNX model, whose classes they name
        (:func:`safe_model.onnx_model.classes_from_labels`); a skops model has its own.
    output : {"probabilities", "logits"}, default="probabilities"
        What an ONNX model's output holds, as declared with it; unused for skops.

    Returns
    -------
    model : estimator
        Fitted scikit-learn classifier, or Pipeline ending in one, whose
        compiled structures passed :func:`safe_model.structure.check_model_structure`;
        or an :class:`~safe_model.onnx_model.OnnxClassifier`.

    Raises
    ------
    ModelRefused
        If the file is pickle or joblib, not a sound skops zip, too large or
        expands too far, names a type that :func:`type_is_allowed` refuses,
        does not hold a fitted classifier, or holds an inconsistent structure;
        for an ONNX file, as :func:`safe_model.onnx_model.load_onnx_classifier`,
        or if no labels were given.
    """
    data = checked_bytes(data, max_bytes=max_bytes, what="model file", error=ModelRefused)
    if _looks_like_pickle(data, filename):
        raise ModelRefused(PICKLE_REFUSAL)
    if is_onnx_name(filename):
        return _load_onnx(data, labels=labels, output=output, max_bytes=max_bytes)
    _check_skops_zip(data, max_bytes=max_bytes)
    trusted = _allowed_untrusted_types(data)
    model = _skops_call(skops_io.loads, data, trusted=trusted)
    _check_fitted_classifier(model)
    check_model_structure(model)
    return model


def _load_onnx(data: bytes, *, labels: Any, output: str, max_bytes: int) -> Any:
    if labels is None:
        raise ModelRefused("An ONNX model needs its training labels, which name its classes.")
    classes = classes_from_labels(labels)
    return load_onnx_classifier(data, classes=classes, output=output, max_bytes=max_bytes)


def type_is_allowed(name: str) -> bool:
    """Whether a type named in a skops file may be loaded.

    A name is allowed only if it is a dotted path under ``sklearn``, ``numpy``
    or ``scipy`` that imports to a class defined in one of those packages, and
    the class has no finalizer (``__del__`` runs on attacker-set attributes:
    NumPy's ``DataSource`` deletes a directory). Functions are refused. A
    compiled scikit-learn class must be in
    :data:`safe_model.structure.COMPILED_TYPES_ALLOWED`: compiled code trusts
    its arrays, and a type that cannot be validated does not enter the
    allowlist. Classes of NumPy and SciPy must be compiled types or array
    containers, which excludes Python-level helpers such as ``numpy.memmap``
    (writes files), ``numpy.vectorize`` or SciPy's ``_FunctionWrapper``
    (binds arguments to any callable).

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
    if module.partition(".")[0] == "sklearn":  # a Python subclass of a compiled type counts
        name = f"{module}.{cls.__qualname__}"
        return not is_compiled_type(cls) or name in COMPILED_TYPES_ALLOWED
    if issubclass(cls, np.memmap):
        return False
    return not cls.__flags__ & _HEAP_TYPE_FLAG or issubclass(cls, _ARRAY_CONTAINERS)


def model_file_problem(data: bytes, *, filename: str) -> str | None:
    """Why a file plainly is not a skops file (a pickle, not a zip archive), or None.

    A file named ``.onnx`` must instead open as an ONNX model does
    (:func:`safe_model.onnx_check.onnx_file_problem`). Reads only the file's name
    and its first and last bytes, never parses it: cheap and safe outside the
    sandbox, for a form to refuse such a file at once.

    Parameters
    ----------
    data : bytes
        Content of the uploaded file.
    filename : str
        Name the researcher gave the file.

    Returns
    -------
    str or None
        One sentence for the researcher; None when the file may be a skops file.
    """
    if _looks_like_pickle(data, filename):
        return PICKLE_REFUSAL
    if is_onnx_name(filename):
        return onnx_file_problem(data)
    if not data.startswith(b"PK\x03\x04"):
        return "The model file is not a skops file: it is not a zip archive."
    return None


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


# --------------------------------------------------------------------------- zip


def _check_skops_zip(data: bytes, *, max_bytes: int) -> None:
    if not data.startswith(b"PK\x03\x04"):
        raise ModelRefused("The model file is not a skops file: it is not a zip archive.")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = _checked_members(archive)
            _count_expanded(archive, members, limit=EXPANSION_LIMIT * max_bytes)
    except ModelRefused:
        raise
    except Exception as exc:
        raise ModelRefused(
            "The model file is not a skops file: its zip archive is corrupt."
        ) from exc


def _checked_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    members = checked_members(
        archive,
        max_members=MAX_ZIP_MEMBERS,
        what="model file",
        error=ModelRefused,
        name_problem=_skops_name_problem,
    )
    if "schema.json" not in [member.filename for member in members]:
        raise ModelRefused("The model file is not a skops file: it has no schema.json.")
    return members


def _skops_name_problem(name: str) -> str | None:
    if SKOPS_MEMBER_NAME.fullmatch(name):
        return None
    if "/" in name or "\\" in name:
        return "is a path, not a flat name"
    return "is not a name skops writes"


def _count_expanded(archive: zipfile.ZipFile, members: list, *, limit: int) -> None:
    remaining = limit
    for member in members:
        is_schema = member.filename == "schema.json"
        n_bytes = expanded_size(archive, member, cap=MAX_SCHEMA_BYTES if is_schema else remaining)
        if is_schema and n_bytes > MAX_SCHEMA_BYTES:
            raise ModelRefused(
                "The model file is refused: its schema.json expands to more than "
                f"{size(MAX_SCHEMA_BYTES)}."
            )
        remaining -= n_bytes
        if remaining >= 0 and member.filename.endswith(".npz"):  # scipy unzips it again
            remaining -= _npz_expanded(archive.read(member), cap=remaining)
        if remaining < 0:
            raise ModelRefused(
                f"The model file is refused: it would expand to more than {size(limit)}."
            )


def _npz_expanded(data: bytes, *, cap: int) -> int:
    """Bytes an ``.npz`` member's own zip really expands to, or the first count over cap."""
    try:
        inner = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError):
        refusal = "The model file is refused: an array archive in it is corrupt."
        raise ModelRefused(refusal) from None
    total = 0
    with inner:
        for member in inner.infolist():
            if member.compress_type not in ZIP_METHODS:
                raise ModelRefused(
                    "The model file is refused: an array archive in it uses a compression "
                    "numpy does not write."
                )
            total += expanded_size(inner, member, cap=cap - total)
            if total > cap:
                break
    return total


# --------------------------------------------------------------------------- skops


def _allowed_untrusted_types(data: bytes) -> list[str]:
    names = _skops_call(skops_io.get_untrusted_types, data=data)
    refused = [name for name in names if not type_is_allowed(name)]
    if refused:
        raise ModelRefused(
            f"The model file names types that are not allowed: {quote_all(refused)}; "
            "only scikit-learn, NumPy and SciPy classes that can be validated are accepted."
        )
    return names


def _skops_call(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except ModelRefused:
        raise
    except Exception as exc:
        raise ModelRefused(
            f"The model file could not be read as a skops file: {reason(exc)}."
        ) from exc


def _check_fitted_classifier(model: Any) -> None:
    try:
        problem = _classifier_problem(model)
    except Exception:
        problem = "its attributes could not be inspected"
    if problem:
        raise ModelRefused(f"The model is not a fitted classifier: {problem}.")


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
