"""Image archives and NumPy arrays as audit data, for neural networks (issue 12).

Both become the table every attack already takes: one row per record, one
float32 column per input value, then the label column. Pixels are named
``pixel_<c>_<y>_<x>`` in row-major (C, H, W) order, so the model side
recovers the image shape from the names alone (:func:`image_shape`) and a
test set of another shape fails the tabular check that its columns match the
training set's. Float32 because that is what an ONNX network takes: the
audit sees exactly the values the model sees, at half float64's memory.

An image archive (``.zip``, one for the members and one for the non-members)
holds ``labels.csv`` at its top level and the images, PNG or JPEG (``.png``,
``.jpg``, ``.jpeg``), at the paths it names::

    labels.csv          file,digit
    img/0001.png        img/0001.png,3
    img/0002.png        img/0002.png,7

``labels.csv`` is UTF-8 CSV with a header of exactly two names: ``file``,
then the label column's name (here ``digit``, the name the audit is told).
Each row names one image by its path inside the archive, ``/``-separated,
and gives its label, an integer or text as in a CSV table. Every image is
listed exactly once and every listed file is present; folders are allowed,
other files are not. All images have the same size; they are converted to
the declared mode, or must all share one of "L" and "RGB" when none is
declared.

An array file (``.npz``, as ``np.savez(path, X=X, y=y)`` writes it) holds
exactly ``X`` of shape (n, C, H, W), (n, H, W) or (n, features), integers or
floats, and ``y`` of shape (n,), integers or text. Flat features are named
``feature_<i>``.

Everything read here is untrusted. The zip is checked by
:mod:`safe_model.archive` (paths, links, compression, real expansion); image
sizes are read from their headers and refused before any pixel is decoded;
array shapes and types are read from the ``.npy`` headers before
``np.load(..., allow_pickle=False)`` allocates anything. Every refusal is one
:class:`~attacks.exceptions.IntakeError` sentence quoting names, never values.

:mod:`attacks.intake` imports this module only when such a file is uploaded,
so Pillow is loaded only then; nothing here needs torch.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from attacks.exceptions import IntakeError
from attacks.intake import MAX_COLUMNS, MAX_TABLE_CELLS
from safe_model.archive import checked_members, read_capped
from safe_model.loader import DEFAULT_MAX_BYTES, EXPANSION_LIMIT
from safe_model.refusal import checked_bytes, quote, quote_all, repeated, size

#: Cap on the images of one archive: a count past which an audit of per-image
#: shadow predictions does not end in a worker's time.
MAX_IMAGES = 100_000

#: Cap on an image's pixels (width x height), read from its header before it
#: is decoded: 512 x 512, far above what the small CNNs audited here take,
#: far below a decompression bomb's 20000 x 20000.
MAX_IMAGE_PIXELS = 512 * 512

#: Cap on an archive's decoded pixel bytes. Each byte becomes one cell of the
#: table, so this is the tabular intake's cell cap (see MAX_TABLE_CELLS).
MAX_DECODED_BYTES = MAX_TABLE_CELLS

#: Cap on an archive's zip members: every image, labels.csv and folders.
MAX_ARCHIVE_MEMBERS = 2 * MAX_IMAGES

#: Cap on an array file's zip members; only X and y are accepted, and a few
#: more are allowed so that the refusal can name them.
MAX_ARRAY_MEMBERS = 16

#: Cap on labels.csv: 100,000 rows of a long path and label each. It is
#: parsed whole, and text takes up to four times its bytes in memory.
MAX_LABELS_BYTES = 64 * 2**20

#: Most bytes of labels.csv read to find its header for the upload form.
MAX_LABELS_HEADER_BYTES = 2**16

LABELS_FILE = "labels.csv"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_FORMATS = ("PNG", "JPEG")
ARRAY_MEMBERS = ("X.npy", "y.npy")

#: Modes images are converted to, with their channel counts.
MODES = {"L": 1, "RGB": 3}

#: 8-bit modes Pillow converts to "L" or "RGB" without loss of range. 16-bit
#: and float images ("I;16", "I", "F") are refused: Pillow clips them to 8 bits.
SOURCE_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr"})

_PIXEL_NAME = re.compile(r"pixel_(\d+)_(\d+)_(\d+)")


@dataclass(frozen=True)
class Preprocessing:
    """How decoded pixels or arrays become the model's inputs, as the researcher declares.

    Each value ``v`` of channel ``c`` becomes ``(v * scale - mean[c]) / std[c]``,
    the order of torchvision's ``ToTensor`` then ``Normalize``.

    Parameters
    ----------
    mode : {"L", "RGB"} or None, default=None
        Image archives only: the mode every image is converted to, "L" (grey,
        one channel) or "RGB" (three). None converts nothing: every image must
        then already be "L" or "RGB", all alike.
    scale : float or None, default=None
        Multiplier applied first: 1/255 maps 8-bit pixels to [0, 1], 1/16
        does so for scikit-learn's digits. None means 1/255 for 8-bit pixels
        (images, and uint8 arrays) and 1 for other arrays, which are taken to
        be the model's inputs already.
    mean, std : sequence of float or None, default=None
        Subtracted, then divided by, per channel: one value for every channel
        or one per channel. None means 0 and 1.

    Raises
    ------
    IntakeError
        If the mode is unknown, the scale or a std is not a positive finite
        number, or a mean is not finite.
    """

    mode: str | None = None
    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in MODES:
            raise IntakeError(
                f"The declared image mode {quote(self.mode)} is not one of 'L' (grey) or 'RGB'."
            )
        if self.scale is not None:
            object.__setattr__(self, "scale", _declared((self.scale,), "scale", positive=True)[0])
        for name, positive in (("mean", False), ("std", True)):
            values = getattr(self, name)
            if values is not None:
                object.__setattr__(self, name, _declared(values, name, positive=positive))


def _declared(values: Any, name: str, *, positive: bool) -> tuple[float, ...]:
    """Declared numbers as floats: one number, or a sequence of them."""
    values = (values,) if isinstance(values, (int, float)) else values
    kind = "positive finite numbers" if positive else "finite numbers"
    try:
        numbers = tuple(_number(value) for value in values)
    except (TypeError, ValueError):
        numbers = ()
    if not numbers or not all(math.isfinite(v) and (v > 0 or not positive) for v in numbers):
        raise IntakeError(f"The declared normalisation's {name} must be {kind}.")
    return numbers


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError("not a number")
    return float(value)


# --------------------------------------------------------------------------- names


def pixel_names(shape: tuple[int, int, int]) -> list[str]:
    """Column names of an image's pixels, in row-major (C, H, W) order.

    Parameters
    ----------
    shape : tuple of int
        (channels, height, width).

    Returns
    -------
    list of str
        ``pixel_<c>_<y>_<x>`` for every pixel.
    """
    n_channels, height, width = shape
    return [
        f"pixel_{c}_{y}_{x}" for c in range(n_channels) for y in range(height) for x in range(width)
    ]


def image_shape(feature_names: list[str]) -> tuple[int, int, int] | None:
    """The (C, H, W) shape of features named as :func:`pixel_names` names them, or None.

    The model side calls it on ``Target.feature_names`` to reshape each row
    of the table into the image the network takes.

    Parameters
    ----------
    feature_names : list of str

    Returns
    -------
    tuple of int or None
        None when the features are not exactly an image's pixels in order.
    """
    match = _PIXEL_NAME.fullmatch(feature_names[-1]) if feature_names else None
    if match is None:
        return None
    shape = tuple(int(index) + 1 for index in match.groups())
    return shape if list(feature_names) == pixel_names(shape) else None


# --------------------------------------------------------------------------- dispatch


def load_data(
    data: bytes,
    *,
    kind: str,
    preprocessing: Preprocessing | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> pd.DataFrame:
    """Read an image archive (``kind="zip"``) or an array file (``"npz"``) at the default limits.

    Parameters
    ----------
    data : bytes
    kind : {"zip", "npz"}
    preprocessing : Preprocessing, optional
        The declared normalisation; None is ``Preprocessing()``.
    max_bytes : int, default=200 MiB

    Returns
    -------
    DataFrame
        As :func:`load_images` or :func:`load_arrays`.
    """
    load = load_images if kind == "zip" else load_arrays
    return load(data, preprocessing=preprocessing, max_bytes=max_bytes)


def label_columns(data: bytes, *, kind: str) -> list[str]:
    """The label column of an image archive or array file, cheaply, for the upload form.

    No image and no array is decoded: an archive's zip directory is checked
    and the header of its labels.csv read; an array file's members are named.

    Parameters
    ----------
    data : bytes
    kind : {"zip", "npz"}

    Returns
    -------
    list of str
        The one label column: labels.csv's second name, or ``"y"``.

    Raises
    ------
    IntakeError
        If the zip is unsound, or labels.csv or the arrays are missing or wrong.
    """
    if kind == "npz":
        with _opened_zip(data, what="array file") as archive:
            _array_members(archive)
        return ["y"]
    with _opened_zip(data, what="image archive") as archive:
        labels = _labels_member(_archive_files(archive, max_members=MAX_ARCHIVE_MEMBERS))
        with archive.open(labels) as stream:
            head = stream.read(MAX_LABELS_HEADER_BYTES)
    line, newline, _ = head.partition(b"\n")
    if not newline and len(head) == MAX_LABELS_HEADER_BYTES:
        raise IntakeError(f"labels.csv's header is longer than {size(MAX_LABELS_HEADER_BYTES)}.")
    return [_label_header(_csv_rows(_utf8(line)))]


@contextlib.contextmanager
def _opened_zip(data: bytes, *, what: str) -> Iterator[zipfile.ZipFile]:
    if not data.startswith(b"PK\x03\x04"):
        raise IntakeError(f"The {what} is not a zip archive.")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            yield archive
    except IntakeError:
        raise
    except Exception as exc:
        raise IntakeError(f"The {what} is corrupt: its zip cannot be read.") from exc


# --------------------------------------------------------------------------- images


def load_images(
    data: bytes,
    *,
    preprocessing: Preprocessing | None = None,
    max_images: int = MAX_IMAGES,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_decoded_bytes: int = MAX_DECODED_BYTES,
    max_members: int = MAX_ARCHIVE_MEMBERS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> pd.DataFrame:
    """Read an untrusted zip of PNG or JPEG images and their labels.csv into a table.

    The archive's layout is described in this module's docstring.

    Parameters
    ----------
    data : bytes
        Content of the uploaded archive.
    preprocessing : Preprocessing, optional
        The declared mode and normalisation; None is ``Preprocessing()``
        (no conversion, pixels divided by 255).
    max_images : int, default=MAX_IMAGES
        Most images accepted.
    max_pixels : int, default=MAX_IMAGE_PIXELS
        Most pixels (width x height) of one image, read from its header.
    max_decoded_bytes : int, default=MAX_DECODED_BYTES
        Most bytes all images may decode to, checked before decoding.
    max_members : int, default=MAX_ARCHIVE_MEMBERS
        Most zip members.
    max_bytes : int, default=200 MiB
        Largest accepted archive; its members may really expand to at most
        ``EXPANSION_LIMIT`` times this.

    Returns
    -------
    DataFrame
        One row per image in labels.csv's order: float32 columns named by
        :func:`pixel_names`, then the label column named as labels.csv names it.

    Raises
    ------
    IntakeError
        If the archive is not a sound zip, holds unsafe or unlisted members,
        lacks a listed image, its labels.csv is malformed, an image is not a
        readable PNG or JPEG, is too large or differs from the others in size
        (or mode, when none is declared), or a limit is passed.
    """
    preprocessing = preprocessing or Preprocessing()
    data = checked_bytes(data, max_bytes=max_bytes, what="image archive", error=IntakeError)
    with _opened_zip(data, what="image archive") as archive:
        reader = _Reader(archive, limit=EXPANSION_LIMIT * max_bytes)
        files = _archive_files(archive, max_members=max_members)
        label, names, labels = _read_labels(reader, _labels_member(files), max_images=max_images)
        _check_listing(names, files)
        pixels = _decoded(
            reader,
            [files[name] for name in names],
            mode=preprocessing.mode,
            max_pixels=max_pixels,
            max_decoded_bytes=max_decoded_bytes,
        )
    values = _normalised(pixels.reshape(*pixels.shape[:2], -1), preprocessing, eight_bit=True)
    return _table(values, pixel_names(pixels.shape[1:]), labels, label=label)


class _Reader:
    """Reads members, counting their real expanded bytes against the archive's limit."""

    def __init__(self, archive: zipfile.ZipFile, *, limit: int) -> None:
        self.archive, self.limit, self.remaining = archive, limit, limit

    def read(self, member: zipfile.ZipInfo, *, most: int | None = None) -> bytes:
        cap = self.remaining if most is None else min(most, self.remaining)
        data = read_capped(self.archive, member, cap=cap)
        if data is None and cap == most:
            raise IntakeError(
                f"The image archive's {quote(member.filename)} expands to more than {size(most)}."
            )
        if data is None:
            raise IntakeError(
                f"The image archive is refused: it would expand to more than {size(self.limit)}."
            )
        self.remaining -= len(data)
        return data


def _archive_files(archive: zipfile.ZipFile, *, max_members: int) -> dict[str, zipfile.ZipInfo]:
    members = checked_members(
        archive,
        max_members=max_members,
        what="image archive",
        error=IntakeError,
        name_problem=_image_member_problem,
    )
    return {member.filename: member for member in members if not member.is_dir()}


def _image_member_problem(name: str) -> str | None:
    if "\\" in name:
        return "has a '\\' in its path; zip paths separate folders with '/'"
    return None


def _labels_member(files: dict[str, zipfile.ZipInfo]) -> zipfile.ZipInfo:
    if LABELS_FILE not in files:
        raise IntakeError(
            "The image archive has no labels.csv at its top level; it must list each image's "
            "file and label."
        )
    return files[LABELS_FILE]


def _read_labels(
    reader: _Reader, member: zipfile.ZipInfo, *, max_images: int
) -> tuple[str, list[str], pd.Series]:
    """The label column's name, the listed files and their labels, from labels.csv."""
    rows = _csv_rows(_utf8(reader.read(member, most=MAX_LABELS_BYTES)), limit=max_images + 2)
    label = _label_header(rows)
    records = rows[1:]
    if len(records) > max_images:
        raise IntakeError(
            f"The image archive is refused: labels.csv lists more than {max_images:,} images, "
            "the limit."
        )
    if not records:
        raise IntakeError("labels.csv lists no images.")
    for line, record in enumerate(records, start=2):
        _check_label_row(record, line=line)
    return label, [record[0] for record in records], _typed([record[1] for record in records])


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IntakeError("labels.csv is not UTF-8 text; save it as UTF-8.") from exc


def _csv_rows(text: str, *, limit: int = 1) -> list[list[str]]:
    """The first ``limit`` non-blank rows of labels.csv."""
    reader = csv.reader(io.StringIO(text))
    rows = []
    try:
        for row in reader:
            if any(field.strip() for field in row):
                rows.append(row)
            if len(rows) >= limit:
                break
    except csv.Error as exc:
        raise IntakeError(f"labels.csv could not be parsed near line {reader.line_num}.") from exc
    return rows


def _label_header(rows: list[list[str]]) -> str:
    header = [name.strip() for name in rows[0]] if rows else []
    if len(header) != 2 or header[0] != "file" or not header[1]:
        raise IntakeError(
            "labels.csv's header must be exactly two names: 'file', then the label column's name."
        )
    if _PIXEL_NAME.fullmatch(header[1]):
        raise IntakeError(f"labels.csv names its label {quote(header[1])}, a pixel's name.")
    return header[1]


def _check_label_row(record: list[str], *, line: int) -> None:
    if len(record) != 2:
        raise IntakeError(f"labels.csv's row {line:,} has {len(record)} fields, not 2.")
    if not record[0]:
        raise IntakeError(f"labels.csv's row {line:,} names no file.")
    if not record[1].strip():
        raise IntakeError(f"labels.csv's row {line:,} has no label.")


def _typed(labels: list[str]) -> pd.Series:
    """Integers or numbers where every label is one, else text: as a CSV table's column reads."""
    series = pd.Series(labels)
    try:
        return pd.to_numeric(series)
    except (TypeError, ValueError):
        return series


def _check_listing(names: list[str], files: dict[str, zipfile.ZipInfo]) -> None:
    duplicates = repeated(names)
    if duplicates:
        raise IntakeError(f"labels.csv lists the file(s) {quote_all(duplicates)} more than once.")
    foreign = [name for name in names if PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES]
    if foreign:
        raise IntakeError(
            f"labels.csv lists {quote_all(foreign)}, not named as PNG or JPEG images "
            "(.png, .jpg, .jpeg)."
        )
    missing = [name for name in names if name not in files]
    if missing:
        raise IntakeError(f"labels.csv lists file(s) the archive lacks: {quote_all(missing)}.")
    listed = set(names) | {LABELS_FILE}
    unlisted = [name for name in files if name not in listed]
    if unlisted:
        raise IntakeError(
            f"The image archive holds file(s) labels.csv does not list: {quote_all(unlisted)}."
        )


def _decoded(
    reader: _Reader,
    members: list[zipfile.ZipInfo],
    *,
    mode: str | None,
    max_pixels: int,
    max_decoded_bytes: int,
) -> np.ndarray:
    """All images as one uint8 array of shape (n, C, H, W), each refused before it is decoded."""
    pixels = first = None
    for index, member in enumerate(members):
        name = member.filename
        image = _opened_image(reader.read(member), name=name, max_pixels=max_pixels)
        if first is None:
            first = (name, image)
            own = mode or _own_mode(image, name=name)
            pixels = _allocated(len(members), image.size, own, limit=max_decoded_bytes)
        _check_alike((name, image), first, same_mode=mode is None)
        pixels[index] = _channels_first(image, mode or image.mode, name=name)
    return pixels


def _opened_image(data: bytes, *, name: str, max_pixels: int) -> Image.Image:
    """The image with only its header read, refused if it has too many pixels."""
    too_large = f"The image {quote(name)} has more than {max_pixels:,} pixels, the limit per image."
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError:
        raise IntakeError(too_large) from None
    except Exception as exc:
        raise IntakeError(f"The file {quote(name)} is not a readable PNG or JPEG image.") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise IntakeError(too_large)
    if image.mode not in SOURCE_MODES:
        raise IntakeError(
            f"The image {quote(name)} has mode {quote(image.mode)}; only 8-bit grey or colour "
            "images are accepted."
        )
    return image


def _own_mode(image: Image.Image, *, name: str) -> str:
    if image.mode not in MODES:
        raise IntakeError(
            f"The image {quote(name)} has mode {quote(image.mode)}; declare the mode, "
            "'L' or 'RGB', to convert the images to."
        )
    return image.mode


def _check_alike(
    named: tuple[str, Image.Image], first: tuple[str, Image.Image], *, same_mode: bool
) -> None:
    (name, image), (first_name, first_image) = named, first
    if image.size != first_image.size:
        raise IntakeError(
            f"The image {quote(name)} is {_dimensions(image)} pixels while {quote(first_name)} "
            f"is {_dimensions(first_image)}; all images must be the same size."
        )
    if same_mode and image.mode != first_image.mode:
        raise IntakeError(
            f"The image {quote(name)} has mode {quote(image.mode)} while {quote(first_name)} "
            f"has {quote(first_image.mode)}; declare the mode, 'L' or 'RGB', to convert them to."
        )


def _dimensions(image: Image.Image) -> str:
    width, height = image.size
    return f"{width} x {height}"


def _allocated(n_images: int, image_size: tuple[int, int], mode: str, *, limit: int) -> np.ndarray:
    (width, height), n_channels = image_size, MODES[mode]
    n_bytes = n_images * n_channels * height * width
    if n_bytes > limit:
        raise IntakeError(
            f"The image archive is refused: its {n_images:,} images of {width} x {height} pixels "
            f"in mode {quote(mode)} decode to {size(n_bytes)}, more than the limit of "
            f"{size(limit)}."
        )
    return np.empty((n_images, n_channels, height, width), dtype=np.uint8)


def _channels_first(image: Image.Image, mode: str, *, name: str) -> np.ndarray:
    try:
        array = np.asarray(image.convert(mode))
    except Exception as exc:
        raise IntakeError(f"The file {quote(name)} is not a readable PNG or JPEG image.") from exc
    return array[np.newaxis] if array.ndim == 2 else array.transpose(2, 0, 1)


# --------------------------------------------------------------------------- arrays


def load_arrays(
    data: bytes,
    *,
    preprocessing: Preprocessing | None = None,
    max_elements: int = MAX_TABLE_CELLS,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> pd.DataFrame:
    """Read an untrusted ``.npz`` of ``X`` and ``y`` into a table, never unpickling.

    Parameters
    ----------
    data : bytes
        Content of the uploaded file.
    preprocessing : Preprocessing, optional
        The declared normalisation (its mode is not used); None is
        ``Preprocessing()``: uint8 values divided by 255, others kept.
    max_elements : int, default=MAX_TABLE_CELLS
        Most values X may hold, read from its header before it is loaded.
    max_pixels : int, default=MAX_IMAGE_PIXELS
        Most pixels (H x W) of one image, when X holds images.
    max_bytes : int, default=200 MiB
        Largest accepted file; its arrays may take at most
        ``EXPANSION_LIMIT`` times this once loaded.

    Returns
    -------
    DataFrame
        One row per record: float32 columns named by :func:`pixel_names`
        (X of rank 3 or 4) or ``feature_<i>`` (rank 2), then the label ``y``.

    Raises
    ------
    IntakeError
        If the file is not a sound zip of exactly X and y, an array holds
        objects or other non-numbers, has the wrong rank or too many values,
        X and y differ in length, or X has a NaN or infinite value.
    """
    preprocessing = preprocessing or Preprocessing()
    data = checked_bytes(data, max_bytes=max_bytes, what="array file", error=IntakeError)
    with _opened_zip(data, what="array file") as archive:
        headers = {key: _array_header(archive, member) for key, member in _array_members(archive)}
    _check_x(*headers["X"], max_elements=max_elements, max_pixels=max_pixels)
    _check_y(*headers["y"], n_records=headers["X"][0][0])
    _check_loaded_bytes(headers, limit=EXPANSION_LIMIT * max_bytes)
    X, y = _loaded(data)
    _check_finite(X)
    values = _normalised(_by_channel(X), preprocessing, eight_bit=X.dtype == np.uint8)
    if X.ndim == 2:
        names = [f"feature_{i}" for i in range(X.shape[1])]
    else:
        names = pixel_names(_chw(X.shape))
    return _table(values, names, y, label="y")


def _array_members(archive: zipfile.ZipFile) -> list[tuple[str, zipfile.ZipInfo]]:
    members = checked_members(
        archive, max_members=MAX_ARRAY_MEMBERS, what="array file", error=IntakeError
    )
    names = [member.filename for member in members]
    unexpected = [name for name in names if name not in ARRAY_MEMBERS]
    if unexpected:
        raise IntakeError(
            f"The array file holds unexpected members {quote_all(unexpected)}; it must hold "
            "exactly the arrays X and y, as np.savez(path, X=X, y=y) writes them."
        )
    missing = [name.removesuffix(".npy") for name in ARRAY_MEMBERS if name not in names]
    if missing:
        raise IntakeError(
            f"The array file has no array {quote_all(missing)}; it must hold exactly X and y."
        )
    return [(member.filename.removesuffix(".npy"), member) for member in members]


def _array_header(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> tuple[tuple, np.dtype]:
    """Shape and dtype from the ``.npy`` header alone, before anything is allocated."""
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    try:
        with archive.open(member) as stream:
            shape, _, dtype = readers[np.lib.format.read_magic(stream)](stream)
    except Exception as exc:
        key = quote(member.filename.removesuffix(".npy"))
        raise IntakeError(f"The array file's {key} is not a NumPy array it can read.") from exc
    return tuple(shape), dtype


def _check_dtype(dtype: np.dtype, *, key: str, kinds: str, expected: str) -> None:
    if dtype.hasobject:
        raise IntakeError(
            f"The array file's {key} holds Python objects, refused because loading them "
            f"can run code; save {expected}."
        )
    if dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
        raise IntakeError(f"The array file's {key} is of type {quote(dtype.str)}; save {expected}.")


def _check_x(shape: tuple, dtype: np.dtype, *, max_elements: int, max_pixels: int) -> None:
    _check_dtype(dtype, key="X", kinds="biuf", expected="integers or floats")
    if len(shape) not in (2, 3, 4):
        raise IntakeError(
            f"The array file's X has {len(shape)} dimensions; it must be (n, C, H, W), "
            "(n, H, W) or (n, features)."
        )
    n_values = math.prod(shape)
    if n_values > max_elements:
        raise IntakeError(
            f"The array file is refused: X holds {n_values:,} values, more than the limit "
            f"of {max_elements:,}."
        )
    if n_values == 0:
        raise IntakeError("The array file's X holds no values.")
    if len(shape) == 2 and shape[1] > MAX_COLUMNS:
        raise IntakeError(
            f"The array file's X has {shape[1]:,} features, more than the limit of {MAX_COLUMNS:,}."
        )
    if len(shape) > 2 and shape[-1] * shape[-2] > max_pixels:
        raise IntakeError(
            f"The array file's X holds images of more than {max_pixels:,} pixels, the limit."
        )


def _check_y(shape: tuple, dtype: np.dtype, *, n_records: int) -> None:
    _check_dtype(dtype, key="y", kinds="biufU", expected="integer or text labels")
    if len(shape) != 1:
        raise IntakeError(
            f"The array file's y has {len(shape)} dimensions; it must hold one label per "
            "record, shape (n,)."
        )
    if shape[0] != n_records:
        raise IntakeError(
            f"The array file's X holds {n_records:,} records but its y {shape[0]:,} labels."
        )


def _check_loaded_bytes(headers: dict[str, tuple[tuple, np.dtype]], *, limit: int) -> None:
    n_bytes = sum(math.prod(shape) * dtype.itemsize for shape, dtype in headers.values())
    if n_bytes > limit:
        raise IntakeError(
            f"The array file is refused: its arrays would take more than {size(limit)} loaded."
        )


def _loaded(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return arrays["X"], arrays["y"]
    except Exception as exc:
        raise IntakeError("The array file's arrays could not be read: it is corrupt.") from exc


def _check_finite(X: np.ndarray) -> None:
    if X.dtype.kind != "f":
        return
    n_bad = X.size - int(np.count_nonzero(np.isfinite(X)))
    if n_bad:
        raise IntakeError(f"The array file's X has {n_bad:,} values that are NaN or infinite.")


def _chw(shape: tuple) -> tuple[int, int, int]:
    return tuple(shape[1:]) if len(shape) == 4 else (1, *shape[1:])


def _by_channel(X: np.ndarray) -> np.ndarray:
    """X as (n, C, values per channel); flat features are one channel."""
    n_channels = X.shape[1] if X.ndim == 4 else 1
    return X.reshape(len(X), n_channels, -1)


# --------------------------------------------------------------------------- table


def _normalised(values: np.ndarray, preprocessing: Preprocessing, *, eight_bit: bool) -> np.ndarray:
    """``(v * scale - mean[c]) / std[c]`` as float32 of shape (n, C x values per channel)."""
    scale = preprocessing.scale
    if scale is None:
        scale = 1 / 255 if eight_bit else 1.0
    mean = _per_channel(preprocessing.mean, "mean", n_channels=values.shape[1])
    std = _per_channel(preprocessing.std, "std", n_channels=values.shape[1])
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused just below
        out = values.astype(np.float32)
        out *= np.float32(scale)
        out -= mean
        out /= std
    if not np.isfinite(out).all():
        raise IntakeError(
            "The data's values overflow 32-bit floats once normalised; check the declared scale."
        )
    return out.reshape(len(out), -1)


def _per_channel(values: tuple[float, ...] | None, name: str, *, n_channels: int) -> np.ndarray:
    values = values or ((0.0,) if name == "mean" else (1.0,))
    if len(values) not in (1, n_channels):
        raise IntakeError(
            f"The declared normalisation gives {len(values)} {name} values but the data has "
            f"{n_channels} channel(s)."
        )
    return np.asarray(values, dtype=np.float32).reshape(1, -1, 1)


def _table(values: np.ndarray, names: list[str], labels: Any, *, label: str) -> pd.DataFrame:
    frame = pd.DataFrame(values, columns=names, copy=False)
    frame[label] = np.asarray(labels)
    return frame
