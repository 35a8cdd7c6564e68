"""Services that change submissions: files, status, and the audit log."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from tre_audit.submissions.enums import Status
from tre_audit.submissions.exceptions import InvalidTransition
from tre_audit.submissions.models import AuditEntry, StoredFile, Submission

#: Every status change the service allows; anything else is refused.
TRANSITIONS: dict[str, set[str]] = {
    Status.SUBMITTED: {Status.AUDITING, Status.WITHDRAWN},
    Status.AUDITING: {Status.AWAITING_REVIEW, Status.AUDIT_FAILED},
    Status.AUDIT_FAILED: {Status.AUDITING, Status.SUBMITTED, Status.WITHDRAWN},
    Status.AWAITING_REVIEW: {
        Status.APPROVED,
        Status.CHANGES_REQUESTED,
        Status.REJECTED,
        Status.WITHDRAWN,
    },
    Status.CHANGES_REQUESTED: {Status.SUBMITTED, Status.WITHDRAWN},
    Status.APPROVED: {Status.RELEASED, Status.WITHDRAWN},
    Status.REJECTED: set(),
    Status.WITHDRAWN: set(),
    Status.RELEASED: set(),
}

#: The hash the first audit entry is chained to.
GENESIS_HASH = "0" * 64


@transaction.atomic
def submission_set_status(
    *, submission: Submission, to: Status, by: AbstractBaseUser | None, reason: str = ""
) -> Submission:
    """Move ``submission`` to ``to`` if the state machine allows it, logging the change."""
    before = submission.status
    if to not in TRANSITIONS.get(before, set()):
        raise InvalidTransition(
            f"A request that is {Status(before).label.lower()} cannot become "
            f"{Status(to).label.lower()}."
        )
    audit_entry_append(
        submission=submission, action="status", before=before, after=to, by=by, reason=reason
    )
    submission.status = to
    submission.save(update_fields=["status", "updated_at"])
    return submission


@transaction.atomic
def audit_entry_append(
    *,
    submission: Submission | None,
    action: str,
    by: AbstractBaseUser | None,
    before: str = "",
    after: str = "",
    reason: str = "",
) -> AuditEntry:
    """Append one entry, chained to the newest by hash (the log is locked meanwhile)."""
    last = AuditEntry.objects.select_for_update().order_by("-id").first()
    entry = AuditEntry(
        submission=submission,
        actor=by,
        action=action,
        before=before,
        after=after,
        reason=reason,
        created_at=timezone.now(),
        prev_hash=last.entry_hash if last else GENESIS_HASH,
    )
    entry.entry_hash = audit_entry_hash(entry)
    entry.save()
    return entry


def audit_entry_hash(entry: AuditEntry) -> str:
    """SHA-256 of the entry's content and the previous entry's hash."""
    content = {
        "prev": entry.prev_hash,
        "submission": entry.submission_id,
        "actor": entry.actor_id,
        "action": entry.action,
        "before": entry.before,
        "after": entry.after,
        "reason": entry.reason,
        "created_at": entry.created_at.isoformat(),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class ChainCheck:
    """Result of verifying the audit log."""

    ok: bool
    n_entries: int
    first_bad_id: int | None = None
    problem: str = ""


def audit_chain_verify() -> ChainCheck:
    """Recompute every hash in order; name the first entry that was edited or removed."""
    prev, count = GENESIS_HASH, 0
    for entry in AuditEntry.objects.order_by("id").iterator():
        count += 1
        if entry.prev_hash != prev:
            return ChainCheck(False, count, entry.id, "an entry before it was removed or changed")
        if audit_entry_hash(entry) != entry.entry_hash:
            return ChainCheck(
                False, count, entry.id, "its content was changed after it was written"
            )
        prev = entry.entry_hash
    return ChainCheck(True, count)


def file_store(*, data: bytes) -> StoredFile:
    """Store ``data`` under its SHA-256; the same bytes are stored once, never replaced."""
    digest = hashlib.sha256(data).hexdigest()
    path = file_path(digest)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    stored, _ = StoredFile.objects.get_or_create(sha256=digest, defaults={"size": len(data)})
    return stored


def file_read(*, stored: StoredFile) -> bytes:
    """The stored bytes, checked against their hash (a changed file is an error, not data)."""
    data = file_path(stored.sha256).read_bytes()
    if hashlib.sha256(data).hexdigest() != stored.sha256:
        raise OSError(f"Stored file {stored.sha256[:12]} no longer matches its hash.")
    return data


def file_path(digest: str):
    return settings.TRE_AUDIT_FILE_ROOT / digest[:2] / digest[2:4] / digest
