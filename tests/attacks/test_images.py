"""Image archives and NumPy arrays as audit data (attacks/images.py), made from sklearn's digits."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import pickle
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from attacks import images
from attacks.exceptions import IntakeError
from attacks.images import (
    MAX_IMAGE_PIXELS,
    Preprocessing,
    image_shape,
    label_columns,
    load_arrays,
    load_images,
    pixel_names,
)
from attacks.intake import build_target, load_table, table_columns
from safe_model import archive
from tests.hostile_files import count_reads, png_claiming, zip_member_bomb, zip_of
from tests.intake_support import one_sentence

N_IMAGES = 12


@pytest.fixture(scope="module")
def digits():
    """The first digits as 8-bit grey pixels (0..16, as sklearn has them) and their labels."""
    data = load_digits()
    return data.images[:N_IMAGES].astype(np.uint8), data.target[:N_IMAGES]


def _png(pixels: np.ndarray, mode: str = "L") -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(out, format="PNG")
    return out.getvalue()


def _labels(rows, header="file,digit") -> tuple[str, bytes]:
    return "labels.csv", "\n".join([header, *(f"{name},{label}" for name, label in rows)]).encode()


def _members(digits, *, folder="img/") -> list[tuple[str, bytes]]:
    images, targets = digits
    names = [f"{folder}{i:04d}.png" for i in range(len(images))]
    return [_labels(zip(names, targets)), *((n, _png(p)) for n, p in zip(names, images))]


@pytest.fixture(scope="module")
def digits_zip(digits) -> bytes:
    return zip_of(_members(digits))


def refusal(function, *args, **kwargs) -> str:
    return one_sentence(IntakeError, function, *args, **kwargs)


# --------------------------------------------------------------------------- valid archives


def test_a_digits_archive_loads_to_the_normalised_table(digits, digits_zip):
    images, targets = digits
    frame = load_images(digits_zip, preprocessing=Preprocessing(scale=1 / 16))
    assert list(frame.columns) == [*pixel_names((1, 8, 8)), "digit"]
    assert frame.shape == (N_IMAGES, 65)
    assert (frame.dtypes.iloc[:-1] == np.float32).all()
    expected = images.reshape(N_IMAGES, -1) / 16
    np.testing.assert_allclose(frame.iloc[:, :-1].to_numpy(), expected, rtol=1e-6)
    assert frame["digit"].tolist() == targets.tolist()
    assert frame.iloc[:, :-1].to_numpy().max() == 1.0  # a digit's darkest pixel is 16


def test_the_default_normalisation_divides_by_255(digits, digits_zip):
    frame = load_images(digits_zip)
    np.testing.assert_allclose(
        frame.iloc[:, :-1].to_numpy(), digits[0].reshape(N_IMAGES, -1) / 255, rtol=1e-6
    )


def test_pixels_are_in_row_major_channel_height_width_order(digits):
    rgb = np.zeros((2, 3, 4, 3), dtype=np.uint8)  # 2 images of 3 x 4 pixels
    rgb[0, 1, 2] = (10, 20, 30)  # row 1, column 2
    members = [_labels([("a.png", 0), ("b.png", 1)])]
    members += [(name, _png(image, mode="RGB")) for name, image in zip(["a.png", "b.png"], rgb)]
    frame = load_images(zip_of(members), preprocessing=Preprocessing(scale=1))
    assert image_shape(list(frame.columns[:-1])) == (3, 3, 4)
    row = frame.iloc[0]
    assert (row["pixel_0_1_2"], row["pixel_1_1_2"], row["pixel_2_1_2"]) == (10, 20, 30)
    assert row.iloc[:-1].sum() == 60


def test_mean_and_std_apply_per_channel(digits):
    images, targets = digits
    rgb = np.repeat(images[:2, :, :, np.newaxis], 3, axis=3)
    members = [_labels([("a.png", 0), ("b.png", 1)])]
    members += [(name, _png(image, mode="RGB")) for name, image in zip(["a.png", "b.png"], rgb)]
    declared = Preprocessing(scale=1 / 16, mean=(0.5, 0.0, 1.0), std=(0.5, 1.0, 2.0))
    frame = load_images(zip_of(members), preprocessing=declared)
    values = frame.iloc[:, :-1].to_numpy().reshape(2, 3, 64)
    scaled = images[:2].reshape(2, 64) / 16
    np.testing.assert_allclose(values[:, 0], (scaled - 0.5) / 0.5, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(values[:, 1], scaled, rtol=1e-5)
    np.testing.assert_allclose(values[:, 2], (scaled - 1) / 2, rtol=1e-5)


def test_a_declared_mode_converts_every_image(digits):
    images, _ = digits
    members = [_labels([("grey.png", 0), ("colour.jpg", 1)])]
    members += [("grey.png", _png(images[0]))]
    jpeg = io.BytesIO()
    Image.fromarray(np.repeat(images[1, :, :, np.newaxis] * 15, 3, axis=2)).save(jpeg, "JPEG")
    members += [("colour.jpg", jpeg.getvalue())]
    frame = load_images(zip_of(members), preprocessing=Preprocessing(mode="L"))
    assert image_shape(list(frame.columns[:-1])) == (1, 8, 8)
    assert refusal(load_images, zip_of(members)) == (
        "The image 'colour.jpg' has mode 'RGB' while 'grey.png' has 'L'; declare the mode, "
        "'L' or 'RGB', to convert them to."
    )


def test_text_labels_stay_text_and_number_labels_become_numbers(digits):
    images, _ = digits
    rows = [("a.png", "cat"), ("b.png", "dog")]
    members = [_labels(rows, header="file,animal")]
    members += [("a.png", _png(images[0])), ("b.png", _png(images[1]))]
    frame = load_images(zip_of(members))
    assert frame["animal"].tolist() == ["cat", "dog"]
    assert table_columns(zip_of(members), filename="pets.zip") == ["animal"]


def test_load_table_and_table_columns_dispatch_on_the_suffix(digits_zip):
    assert table_columns(digits_zip, filename="train.zip") == ["digit"]
    frame = load_table(digits_zip, filename="train.ZIP", preprocessing=Preprocessing(scale=1 / 16))
    pd.testing.assert_frame_equal(
        frame, load_images(digits_zip, preprocessing=Preprocessing(scale=1 / 16))
    )


def test_the_label_header_is_read_without_decoding_any_image(digits, monkeypatch):
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("an image was opened"))
    assert label_columns(zip_of(_members(digits)), kind="zip") == ["digit"]


def test_the_form_refuses_an_unsafe_zip_from_its_directory_alone(digits):
    data = zip_of([*_members(digits), ("img/0000.png", b"not read")])  # a repeated member
    assert refusal(table_columns, data, filename="train.zip") == (
        "The image archive is refused: its zip repeats the member(s) 'img/0000.png'."
    )


def test_a_record_hash_is_stable(digits, digits_zip):
    images, targets = digits
    declared = Preprocessing(scale=1 / 16)
    train = load_images(digits_zip, preprocessing=declared)
    again = load_images(zip_of(_members(digits)), preprocessing=declared)
    model = LogisticRegression(max_iter=500).fit(train.iloc[:, :-1], train["digit"])
    target = build_target(model, train, again, label="digit", record_key=b"k")
    assert target.feature_names == pixel_names((1, 8, 8))
    assert image_shape(target.feature_names) == (1, 8, 8)
    hashes = [target.record_hash(target.X_train, i) for i in range(3)]
    assert hashes == [target.record_hash(target.X_test, i) for i in range(3)]
    assert len(set(hashes)) == 3
    row = json.dumps([float(v) / 16 for v in images[0].ravel()], separators=(",", ":"))
    assert hashes[0] == hmac.new(b"k", row.encode(), hashlib.sha256).hexdigest()[:16]


def test_a_test_set_of_another_image_shape_is_refused_by_its_columns(digits, digits_zip):
    train = load_images(digits_zip)
    wide = np.zeros((2, 4, 16), dtype=np.uint8)  # as many pixels, another shape
    test = load_arrays(_npz(X=wide, y=np.array([0, 1])))
    test = test.rename(columns={"y": "digit"})
    model = LogisticRegression(max_iter=500).fit(train.iloc[:, :-1], train["digit"])
    message = refusal(build_target, model, train, test, label="digit")
    assert message.startswith("The test file's feature columns differ from the training file's")


def test_image_shape_is_none_for_other_names():
    assert image_shape(["age", "income"]) is None
    assert image_shape(pixel_names((1, 2, 2))[1:]) is None
    assert image_shape([]) is None


# --------------------------------------------------------------------------- refused archives


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../x.png", "climbs out of the archive with '..'"),
        ("img/../../x.png", "climbs out of the archive with '..'"),
        ("/x.png", "is an absolute path"),
        ("C:x.png", "is an absolute path"),
        ("img\\x.png", "has a '\\' in its path; zip paths separate folders with '/'"),
    ],
)
def test_unsafe_member_names_are_refused(digits, name, problem):
    data = zip_of([*_members(digits), (name, _png(digits[0][0]))])
    message = refusal(load_images, data)
    assert message == f"The image archive is refused: its zip member '{name}' {problem}."


def test_symbolic_links_and_other_compressions_are_refused(digits):
    link = zipfile.ZipInfo("img/link.png")
    link.external_attr = 0o120777 << 16
    message = refusal(load_images, zip_of([*_members(digits), (link, b"/etc/passwd")]))
    assert message.endswith("'img/link.png' is a symbolic link.")
    packed = zipfile.ZipInfo("img/0001.png")
    packed.compress_type = zipfile.ZIP_BZIP2
    members = [m for m in _members(digits) if m[0] != "img/0001.png"]
    message = refusal(load_images, zip_of([*members, (packed, _png(digits[0][1]))]))
    assert message.endswith("'img/0001.png' uses a compression other than stored or deflated.")


def test_a_member_that_expands_hugely_is_refused_while_it_is_read(digits, monkeypatch):
    members = [m for m in _members(digits) if m[0] != "img/0003.png"]
    data = zip_member_bomb(members, name="img/0003.png", expanded_bytes=64 * 2**20)
    assert len(data) < 2**20  # small on the wire
    reads = count_reads(monkeypatch)
    message = refusal(load_images, data, max_bytes=2**20)
    assert message == "The image archive is refused: it would expand to more than 4 MiB."
    assert sum(reads) <= 4 * 2**20 + 2 * archive.READ_CHUNK_BYTES


def test_a_labels_csv_that_expands_hugely_is_refused(digits, monkeypatch):
    monkeypatch.setattr(images, "MAX_LABELS_BYTES", 2**20)
    members = [m for m in _members(digits) if m[0] != "labels.csv"]
    data = zip_member_bomb(members, name="labels.csv", expanded_bytes=2**21)
    assert refusal(load_images, data) == (
        "The image archive's 'labels.csv' expands to more than 1 MiB."
    )


def test_a_20000_by_20000_png_is_refused_before_its_pixels_are_decoded(digits, monkeypatch):
    real_load = ImageFile.ImageFile.load

    def load(self):
        assert self.size == (8, 8), "a large image was decoded"
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    for width, height in ((20_000, 20_000), (600, 600)):
        members = [m for m in _members(digits) if m[0] != "img/0002.png"]
        data = zip_of([*members, ("img/0002.png", png_claiming(width, height))])
        assert len(data) < 2**14
        assert refusal(load_images, data) == (
            f"The image 'img/0002.png' has more than {MAX_IMAGE_PIXELS:,} pixels, "
            "the limit per image."
        )


def test_the_pixel_limit_is_a_parameter(digits_zip):
    message = refusal(load_images, digits_zip, max_pixels=63)
    assert message == "The image 'img/0000.png' has more than 63 pixels, the limit per image."


def test_a_file_named_png_that_is_no_image_is_refused(digits):
    members = [m for m in _members(digits) if m[0] != "img/0005.png"]
    data = zip_of([*members, ("img/0005.png", b"#!/bin/sh\nrm -rf /\n")])
    assert (
        refusal(load_images, data) == "The file 'img/0005.png' is not a readable PNG or JPEG image."
    )


def test_a_truncated_png_is_refused(digits):
    members = [m for m in _members(digits) if m[0] != "img/0005.png"]
    whole = _png(digits[0][5])
    data = zip_of([*members, ("img/0005.png", whole[: len(whole) // 2])])
    assert (
        refusal(load_images, data) == "The file 'img/0005.png' is not a readable PNG or JPEG image."
    )


def test_labels_naming_a_missing_file_are_refused(digits):
    data = zip_of([m for m in _members(digits) if m[0] != "img/0007.png"])
    assert (
        refusal(load_images, data) == "labels.csv lists file(s) the archive lacks: 'img/0007.png'."
    )


def test_an_image_not_in_labels_is_refused(digits):
    data = zip_of([*_members(digits), ("img/extra.png", _png(digits[0][0]))])
    assert refusal(load_images, data) == (
        "The image archive holds file(s) labels.csv does not list: 'img/extra.png'."
    )


def test_folders_are_allowed(digits):
    data = zip_of([("img/", b""), *_members(digits)])
    assert load_images(data).shape == (N_IMAGES, 65)


def test_images_of_mixed_sizes_are_refused(digits):
    members = [m for m in _members(digits) if m[0] != "img/0004.png"]
    data = zip_of([*members, ("img/0004.png", _png(np.zeros((8, 9), dtype=np.uint8)))])
    assert refusal(load_images, data) == (
        "The image 'img/0004.png' is 9 x 8 pixels while 'img/0000.png' is 8 x 8; "
        "all images must be the same size."
    )


def test_too_many_images_are_refused_before_decoding(digits_zip, monkeypatch):
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("an image was opened"))
    message = refusal(load_images, digits_zip, max_images=3)
    assert (
        message == "The image archive is refused: labels.csv lists more than 3 images, the limit."
    )


def test_decoded_bytes_are_capped_before_decoding(digits_zip):
    message = refusal(load_images, digits_zip, max_decoded_bytes=700)
    assert message == (
        "The image archive is refused: its 12 images of 8 x 8 pixels in mode 'L' decode to "
        "768 bytes, more than the limit of 700 bytes."
    )


def test_zip_members_are_capped(digits_zip):
    message = refusal(load_images, digits_zip, max_members=5)
    assert message == (
        "The image archive is refused: it holds 13 zip members, more than the limit of 5."
    )


def test_sixteen_bit_images_are_refused(digits):
    members = [m for m in _members(digits) if m[0] != "img/0001.png"]
    deep = io.BytesIO()
    Image.fromarray(np.full((8, 8), 1000, dtype=np.uint16)).save(deep, format="PNG")
    data = zip_of([*members, ("img/0001.png", deep.getvalue())])
    assert refusal(load_images, data, preprocessing=Preprocessing(mode="L")) == (
        "The image 'img/0001.png' has mode 'I;16'; only 8-bit grey or colour images are accepted."
    )


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (None, "The image archive has no labels.csv at its top level"),
        (b"name,digit\na.png,1\n", "labels.csv's header must be exactly two names"),
        (b"file,digit,extra\na.png,1,2\n", "labels.csv's header must be exactly two names"),
        (b"file,pixel_0_0_0\na.png,1\n", "labels.csv names its label 'pixel_0_0_0'"),
        (b"file,digit\n", "labels.csv lists no images."),
        (b"file,digit\na.png,1,9\n", "labels.csv's row 2 has 3 fields, not 2."),
        (b"file,digit\na.png,\n", "labels.csv's row 2 has no label."),
        (b"file,digit\na.png,1\na.png,2\n", "lists the file(s) 'a.png' more than once"),
        (b"file,digit\na.gif,1\n", "labels.csv lists 'a.gif', not named as PNG or JPEG"),
        (b"file,digit\n\xff\xfe,1\n", "labels.csv is not UTF-8 text"),
    ],
)
def test_malformed_labels_are_refused(digits, labels, expected):
    members = [("a.png", _png(digits[0][0]))]
    members += [] if labels is None else [("labels.csv", labels)]
    assert expected in refusal(load_images, zip_of(members))


def test_the_form_sees_the_label_header_refusals_too(digits):
    data = zip_of([("labels.csv", b"name,digit\n"), ("a.png", _png(digits[0][0]))])
    assert "header must be exactly two names" in refusal(table_columns, data, filename="x.zip")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"file,label\na.png,1\n", "The image archive is not a zip archive."),
        (
            b"PK\x03\x04" + b"\0" * 100,
            "The image archive is corrupt: its zip cannot be read.",
        ),
    ],
)
def test_what_is_no_zip_is_refused(data, expected):
    assert refusal(load_images, data) == expected


def test_an_oversized_archive_is_refused(digits_zip):
    assert "larger than the limit" in refusal(
        load_table, digits_zip, filename="t.zip", max_bytes=99
    )


# --------------------------------------------------------------------------- arrays


def _npz(**arrays) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


@pytest.mark.parametrize("channels", [False, True])
def test_an_npz_of_images_loads_to_the_normalised_table(digits, channels):
    images, targets = digits
    X = images[:, np.newaxis] if channels else images
    frame = load_arrays(_npz(X=X, y=targets), preprocessing=Preprocessing(scale=1 / 16))
    assert list(frame.columns) == [*pixel_names((1, 8, 8)), "y"]
    np.testing.assert_allclose(frame.iloc[:, :-1], images.reshape(N_IMAGES, -1) / 16, rtol=1e-6)
    assert frame["y"].tolist() == targets.tolist()
    assert table_columns(_npz(X=X, y=targets), filename="a.npz") == ["y"]


def test_an_npz_keeps_its_images_identical_to_the_archive(digits, digits_zip):
    images, targets = digits
    from_npz = load_arrays(_npz(X=images, y=targets))  # uint8: divided by 255, as images are
    from_zip = load_images(digits_zip).rename(columns={"digit": "y"})
    pd.testing.assert_frame_equal(from_npz, from_zip)


def test_an_npz_of_flat_float_features_is_kept_as_it_is():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(6, 3)), np.array(["a", "b"] * 3)
    frame = load_arrays(_npz(X=X, y=y))
    assert list(frame.columns) == ["feature_0", "feature_1", "feature_2", "y"]
    np.testing.assert_allclose(frame.iloc[:, :-1], X.astype(np.float32))
    assert frame["y"].tolist() == y.tolist()
    assert image_shape(list(frame.columns[:-1])) is None


def test_an_npz_goes_through_load_table(digits):
    images, targets = digits
    frame = load_table(_npz(X=images, y=targets), filename="train.npz")
    assert frame.shape == (N_IMAGES, 65)


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        (
            {"X": np.array([[1, None]], dtype=object), "y": np.array([0])},
            "The array file's X holds Python objects, refused because loading them can run code; "
            "save integers or floats.",
        ),
        (
            {"X": np.zeros((2, 3)), "y": np.array([{"a": 1}, 2], dtype=object)},
            "The array file's y holds Python objects, refused because loading them can run code; "
            "save integer or text labels.",
        ),
        (
            {"X": np.array([[0.0, np.nan], [np.inf, 1.0]]), "y": np.array([0, 1])},
            "The array file's X has 2 values that are NaN or infinite.",
        ),
        (
            {"X": np.zeros((3, 4)), "y": np.array([0, 1])},
            "The array file's X holds 3 records but its y 2 labels.",
        ),
        (
            {"X": np.zeros((2, 4)), "y": np.array([0, 1]), "z": np.zeros(2)},
            "The array file holds unexpected members 'z.npy'; it must hold exactly the arrays X "
            "and y, as np.savez(path, X=X, y=y) writes them.",
        ),
        (
            {"X": np.zeros((2, 4))},
            "The array file has no array 'y'; it must hold exactly X and y.",
        ),
        (
            {"X": np.zeros(4), "y": np.array([0, 1])},
            "The array file's X has 1 dimensions; it must be (n, C, H, W), (n, H, W) or "
            "(n, features).",
        ),
        (
            {"X": np.zeros((2, 1, 1, 2, 2)), "y": np.array([0, 1])},
            "The array file's X has 5 dimensions; it must be (n, C, H, W), (n, H, W) or "
            "(n, features).",
        ),
        (
            {"X": np.zeros((2, 2)), "y": np.zeros((2, 1))},
            "The array file's y has 2 dimensions; it must hold one label per record, shape (n,).",
        ),
        (
            {"X": np.array([["a", "b"]]), "y": np.array([0])},
            "The array file's X is of type '<U1'; save integers or floats.",
        ),
        (
            {"X": np.zeros((1, 2), dtype=complex), "y": np.array([0])},
            "The array file's X is of type '<c16'; save integers or floats.",
        ),
        (
            {"X": np.zeros((0, 2)), "y": np.zeros(0)},
            "The array file's X holds no values.",
        ),
        (
            {"X": np.full((1, 2), 1e300), "y": np.array([0])},
            "The data's values overflow 32-bit floats once normalised; check the declared scale.",
        ),
    ],
)
def test_bad_arrays_are_refused(arrays, expected):
    assert refusal(load_arrays, _npz(**arrays)) == expected


def test_array_size_is_read_from_the_header_before_loading(monkeypatch):
    data = _npz(X=np.zeros((4, 8, 8), dtype=np.uint8), y=np.arange(4))
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("loaded"))
    assert refusal(load_arrays, data, max_elements=255) == (
        "The array file is refused: X holds 256 values, more than the limit of 255."
    )
    assert refusal(load_arrays, data, max_pixels=63) == (
        "The array file's X holds images of more than 63 pixels, the limit."
    )


def test_an_array_whose_header_claims_too_much_is_refused_before_allocating():
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)}
    )
    data = zip_of([("X.npy", header.getvalue()), ("y.npy", _npy(np.arange(2)))])
    assert "X holds 1,000,000,000,000 values, more than the limit" in refusal(load_arrays, data)


def test_an_array_bigger_than_its_file_allows_once_loaded_is_refused():
    labels = np.array(["x" * 1000] * 1100)  # 4.4 MB of text that compresses to little
    out = io.BytesIO()
    np.savez_compressed(out, X=np.zeros((1100, 1)), y=labels)
    data = out.getvalue()
    message = refusal(load_arrays, data, max_bytes=2**20)
    assert message == "The array file is refused: its arrays would take more than 4 MiB loaded."


def test_an_npz_member_that_is_no_array_is_refused():
    data = zip_of([("X.npy", b"\x93NUMPY garbage"), ("y.npy", _npy(np.arange(2)))])
    assert refusal(load_arrays, data) == "The array file's 'X' is not a NumPy array it can read."


def test_unsafe_npz_members_are_refused():
    data = zip_of([("X.npy", _npy(np.zeros((2, 2)))), ("../y.npy", _npy(np.arange(2)))])
    assert refusal(load_arrays, data) == (
        "The array file is refused: its zip member '../y.npy' climbs out of the archive with '..'."
    )


def test_a_pickle_named_npz_is_refused_unread():
    data = pickle.dumps({"X": np.zeros((2, 2)), "y": np.arange(2)})
    assert refusal(load_table, data, filename="a.npz") == "The array file is not a zip archive."


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


# --------------------------------------------------------------------------- declarations


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ({"mode": "CMYK"}, "The declared image mode 'CMYK' is not one of 'L' (grey) or 'RGB'."),
        ({"scale": 0}, "The declared normalisation's scale must be positive finite numbers."),
        ({"scale": "1/255"}, "The declared normalisation's scale must be positive finite numbers."),
        ({"std": (1.0, -1.0)}, "The declared normalisation's std must be positive finite numbers."),
        ({"mean": (float("nan"),)}, "The declared normalisation's mean must be finite numbers."),
        ({"mean": ()}, "The declared normalisation's mean must be finite numbers."),
    ],
)
def test_bad_declarations_are_refused(declared, expected):
    assert refusal(Preprocessing, **declared) == expected


def test_a_declaration_for_other_channels_is_refused(digits_zip):
    declared = Preprocessing(mean=[0.5, 0.5, 0.5])
    assert declared.mean == (0.5, 0.5, 0.5)
    assert refusal(load_images, digits_zip, preprocessing=declared) == (
        "The declared normalisation gives 3 mean values but the data has 1 channel(s)."
    )
