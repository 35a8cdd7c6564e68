"""Reading untrusted zip archives: the checks every zip upload shares.

A skops model, an archive of images and an ``.npz`` of arrays are all zips,
and each can carry the same attacks: members that climb out of the archive
or name absolute paths, symbolic links, repeated names, compressions that
zipfile decompresses without an output bound, and members that expand far
beyond what their headers declare. Callers add the names their format
expects; the sentences name the upload as the caller calls it.
"""

from __future__ import annotations

import re
import stat
import zipfile
from collections.abc import Callable, Iterator

from safe_model.refusal import quote, quote_all, repeated

#: Members are decompressed this much at a time while their size is counted.
READ_CHUNK_BYTES = 2**20

#: Stored or deflated members only. zipfile decompresses bzip2 and LZMA
#: without an output bound per read, so their expansion cannot be counted.
ZIP_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})


def checked_members(
    archive: zipfile.ZipFile,
    *,
    max_members: int,
    what: str,
    error: type[Exception],
    name_problem: Callable[[str], str | None] = lambda name: None,
) -> list[zipfile.ZipInfo]:
    """The archive's members, or ``error`` naming the first unsafe one.

    Parameters
    ----------
    archive : ZipFile
        The opened upload.
    max_members : int
        Most members accepted.
    what : str
        What the upload is ("model file"), for the sentence.
    error : type of Exception
        The caller's domain error, raised with one sentence.
    name_problem : callable, optional
        The format's own rule on names: returns why a name is refused, or
        None. It sees only names that neither are absolute nor climb out.

    Returns
    -------
    list of ZipInfo
    """
    members = archive.infolist()
    if len(members) > max_members:
        raise error(
            f"The {what} is refused: it holds {len(members)} zip members, "
            f"more than the limit of {max_members}."
        )
    for member in members:
        problem = member_problem(member) or name_problem(member.filename)
        if problem is not None:
            name = quote(member.filename)
            raise error(f"The {what} is refused: its zip member {name} {problem}.")
    duplicates = repeated(member.filename for member in members)
    if duplicates:
        names = quote_all(duplicates)
        raise error(f"The {what} is refused: its zip repeats the member(s) {names}.")
    return members


def member_problem(member: zipfile.ZipInfo) -> str | None:
    """Why a member is unsafe in any archive, as the end of a sentence, or None.

    Parameters
    ----------
    member : ZipInfo

    Returns
    -------
    str or None
    """
    name = member.filename
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "is an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "climbs out of the archive with '..'"
    if stat.S_ISLNK(member.external_attr >> 16):
        return "is a symbolic link"
    if member.compress_type not in ZIP_METHODS:
        return "uses a compression other than stored or deflated"
    return None


def expanded_size(archive: zipfile.ZipFile, member: zipfile.ZipInfo, *, cap: int) -> int:
    """Bytes the member really expands to (never its header's word), or the first count over cap.

    Parameters
    ----------
    archive : ZipFile
    member : ZipInfo
    cap : int
        Decompression stops at most one chunk past this many bytes.

    Returns
    -------
    int
    """
    return sum(len(chunk) for chunk in _chunks(archive, member, cap=cap))


def read_capped(archive: zipfile.ZipFile, member: zipfile.ZipInfo, *, cap: int) -> bytes | None:
    """The member's expanded bytes, counted while they are read, or None past ``cap``.

    Parameters
    ----------
    archive : ZipFile
    member : ZipInfo
    cap : int
        Most bytes accepted; decompression stops at most one chunk past it.

    Returns
    -------
    bytes or None
    """
    data = b"".join(_chunks(archive, member, cap=cap))
    return data if len(data) <= cap else None


def _chunks(archive: zipfile.ZipFile, member: zipfile.ZipInfo, *, cap: int) -> Iterator[bytes]:
    n_bytes = 0
    with archive.open(member) as stream:
        while n_bytes <= cap and (chunk := stream.read(READ_CHUNK_BYTES)):
            n_bytes += len(chunk)
            yield chunk
