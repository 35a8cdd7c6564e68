"""Builders of hostile uploads, shared by the library, web, API and CLI tests.

Each function returns the bytes of one crafted file. They are built at test
time and stay small on disk; only what they expand to is large.
"""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import skops.io
from sklearn.linear_model import LogisticRegression

#: Expanded sizes of the bombs in the issue: schema.json of 1.5 GiB, 100M rows.
SCHEMA_BOMB_BYTES = 3 * 2**29
PARQUET_BOMB_ROWS = 100_000_000

_CHUNK = 2**24


def skops_model() -> bytes:
    """A sound skops file: a logistic regression on three features."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    return skops.io.dumps(LogisticRegression().fit(X, (X[:, 0] > 0).astype(int)))


def skops_schema_bomb(expanded_bytes: int = SCHEMA_BOMB_BYTES) -> bytes:
    """A loadable skops model whose schema.json is padded with spaces to ``expanded_bytes``."""
    return _rewritten(
        skops_model(), "schema.json", lambda schema: _padded(schema, b" ", expanded_bytes)
    )


def skops_array_bomb(expanded_bytes: int = SCHEMA_BOMB_BYTES) -> bytes:
    """A skops model with one array member replaced by ``expanded_bytes`` of a zero array."""
    data = skops_model()
    name = next(n for n in zipfile.ZipFile(io.BytesIO(data)).namelist() if n.endswith(".npy"))
    n_values = expanded_bytes // 8
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (n_values,)}
    )
    return _rewritten(data, name, lambda _: _padded(header.getvalue(), b"\0", expanded_bytes))


def skops_lying_sizes(expanded_bytes: int = 64 * 2**20) -> bytes:
    """A skops zip whose headers declare 2 bytes for an array member that expands far more."""
    data = bytearray(skops_array_bomb(expanded_bytes))
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = data.find(signature)
        while start >= 0:
            declared = struct.unpack_from("<I", data, start + offset)[0]
            if declared >= expanded_bytes // 2:
                struct.pack_into("<I", data, start + offset, 2)
            start = data.find(signature, start + 4)
    return bytes(data)


def skops_zip_slip(name: str = "../x") -> bytes:
    """A sound skops model with one extra member named ``name`` (``../x``, ``/abs``, ``a\\\\b``)."""
    return _with_member(skops_model(), zipfile.ZipInfo(name), b"planted")


def skops_duplicate_member() -> bytes:
    """A skops model whose schema.json appears twice, the second naming another model."""
    data = skops_model()
    return _with_member(data, zipfile.ZipInfo("schema.json"), b'{"__class__": "other"}')


def parquet_row_bomb(n_rows: int = PARQUET_BOMB_ROWS) -> bytes:
    """A Parquet file of ``n_rows`` zero rows (feature "x", label "y"), run-length encoded."""
    buffer = io.BytesIO()
    group = min(n_rows, 2**20)
    table = pa.table({"x": np.zeros(group), "y": np.zeros(group, dtype=np.int64)})
    with pq.ParquetWriter(buffer, table.schema) as writer:
        for start in range(0, n_rows, group):
            writer.write_table(table.slice(0, min(group, n_rows - start)))
    return buffer.getvalue()


def parquet_text_bomb(n_rows: int = 2**12, value_bytes: int = 2**20) -> bytes:
    """A Parquet file repeating one ``value_bytes`` text value ``n_rows`` times (dictionary)."""
    values = pa.array(["x" * value_bytes]).dictionary_encode()
    column = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(n_rows, dtype=np.int32)), values.dictionary
    )
    buffer = io.BytesIO()
    table = pa.table({"t": column, "y": np.zeros(n_rows, dtype=np.int64)})
    pq.write_table(table, buffer, store_schema=False)  # the reader sees plain text
    return buffer.getvalue()


def csv_wide(n_columns: int, *, repeat: str | None = None) -> bytes:
    """A CSV of one row and ``n_columns`` columns; ``repeat`` names the last one as a duplicate."""
    names = [f"c{i}" for i in range(n_columns)]
    if repeat is not None:
        names[-1] = repeat
    return (",".join(names) + "\n" + ",".join("0" * n_columns) + "\n").encode()


def _padded(content: bytes, fill: bytes, expanded_bytes: int):
    """Chunks of ``content`` then ``fill`` up to ``expanded_bytes`` in all."""
    yield content
    remaining = expanded_bytes - len(content)
    while remaining > 0:
        n_bytes = min(remaining, _CHUNK)
        yield fill * n_bytes
        remaining -= n_bytes


def _rewritten(data: bytes, name: str, chunks) -> bytes:
    """A copy of the zip with member ``name`` streamed, deflated, from ``chunks(old)``."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for member in source.infolist():
            content = source.read(member)
            if member.filename != name:
                target.writestr(member, content)
                continue
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            with target.open(info, "w", force_zip64=False) as stream:
                for chunk in chunks(content):
                    stream.write(chunk)
    return out.getvalue()


def _with_member(data: bytes, info: zipfile.ZipInfo, content: bytes) -> bytes:
    out = io.BytesIO(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name" is the point
        with zipfile.ZipFile(out, "a") as archive:
            archive.writestr(info, content)
    return out.getvalue()


def skops_npz_bomb(expanded_bytes: int = 64 * 2**20) -> bytes:
    """A skops file with an ``.npz`` member whose own zip expands to ``expanded_bytes``:
    skops hands such a member to scipy, which unzips it again."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("data.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as stream:
            for chunk in _padded(b"", b"\0", expanded_bytes):
                stream.write(chunk)
    info = zipfile.ZipInfo("bomb.npz")  # stored: only the inner zip is compressed
    return _with_member(skops_model(), info, inner.getvalue())


# --------------------------------------------------------------------------- images


def png_claiming(width: int, height: int) -> bytes:
    """A PNG of a few bytes whose header claims ``width`` x ``height`` grey pixels.

    Its one IDAT chunk holds a single row, so a reader that trusts the header
    and decodes would fail only after allocating the claimed pixels.
    """

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey, no interlace
    pixels = zlib.compress(b"\0" * (width + 1))
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def zip_of(members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    """A deflated zip of ``(name or ZipInfo, content)`` members, in order, repeats allowed."""
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name" may be the point
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, content in members:
                archive.writestr(name, content)
    return out.getvalue()


def zip_member_bomb(members: list[tuple[str, bytes]], *, name: str, expanded_bytes: int) -> bytes:
    """``zip_of(members)`` plus member ``name``: zeros deflated, expanding to ``expanded_bytes``."""
    out = io.BytesIO(zip_of(members))
    with zipfile.ZipFile(out, "a") as archive:
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as stream:
            for chunk in _padded(b"", b"\0", expanded_bytes):
                stream.write(chunk)
    return out.getvalue()


def count_reads(monkeypatch) -> list[int]:
    """Record the size of every chunk a loader decompresses from a zip member (to show a
    bomb is refused while it is read, not after)."""
    reads = []
    real_read = zipfile.ZipExtFile.read

    def read(self, n=-1):
        chunk = real_read(self, n)
        reads.append(len(chunk))
        return chunk

    monkeypatch.setattr(zipfile.ZipExtFile, "read", read)
    return reads
