"""Uploads kept across a form error, so that no file must be chosen again.

Each file that passed its own checks is stored by SHA-256 in the content store (as a
request's files are) and named in the signed-in user's session only: a reference
cannot be sent in a form, so no one can claim a file they did not upload.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from attacks.audit import Upload
from tre_audit.submissions import services
from tre_audit.submissions.models import StoredFile

SESSION_KEY = "kept_uploads"
#: The file inputs of a version's form, named as the services take them.
FILE_ROLES = ("model", "architecture", "train", "test")
#: Those a version may go without (an ONNX model's declared architecture and recipe).
OPTIONAL_FILE_ROLES = ("architecture",)


@dataclass(frozen=True)
class KeptFile:
    """A file stored for a form that has not gone through yet."""

    sha256: str
    name: str
    size: int

    def upload(self) -> Upload:
        stored = StoredFile.objects.get(sha256=self.sha256)
        return Upload(name=self.name, data=services.file_read(stored=stored))


def kept_get(session, *, key: str) -> dict[str, KeptFile]:
    """The files kept for one form (``key``) whose stored bytes still exist."""
    entries = session.get(SESSION_KEY, {}).get(key, {})
    kept = {role: _kept_file(entry) for role, entry in entries.items() if role in FILE_ROLES}
    digests = [k.sha256 for k in kept.values() if k is not None]
    stored = set(StoredFile.objects.filter(sha256__in=digests).values_list("sha256", flat=True))
    return {
        role: k
        for role, k in kept.items()
        if k is not None and k.sha256 in stored and services.file_path(k.sha256).exists()
    }


def _kept_file(entry) -> KeptFile | None:
    try:
        return KeptFile(
            sha256=str(entry["sha256"]), name=str(entry["name"]), size=int(entry["size"])
        )
    except (KeyError, TypeError, ValueError):
        return None


def kept_put(
    session, *, key: str, uploads: dict[str, Upload], dropped: Iterable[str] = ()
) -> dict[str, KeptFile]:
    """Store ``uploads`` and keep them for the form ``key``, each replacing its role's;
    forget the kept files of the ``dropped`` roles (an optional file no longer wanted)."""
    forms = dict(session.get(SESSION_KEY, {}))
    entries = {role: e for role, e in forms.get(key, {}).items() if role not in set(dropped)}
    for role, upload in uploads.items():
        stored = services.file_store(data=upload.data)
        entries[role] = asdict(KeptFile(sha256=stored.sha256, name=upload.name, size=stored.size))
    session[SESSION_KEY] = forms | {key: entries}
    return kept_get(session, key=key)


def kept_clear(session, *, key: str) -> None:
    """The form went through: its kept files now belong to the request (or to no one)."""
    forms = dict(session.get(SESSION_KEY, {}))
    if forms.pop(key, None) is not None:
        session[SESSION_KEY] = forms
