"""Services that change submissions: files, status, and the audit log."""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import io
import json
import logging
import os
import threading
import zipfile
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import CharField, F, FloatField, ProtectedError, Q, Value
from django.db.models.functions import Cast, Concat
from django.utils import timezone

from attacks.audit import ATTACKS, AuditConfig, Upload, shadow_base_seed, shadow_rule
from attacks.exceptions import AuditError, PolicyError
from attacks.pdf import ReportIdentity, render_pdf
from attacks.policy import Policy, load_policy
from attacks.progress import PhaseMark, phase_mark_next
from attacks.report import report_dumps
from attacks.rounds import round_counts
from attacks.sandboxed import (
    uploads_audit,
    uploads_audit_round,
    uploads_check,
    uploads_shadow_train,
)
from tre_audit.reviews.enums import Role
from tre_audit.submissions.enums import FileRole, Hosting, RunStatus, Status
from tre_audit.submissions.exceptions import (
    AuditLogBroken,
    InvalidTransition,
    NotAllowed,
    SubmissionError,
    UploadRefused,
)
from tre_audit.submissions.models import (
    DECLARATION_LABELS,
    AuditChainHead,
    AuditEntry,
    AuditRun,
    AuditShadow,
    PolicyVersion,
    Project,
    StoredFile,
    Submission,
    SubmissionFile,
    SubmissionVersion,
)
from tre_audit.submissions.notifications import notify_audit_finished
from tre_audit.submissions.selectors import run_phase_mark, user_is_author_or_admin, user_roles

logger = logging.getLogger(__name__)

#: Every status change the service allows; anything else is refused.
TRANSITIONS: dict[str, set[str]] = {
    Status.SUBMITTED: {Status.AUDITING, Status.WITHDRAWN},
    Status.AUDITING: {Status.AWAITING_REVIEW, Status.AUDIT_FAILED},
    Status.AUDIT_FAILED: {Status.AUDITING, Status.SUBMITTED, Status.WITHDRAWN},
    Status.AWAITING_REVIEW: {
        Status.SUBMITTED,  # a new version: the evidence changed, reviews start again
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
#: The primary key of the audit log's one chain-head row.
CHAIN_HEAD = 1
#: The one sentence every change is refused with while the log is broken.
AUDIT_LOG_BROKEN = (
    "The audit log failed verification, so no change can be recorded until a TRE admin "
    "has restored it."
)
#: Why an anchored entry that is no longer in the database fails verification.
ANCHORED_BUT_REMOVED = "it was anchored, and it and the entries after it were removed"
#: Why an entry whose hash differs from its anchored one fails verification.
ANCHOR_MISMATCH = "it no longer matches its anchored hash: it and the chain after it were rewritten"


def submission_lock(*, submission: Submission) -> Submission:
    """Re-read ``submission`` in place, its row locked until the transaction ends.

    Anything that decides on a request's status decides on this locked copy, never on
    one read earlier, which a concurrent change (a withdraw, a release) may have made
    stale. Call it inside ``transaction.atomic``.
    """
    submission.refresh_from_db(from_queryset=Submission.objects.select_for_update())
    return submission


@transaction.atomic
def submission_set_status(
    *, submission: Submission, to: Status, by: AbstractBaseUser | None, reason: str = ""
) -> Submission:
    """Move ``submission`` to ``to`` if the state machine allows it, logging the change.

    The status is re-read under a lock first (the caller's object is updated), so of two
    racing changes the second is judged on what the first made: terminal stays terminal.
    """
    before = submission_lock(submission=submission).status
    if to not in TRANSITIONS.get(before, set()):
        raise InvalidTransition(
            f"A request that is {Status(before).label.lower()} cannot become "
            f"{Status(to).label.lower()}."
        )
    audit_entry_append(
        submission=submission, action="status", before=before, after=to, by=by, reason=reason
    )
    submission.status = to
    fields = ["status", "updated_at"]
    if before == Status.AWAITING_REVIEW:  # out of the queue: a checker's claim ends with it
        submission.claimed_by, submission.claimed_at = None, None
        fields += ["claimed_by", "claimed_at"]
    submission.save(update_fields=fields)
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
    """Append one entry, chained by hash to the newest, and move the chain head to it.

    The head row is locked ``FOR UPDATE`` until the transaction ends, so appends wait
    for each other on PostgreSQL as on SQLite: one chain, never a fork.
    """
    head = _chain_head_locked()
    entry = AuditEntry(
        submission=submission,
        actor=by,
        action=action,
        before=before,
        after=after,
        reason=reason,
        created_at=timezone.now(),
        prev_hash=head.entry_hash,
    )
    entry.entry_hash = audit_entry_hash(entry)
    entry.save()
    AuditChainHead.objects.filter(pk=head.pk).update(entry_id=entry.id, entry_hash=entry.entry_hash)
    transaction.on_commit(lambda: _anchor_write(entry))
    return entry


def _chain_head_locked() -> AuditChainHead:
    """The locked chain head; refused if the log failed verification or its newest entry
    is not the head (an edited or cut-off tail), checked in one indexed read."""
    head, _ = AuditChainHead.objects.select_for_update().get_or_create(
        pk=CHAIN_HEAD, defaults={"entry_hash": GENESIS_HASH}
    )
    newest = AuditEntry.objects.order_by("-id").values_list("id", "entry_hash").first()
    if head.broken or newest != _head_pair(head):
        raise AuditLogBroken(AUDIT_LOG_BROKEN)
    return head


def _head_pair(head: AuditChainHead | None) -> tuple[int, str] | None:
    if head is None or head.entry_id is None:
        return None
    return head.entry_id, head.entry_hash


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
    """Verify the whole log and record the outcome on the chain head.

    Each entry must match its hash and chain to the one before; each anchored
    (id, hash) pair must still be in the log unchanged, so an entry rewritten and the
    chain re-hashed after it shows however many entries follow; the newest entry must
    be the head. Entries appended meanwhile (after the head read first) wait for the
    next check. While the log is broken, appends are refused.
    """
    head = AuditChainHead.objects.filter(pk=CHAIN_HEAD).first()
    check = _chain_check(head, anchored=_anchored_hashes())
    AuditChainHead.objects.update_or_create(
        pk=CHAIN_HEAD,
        defaults={"broken": "" if check.ok else _broken_note(check), "checked_at": timezone.now()},
        create_defaults={"entry_hash": GENESIS_HASH},
    )
    return check


def _chain_check(head: AuditChainHead | None, *, anchored: dict[int, str]) -> ChainCheck:
    newest = _head_pair(head)
    entries = AuditEntry.objects.order_by("id")
    if newest is not None:
        entries = entries.filter(id__lte=newest[0])
    anchored_ids = sorted(anchored)
    prev, count, last = GENESIS_HASH, 0, None
    for entry in entries.iterator():
        count += 1
        missing = _anchored_between(anchored_ids, last.id if last else 0, entry.id)
        if missing is not None:
            return ChainCheck(False, count, missing, ANCHORED_BUT_REMOVED)
        problem = _entry_problem(entry, prev, anchored.get(entry.id))
        if problem:
            return ChainCheck(False, count, entry.id, problem)
        prev, last = entry.entry_hash, entry
    return _tail_check(count, last, newest, anchored)


def _entry_problem(entry: AuditEntry, prev: str, anchored_hash: str | None) -> str:
    if entry.prev_hash != prev:
        return "an entry before it was removed or changed"
    if audit_entry_hash(entry) != entry.entry_hash:
        return "its content was changed after it was written"
    if anchored_hash is not None and anchored_hash != entry.entry_hash:
        return ANCHOR_MISMATCH
    return ""


def _anchored_between(anchored_ids: list[int], after: int, before: int) -> int | None:
    """The first anchored id strictly between two ids of the log: an entry removed."""
    i = bisect.bisect_right(anchored_ids, after)
    return anchored_ids[i] if i < len(anchored_ids) and anchored_ids[i] < before else None


def _tail_check(
    count: int,
    last: AuditEntry | None,
    newest: tuple[int, str] | None,
    anchored: dict[int, str],
) -> ChainCheck:
    """After the walk: anchored entries beyond it still there (an anchored id was
    committed, so it cannot be an append in flight), and the head at the last entry."""
    beyond = sorted(i for i in anchored if i > (last.id if last else 0))
    stored = dict(AuditEntry.objects.filter(id__in=beyond).values_list("id", "entry_hash"))
    for entry_id in beyond:
        if entry_id not in stored:
            return ChainCheck(False, count, entry_id, ANCHORED_BUT_REMOVED)
        if stored[entry_id] != anchored[entry_id]:
            return ChainCheck(False, count, entry_id, ANCHOR_MISMATCH)
    if newest != ((last.id, last.entry_hash) if last else None):
        bad = newest[0] if newest else last.id
        return ChainCheck(False, count, bad, "it is not where the chain head says the log ends")
    return ChainCheck(True, count)


def _broken_note(check: ChainCheck) -> str:
    return f"Entry #{check.first_bad_id}: {check.problem}."


def audit_chain_state() -> AuditChainHead | None:
    """The chain head with the outcome of the last verification (None before any entry)."""
    return AuditChainHead.objects.filter(pk=CHAIN_HEAD).first()


def _anchor_write(entry: AuditEntry) -> None:
    """Append the entry's id and hash to the anchor file, outside the database.

    Each line is one small O_APPEND write, so processes writing at once do not mix.
    In production the file is shipped to write-once storage (docs/audit-log.md).
    """
    path = settings.TRE_AUDIT_ANCHOR_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="ascii") as anchor:
        anchor.write(f"{entry.id} {entry.entry_hash}\n")


def _anchored_hashes() -> dict[int, str]:
    """Every (id, hash) pair in the anchor file; a torn last line is skipped."""
    path = settings.TRE_AUDIT_ANCHOR_FILE
    if not path.exists():
        return {}
    pairs = (line.split() for line in path.read_text(encoding="ascii").splitlines())
    return {int(p[0]): p[1] for p in pairs if len(p) == 2 and p[0].isdigit() and len(p[1]) == 64}


#: How long an upload kept across a form error (submissions/kept.py) waits for its form
#: to go through before ``stored_files_prune`` deletes it.
KEPT_UPLOADS_FOR = timedelta(days=1)


@transaction.atomic
def file_store(*, data: bytes) -> StoredFile:
    """Store ``data`` under its SHA-256; the same bytes are stored once, never replaced.

    The row is locked while the bytes are checked, and storing again makes it new
    (``created_at``), so ``stored_files_prune`` never takes bytes that are being stored.
    """
    digest = hashlib.sha256(data).hexdigest()
    stored, created = StoredFile.objects.select_for_update().get_or_create(
        sha256=digest, defaults={"size": len(data)}
    )
    if not created:
        StoredFile.objects.filter(pk=digest).update(created_at=timezone.now())
    path = file_path(digest)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return stored


def stored_files_prune(*, now: datetime, older_than: timedelta = KEPT_UPLOADS_FOR) -> int:
    """Delete the stored files that nothing refers to once they are ``older_than`` old:
    uploads kept for a form that never went through. Returns how many went.

    Each is deleted under its row's lock after a last look at its references, so a file
    stored again or referred to meanwhile stays (the database refuses the delete).
    """
    cutoff, pruned = now - older_than, 0
    for digest in _unreferenced_files().filter(created_at__lt=cutoff).values_list("pk", flat=True):
        try:
            with transaction.atomic():
                locked = StoredFile.objects.select_for_update().filter(
                    pk=digest, created_at__lt=cutoff
                )
                if not _unreferenced_files().filter(pk__in=locked.values("pk")).exists():
                    continue
                locked.delete()
                file_path(digest).unlink(missing_ok=True)
            pruned += 1
        except (ProtectedError, IntegrityError):  # referred to since the first look
            continue
    return pruned


def _unreferenced_files():
    """Stored files no row of any model refers to (found from the models' foreign keys,
    so a new reference is counted without a change here)."""
    files = StoredFile.objects.all()
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if field.is_relation and field.related_model is StoredFile:
                refs = model.objects.filter(**{f"{field.attname}__isnull": False})
                files = files.exclude(pk__in=refs.values(field.attname))  # NOT IN: no NULLs
    return files


def file_read(*, stored: StoredFile) -> bytes:
    """The stored bytes, checked against their hash (a changed file is an error, not data)."""
    data = file_path(stored.sha256).read_bytes()
    if hashlib.sha256(data).hexdigest() != stored.sha256:
        raise OSError(f"Stored file {stored.sha256[:12]} no longer matches its hash.")
    return data


def file_path(digest: str):
    return settings.TRE_AUDIT_FILE_ROOT / digest[:2] / digest[2:4] / digest


@dataclass(frozen=True)
class Declaration:
    """What the researcher declares about the model they submit."""

    model_type: str = ""
    preprocessing: str = ""
    purpose: str = ""
    hosting: str = Hosting.PUBLIC_FILE
    files_are_exact: bool = False


def submission_create(
    *,
    author: AbstractBaseUser,
    title: str,
    label: str,
    model: Upload,
    train: Upload,
    test: Upload,
    architecture: Upload | None = None,
    declaration: Declaration = Declaration(),
    project: Project | None = None,
) -> Submission:
    """Check the files on arrival, store them, and queue the audit.

    ``architecture`` is an ONNX model's declared architecture and training recipe
    (JSON, ``docs/nn-declaration.md``; the library's ``declaration``), not to be
    confused with ``declaration``, what the researcher declares on the form. Nothing
    is stored when a file is refused: the checks run first.
    """
    if Role.RESEARCHER not in user_roles(author):
        raise NotAllowed("Only researchers submit models for release.")
    if not declaration.files_are_exact:
        raise SubmissionError("Declare that the files are exactly the model and data used.")
    if project is not None and not project.members.filter(pk=author.pk).exists():
        raise NotAllowed("You can only submit to a project you are a member of.")
    files = version_files(model=model, train=train, test=test, architecture=architecture)
    _check_uploads(files, label=label)
    with transaction.atomic():
        submission = Submission.objects.create(
            title=title,
            author=author,
            label=label,
            project=project,
            **dataclasses.asdict(declaration),
        )
        audit_entry_append(
            submission=submission,
            action="submitted",
            after=Status.SUBMITTED,
            by=author,
            reason=title,
        )
        _version_record(submission, note="")
        _version_store(submission, files)
    return submission


#: Where a request may be when its author sends a new version.
NEW_VERSION_FROM = {Status.AUDIT_FAILED, Status.AWAITING_REVIEW, Status.CHANGES_REQUESTED}

#: The declaration's fields a new version may change (the files are declared exact once).
NEW_VERSION_DECLARED = ("label", "model_type", "preprocessing", "purpose", "hosting")


def submission_new_version(
    *,
    submission: Submission,
    by: AbstractBaseUser,
    model: Upload,
    train: Upload,
    test: Upload,
    architecture: Upload | None = None,
    note: str = "",
    declared: Mapping[str, str] | None = None,
) -> Submission:
    """Store a new version's files and audit it again; earlier versions are kept.

    Files are the version's own, as at submission: an ONNX model's ``architecture``
    (its declaration) comes with each version that has one, and is not carried over.

    ``declared`` holds the declaration's fields this version gives (any of
    ``NEW_VERSION_DECLARED``); a field left out or blank stays as it was. The request
    then carries the new declaration, the version's record keeps it with the note, and
    the audit entry names the fields that changed.

    The reviews of the earlier audit no longer apply: checkers review the new one.
    """
    if submission.author_id != by.pk:
        raise NotAllowed("Only the author can submit a new version of a request.")
    _check_takes_new_version(submission)  # refused before the files are read
    declared = _declared_checked(declared or {})
    files = version_files(model=model, train=train, test=test, architecture=architecture)
    _check_uploads(files, label=declared.get("label", submission.label))
    with transaction.atomic():
        _check_takes_new_version(submission_lock(submission=submission))
        changed = _declaration_apply(submission, declared)
        submission.version += 1
        submission.save(update_fields=["version", "updated_at", *changed])
        submission_set_status(
            submission=submission,
            to=Status.SUBMITTED,
            by=by,
            reason=_new_version_reason(submission.version, note, changed),
        )
        _version_record(submission, note=note)
        _version_store(submission, files)
    return submission


def _declared_checked(declared: Mapping[str, str]) -> dict[str, str]:
    """The fields given, blank ones dropped; refused if one is not a declared field or
    the hosting is not one the service knows."""
    unknown = sorted(set(declared) - set(NEW_VERSION_DECLARED))
    if unknown:
        raise SubmissionError(f"A new version cannot change {unknown[0]}.")
    given = {name: str(value).strip() for name, value in declared.items() if str(value).strip()}
    if given.get("hosting", Hosting.PUBLIC_FILE) not in Hosting.values:
        raise SubmissionError("Choose where the model will be hosted from the options given.")
    return given


def _declaration_apply(submission: Submission, declared: dict[str, str]) -> list[str]:
    """Set the declared fields that differ on ``submission`` (unsaved); their names."""
    changed = [name for name, value in declared.items() if getattr(submission, name) != value]
    for name in changed:
        setattr(submission, name, declared[name])
    return changed


def _new_version_reason(version: int, note: str, changed: list[str]) -> str:
    reason = f"version {version}" + (f": {note}" if note else "")
    if changed:
        names = ", ".join(DECLARATION_LABELS[name].lower() for name in changed)
        reason += f" (declaration changed: {names})"
    return reason


def _version_record(submission: Submission, *, note: str) -> SubmissionVersion:
    """The current version as sent: its number, the note and the declaration with it."""
    declared = {name: getattr(submission, name) for name in DECLARATION_LABELS}
    return SubmissionVersion.objects.create(
        submission=submission, number=submission.version, note=note.strip(), **declared
    )


def _check_takes_new_version(submission: Submission) -> None:
    if submission.status not in NEW_VERSION_FROM:
        raise InvalidTransition(
            f"A request that is {submission.get_status_display().lower()} "
            "cannot take a new version."
        )


#: The roles of a version's files, in the order the audit lists its inputs; each is
#: the keyword the sandboxed library takes that file by (``uploads_audit(model=...)``).
VERSION_FILE_ROLES = (FileRole.MODEL, FileRole.DECLARATION, FileRole.TRAIN, FileRole.TEST)


def version_files(
    *, model: Upload, train: Upload, test: Upload, architecture: Upload | None = None
) -> dict[str, Upload]:
    """A version's uploads by role, without the declaration when none came."""
    files = {
        FileRole.MODEL: model,
        FileRole.DECLARATION: architecture,
        FileRole.TRAIN: train,
        FileRole.TEST: test,
    }
    return {role: upload for role, upload in files.items() if upload is not None}


def version_uploads(*, submission: Submission, version: int) -> dict[str, Upload]:
    """The stored files of one version as the sandboxed library takes them
    (``**version_uploads(...)``): the one place an audit, a shadow task, a round and a
    record query get their inputs, so none of them forgets the declaration."""
    stored = submission.files.filter(version=version, role__in=VERSION_FILE_ROLES)
    return {
        f.role: Upload(name=f.name, data=file_read(stored=f.stored))
        for f in stored.select_related("stored")
    }


def _version_store(submission: Submission, files: dict[str, Upload]) -> None:
    for role, upload in files.items():
        SubmissionFile.objects.create(
            submission=submission,
            version=submission.version,
            role=role,
            name=upload.name,
            stored=file_store(data=upload.data),
        )
    run = AuditRun.objects.create(submission=submission, version=submission.version)
    transaction.on_commit(lambda: _enqueue_audit(run.id))


def submission_withdraw(*, submission: Submission, by: AbstractBaseUser, reason: str) -> Submission:
    """The author takes the request back; nothing is deleted."""
    if submission.author_id != by.pk:
        raise NotAllowed("Only the author can withdraw a request.")
    if not reason.strip():
        raise SubmissionError("Say why you withdraw the request.")
    return submission_set_status(
        submission=submission, to=Status.WITHDRAWN, by=by, reason=reason.strip()
    )


def audit_run_retry(*, submission: Submission, by: AbstractBaseUser) -> AuditRun:
    """Audit a failed request's current version again (for its author or an admin)."""
    if not user_is_author_or_admin(by, submission):
        raise NotAllowed("Only the author or a TRE admin can retry an audit.")
    with transaction.atomic():
        if submission_lock(submission=submission).status != Status.AUDIT_FAILED:
            # AWAITING_REVIEW and CHANGES_REQUESTED may become SUBMITTED too, for a new
            # version: a retry there would drop the reviews and audit the same files again.
            raise InvalidTransition("Only a request whose audit failed can be retried.")
        submission_set_status(
            submission=submission, to=Status.SUBMITTED, by=by, reason="audit retried"
        )
        run = AuditRun.objects.create(submission=submission, version=submission.version)
        transaction.on_commit(lambda: _enqueue_audit(run.id))
    return run


def upload_size_refusal(*, name: str, size: int) -> str | None:
    """The sentence refusing an upload over the configured limit; None when it fits."""
    limit = settings.TRE_AUDIT_MAX_UPLOAD_BYTES
    if size <= limit:
        return None
    shown = f"{limit / 2**20:g} MiB" if limit >= 2**20 else f"{limit} bytes"
    return f"{name} is larger than the upload limit of {shown}."


def _check_uploads(files: dict[str, Upload], *, label: str) -> None:
    """The uploads checked in a sandbox as the audit will read them (a declaration with a
    skops model is refused there: ``attacks.nn.declared.NOT_ONNX``)."""
    for upload in files.values():
        refusal = upload_size_refusal(name=upload.name, size=len(upload.data))
        if refusal:
            raise UploadRefused(refusal)
    try:
        uploads_check(**files, label=label, max_bytes=settings.TRE_AUDIT_MAX_UPLOAD_BYTES)
    except AuditError as exc:
        raise UploadRefused(str(exc)) from None


#: The stage of a run whose task could not be sent; ``audit_runs_requeue`` resends it.
NOT_QUEUED = "not queued: the broker was unreachable"


def _enqueue_audit(run_id: int, *, resend_unsent: bool = True) -> bool:
    """Send the audit task. The request is already stored: a broker outage must not lose
    it or fail the researcher's upload, so the run is marked and resent later.

    Once a send succeeds the broker is back, so runs marked earlier are resent too
    (as well as whenever a worker starts)."""
    from kombu.exceptions import OperationalError

    from tre_audit.submissions.tasks import audit_run_execute_task

    try:
        audit_run_execute_task.delay(run_id)
    except OperationalError:
        logger.warning("Broker unreachable: audit run %s will be queued when it is back.", run_id)
        AuditRun.objects.filter(id=run_id, status=RunStatus.QUEUED).update(stage=NOT_QUEUED)
        return False
    if resend_unsent:
        audit_runs_requeue()
    return True


def audit_runs_requeue() -> int:
    """Resend the audits whose task never reached the broker; returns how many were sent.

    Each run is claimed by a conditional update first, so two processes resending
    at once never send the same run twice.
    """
    unsent = AuditRun.objects.filter(status=RunStatus.QUEUED, stage=NOT_QUEUED)
    sent = 0
    for run_id in list(unsent.values_list("id", flat=True)):
        if AuditRun.objects.filter(id=run_id, stage=NOT_QUEUED).update(stage="") == 1:
            sent += _enqueue_audit(run_id, resend_unsent=False)
    return sent


#: A run that stopped this many times without finishing is failed, not started again.
MAX_ATTEMPTS = 2
STOPPED_TWICE = (
    "The audit stopped twice without finishing; its model may crash the process that runs it."
)
#: The stage of a run whose worker stopped; ``audit_runs_reconcile`` sent it again.
REQUEUED = "re-queued: its worker stopped"


def audit_run_execute(
    *, run: AuditRun, config: AuditConfig | None = None, task_id: str = ""
) -> AuditRun:
    """Audit the submission's files and attach the report; a finished run is left alone.

    The run is claimed for ``task_id`` first, so a redelivered or re-queued task never
    runs an audit another worker is running. Without a ``config`` the service's own is
    used, and with ``TRE_AUDIT_FANOUT`` its shadow models are trained as tasks on the
    ``shadows`` queue: this only sends the first round (see ``audit_run_round``).
    """
    if not _audit_run_claim(run, task_id=task_id):
        return run
    submission = run.submission
    if submission.status != Status.AUDITING:
        submission_set_status(
            submission=submission, to=Status.AUDITING, by=None, reason=f"audit run {run.id}"
        )
    fan_out = config is None and settings.TRE_AUDIT_FANOUT
    try:
        config = config or _audit_config()
        if fan_out and _uses_pool(config):
            return _shadow_round_send(run, n_rounds_done=0)
        with _heartbeat(run):
            report = uploads_audit(
                **version_uploads(submission=submission, version=run.version),
                label=submission.label,
                policy=policy_of_run(run=run),
                config=config,
                progress=_progress_saver(run),
                max_bytes=settings.TRE_AUDIT_MAX_UPLOAD_BYTES,
            )
    except AuditError as exc:
        return audit_run_fail(run=run, error=str(exc))
    return _audit_run_finish(run, report)


def _audit_run_claim(run: AuditRun, *, task_id: str) -> bool:
    """Whether this task may run the audit now; it is marked RUNNING for it if so.

    A queued run is free. A running one is this task's only when the same task comes
    back (its worker process died under it); a run that stopped twice is failed.
    The claim is a conditional update, so two workers never both win it.
    """
    run.refresh_from_db()
    redelivered = run.status == RunStatus.RUNNING and task_id and run.task_id == task_id
    if (run.status != RunStatus.QUEUED and not redelivered) or _failed_if_stopped_twice(run):
        return False
    now = timezone.now()
    claimed = AuditRun.objects.filter(id=run.id, status=run.status, attempts=run.attempts).update(
        status=RunStatus.RUNNING,
        attempts=run.attempts + 1,
        task_id=task_id,
        started_at=now,
        heartbeat_at=now,
        shadow_rounds=[],  # a new attempt measures its rounds again; trained shadows stay
        shadows_wanted=0,
        phase_started_at=None,  # the time left is measured from this attempt's progress
    )
    run.refresh_from_db()
    return claimed == 1


@contextmanager
def _heartbeat(run: AuditRun):
    """Write the run's heartbeat every few seconds from a thread while the block runs:
    a run whose heartbeat stops has lost its worker (see ``audit_runs_reconcile``)."""
    stop = threading.Event()

    this_attempt = {"id": run.id, "status": RunStatus.RUNNING, "attempts": run.attempts}

    def beat() -> None:
        try:
            while not stop.wait(settings.TRE_AUDIT_HEARTBEAT_SECONDS):
                try:  # only this claim's: an old worker's thread must not keep a new one alive
                    AuditRun.objects.filter(**this_attempt).update(heartbeat_at=timezone.now())
                except DatabaseError as exc:  # a missed beat is late, not the end of beating
                    logger.warning("A heartbeat of audit run %s was missed: %s", run.id, exc)
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{run.id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def audit_runs_reconcile(*, now: datetime | None = None) -> int:
    """Re-queue running audits whose heartbeat is stale (their worker stopped) and resend
    unsent ones; returns how many were sent. A run that stopped twice is failed instead.

    A fanned-out run beats whenever one of its tasks starts, runs or ends. With a shadow
    in training and no beat, its worker stopped: the run is lost as a one-task run is.
    Between tasks it may wait: it is lost only when its heartbeat is older than the
    broker's visibility timeout as well, or, while one of its shadows has not started yet
    (queued behind other audits), older than ``TRE_AUDIT_QUEUE_WAIT_SECONDS``.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.TRE_AUDIT_STALE_SECONDS)
    stale = AuditRun.objects.filter(status=RunStatus.RUNNING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    )
    sent = sum(_audit_run_requeue_lost(run) for run in stale if _fanout_lost(run, now))
    return sent + audit_runs_requeue()


def _fanout_lost(run: AuditRun, now: datetime) -> bool:
    """Whether a stale run is lost; a run in one task is, a fanned-out one may be waiting.

    A shadow started but not finished beats the run's heartbeat while it trains: with
    the heartbeat stale, the worker training it stopped (a whole worker killed leaves
    its message unacknowledged for the visibility timeout, an hour), so the run is
    re-queued now and keeps every shadow already stored.
    """
    if not run.shadows_wanted:
        return True
    if run.shadows.filter(starts__gt=0, finished_at__isnull=True).exists():
        return True
    waiting = run.shadows.filter(starts=0, finished_at__isnull=True).exists()
    seconds = settings.TRE_AUDIT_STALE_SECONDS + (
        settings.TRE_AUDIT_QUEUE_WAIT_SECONDS
        if waiting
        else settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    )
    return (run.heartbeat_at or run.started_at) < now - timedelta(seconds=seconds)


def _failed_if_stopped_twice(run: AuditRun) -> bool:
    """Fail a run that was started ``MAX_ATTEMPTS`` times already; True if it was."""
    if run.attempts < MAX_ATTEMPTS:
        return False
    audit_run_fail(run=run, error=STOPPED_TWICE)
    return True


def _audit_run_requeue_lost(run: AuditRun) -> int:
    if _failed_if_stopped_twice(run):
        return 0
    same_attempt = {"status": RunStatus.RUNNING, "attempts": run.attempts}
    if not AuditRun.objects.filter(id=run.id, heartbeat_at=run.heartbeat_at, **same_attempt).update(
        status=RunStatus.QUEUED, stage=REQUEUED
    ):
        return 0  # it beat or finished meanwhile
    logger.warning("Audit run %s lost its worker: re-queued.", run.id)
    return int(_enqueue_audit(run.id, resend_unsent=False))


def audit_run_stop(*, run: AuditRun, by: AbstractBaseUser, reason: str) -> AuditRun:
    """A TRE admin stops a queued or running audit: it fails with the reason, its task
    is revoked, and the request can be withdrawn or retried."""
    if Role.TRE_ADMIN not in user_roles(by):
        raise NotAllowed("Only a TRE admin can stop an audit.")
    if not reason.strip():
        raise SubmissionError("Say why you stop the audit.")
    if run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
        raise InvalidTransition("Only a queued or running audit can be stopped.")
    with transaction.atomic():
        if run.submission.status == Status.SUBMITTED:  # it never started
            submission_set_status(
                submission=run.submission, to=Status.AUDITING, by=by, reason=f"audit run {run.id}"
            )
        run = audit_run_fail(run=run, error=f"Stopped by an admin: {reason.strip()}", by=by)
    _task_revoke(run.task_id)
    return run


def _task_revoke(task_id: str) -> None:
    """Kill the worker process running ``task_id``, if any (best effort: the run is
    already failed, so a worker that finishes anyway changes nothing)."""
    from kombu.exceptions import OperationalError

    from tre_audit.submissions.tasks import audit_run_execute_task

    if not task_id:
        return
    try:
        audit_run_execute_task.app.control.revoke(task_id, terminate=True, signal="SIGKILL")
    except OperationalError:
        logger.warning("Broker unreachable: task %s was not revoked.", task_id)


# Fanned-out audits: a chord per round ---------------------------------------------------

#: Why a shadow model is not trained a third time.
SHADOW_STOPPED_TWICE = (
    "A shadow model stopped twice without finishing; its model may crash the process "
    "that trains it."
)


def _uses_pool(config: AuditConfig) -> bool:
    return any(ATTACKS[name][2] for name in config.attacks)


def _shadow_round_send(run: AuditRun, *, n_rounds_done: int) -> AuditRun:
    """Start the run's next round of shadows (the first after ``n_rounds_done``)."""
    rule = shadow_rule(_audit_config(), policy_of_run(run=run))
    counts = round_counts(rule)
    start, wanted = (counts[n_rounds_done - 1] if n_rounds_done else 0), counts[n_rounds_done]
    AuditShadow.objects.bulk_create(
        [AuditShadow(run=run, index=k) for k in range(start, wanted)], ignore_conflicts=True
    )
    first = {} if n_rounds_done else _phase_fields(_phase_start("shadows", run.progress))
    _run_update(
        run,
        shadows_wanted=wanted,
        shadows_max=rule.max_models,
        stage=f"shadow models: {run.shadows_done} of {wanted} trained",
        heartbeat_at=timezone.now(),
        **first,
    )
    _round_chord_send(run.id, run.attempts, range(start, wanted))
    return run


def _round_chord_send(run_id: int, attempt: int, indices: range) -> None:
    """One task per new shadow on the ``shadows`` queue, and ``audit_run_round`` once they
    have all returned (a chord: the result backend counts them)."""
    from celery import chord

    from tre_audit.submissions.tasks import audit_run_round_task, audit_shadow_train_task

    shadows = [audit_shadow_train_task.si(run_id, attempt, k) for k in indices]
    chord(shadows)(audit_run_round_task.si(run_id, attempt, indices.stop))


def _attempt_current(run: AuditRun, attempt: int) -> bool:
    run.refresh_from_db()
    return run.status == RunStatus.RUNNING and run.attempts == attempt


def audit_shadow_train(*, run: AuditRun, attempt: int, index: int) -> None:
    """Train shadow ``index`` of a fanned-out run in a sandbox and store its confidences.

    Idempotent: a shadow already stored, or of an attempt that is no longer the run's,
    is left alone; one that was started twice already (its worker died under it) is
    stored as failed, and the pool attacks report why.
    """
    shadow = AuditShadow.objects.filter(run=run, index=index).first()
    if shadow is None or shadow.finished_at is not None or not _attempt_current(run, attempt):
        return
    if shadow.starts >= MAX_ATTEMPTS:
        audit_shadow_store(run=run, index=index, error=SHADOW_STOPPED_TWICE)
        return
    AuditShadow.objects.filter(id=shadow.id).update(starts=F("starts") + 1)
    AuditRun.objects.filter(id=run.id).update(heartbeat_at=timezone.now())
    try:
        with _heartbeat(run):
            confidences = uploads_shadow_train(
                **version_uploads(submission=run.submission, version=run.version),
                label=run.submission.label,
                index=index,
                base_seed=shadow_base_seed(_audit_config()),
                max_bytes=settings.TRE_AUDIT_MAX_UPLOAD_BYTES,
            )
    except AuditError as exc:
        audit_shadow_store(run=run, index=index, error=str(exc))
        return
    audit_shadow_store(run=run, index=index, confidences=confidences.astype("<f8").tobytes())


@transaction.atomic
def audit_shadow_store(
    *, run: AuditRun, index: int, confidences: bytes | None = None, error: str = ""
) -> bool:
    """Store one shadow's confidences (or why it failed) once, and count it on the run
    (one UPDATE, so shadows finishing at once are all counted); True if it was new."""
    if not AuditShadow.objects.filter(run=run, index=index, finished_at__isnull=True).update(
        confidences=confidences, error=error, finished_at=timezone.now()
    ):
        return False
    done = F("shadows_done") + 1
    AuditRun.objects.filter(id=run.id).update(
        shadows_done=done,
        progress=0.05 + 0.45 * Cast(done, FloatField()) / Cast(F("shadows_max"), FloatField()),
        stage=Concat(
            Value("shadow models: "),
            Cast(done, CharField()),
            Value(" of "),
            Cast(F("shadows_wanted"), CharField()),
            Value(" trained"),
            output_field=CharField(),
        ),
        heartbeat_at=timezone.now(),
        phase_updates=F("phase_updates") + 1,
    )
    return True


def audit_run_round(*, run: AuditRun, attempt: int, n_models: int) -> AuditRun:
    """After a round's shadows (its chord's callback): measure the pool in a sandbox,
    then send the next round or attach the report. A repeated or stale callback is a no-op.
    """
    if not _attempt_current(run, attempt) or run.shadows_wanted != n_models:
        return run
    shadows = run.shadows.filter(index__lt=n_models).order_by("index")
    try:
        with _heartbeat(run):
            out = uploads_audit_round(
                **version_uploads(submission=run.submission, version=run.version),
                label=run.submission.label,
                policy=policy_of_run(run=run),
                config=_audit_config(),
                shadows=[_shadow_wire(shadow) for shadow in shadows],
                history=run.shadow_rounds,
                progress=_progress_saver(run, floor=0.5),  # the shadows are trained
                max_bytes=settings.TRE_AUDIT_MAX_UPLOAD_BYTES,
            )
    except AuditError as exc:
        return audit_run_fail(run=run, error=str(exc))
    if "report" in out:
        return _audit_run_finish(run, out["report"])
    history = [*run.shadow_rounds, out["round"]]
    if not AuditRun.objects.filter(
        id=run.id, status=RunStatus.RUNNING, attempts=attempt, shadows_wanted=n_models
    ).update(shadow_rounds=history, shadows_wanted=0):
        return run  # another delivery of this callback got here first
    run.shadow_rounds = history
    return _shadow_round_send(run, n_rounds_done=len(history))


def _shadow_wire(shadow: AuditShadow):
    """A stored shadow as the sandbox takes it: its confidences, or why there are none."""
    if shadow.finished_at is None:
        return f"Shadow model {shadow.index} was not trained."
    if shadow.error:
        return shadow.error
    return np.frombuffer(bytes(shadow.confidences), dtype="<f8")


def _audit_config() -> AuditConfig:
    return AuditConfig(
        n_shadow_models=settings.TRE_AUDIT_SHADOW_MODELS,
        sweep=settings.TRE_AUDIT_SWEEP,
        n_jobs=settings.TRE_AUDIT_JOBS,
    )


def report_identity(*, run: AuditRun, audited_at: datetime) -> ReportIdentity:
    """Which request, version and researcher a run's PDF belongs to, and when it was audited."""
    submission = run.submission
    author = submission.author
    return ReportIdentity(
        request=submission.pk,
        title=submission.title,
        version=run.version,
        researcher=author.get_full_name() or author.get_username(),
        project=submission.project.name if submission.project_id else "",
        purpose=submission.purpose,
        audited_at=audited_at.astimezone(UTC).strftime("%d %b %Y, %H:%M UTC"),
    )


@transaction.atomic
def _audit_run_finish(run: AuditRun, report: dict) -> AuditRun:
    if AuditRun.objects.select_for_update().get(id=run.id).status != RunStatus.RUNNING:
        return run  # stopped by an admin, or finished by another delivery meanwhile
    finished_at = timezone.now()
    pdf = file_store(data=render_pdf(report, report_identity(run=run, audited_at=finished_at)))
    _run_update(
        run,
        status=RunStatus.DONE,
        report=report,
        risk=report["verdict"]["risk"],
        report_pdf=pdf,
        progress=1.0,
        stage="done",
        finished_at=finished_at,
    )
    submission_set_status(
        submission=run.submission,
        to=Status.AWAITING_REVIEW,
        by=None,
        reason=f"audit run {run.id}: {report['verdict']['risk']} risk",
    )
    notify_audit_finished(run.submission, risk=report["verdict"]["risk"])
    return run


@transaction.atomic
def audit_run_fail(*, run: AuditRun, error: str, by: AbstractBaseUser | None = None) -> AuditRun:
    """Mark the run failed and the request AUDIT_FAILED, with the reason for the researcher."""
    run.refresh_from_db()
    if run.status in (RunStatus.DONE, RunStatus.FAILED):
        return run
    _run_update(run, status=RunStatus.FAILED, error=error, finished_at=timezone.now())
    logger.warning("Audit run %s failed: %s", run.id, error)  # a user-safe sentence
    if run.submission.status != Status.AUDITING:
        return run
    try:
        submission_set_status(
            submission=run.submission, to=Status.AUDIT_FAILED, by=by, reason=error
        )
    except InvalidTransition:  # withdrawn meanwhile: the run is failed, the request left as is
        return run
    notify_audit_finished(run.submission, risk=None, error=error)
    return run


#: The longest stage a run stores (a sweep's stage names its setting, which may be long).
STAGE_MAX_LENGTH = AuditRun._meta.get_field("stage").max_length


def _progress_saver(run: AuditRun, *, floor: float = 0.0, now=timezone.now):
    """A progress callback that writes each new stage at once and a moving fraction at
    most every half second, never below ``floor``, with the phase mark the time left is
    estimated from (see ``selectors.run_eta_seconds``)."""
    last = {"at": None, "stage": None, "mark": run_phase_mark(run=run)}

    def save(stage: str, done: float) -> None:
        done, at = max(done, floor), now()
        mark = phase_mark_next(last["mark"], stage=stage, done=done, now=at.timestamp())
        last["mark"] = mark
        quiet = last["at"] is not None and (at - last["at"]).total_seconds() < 0.5
        if stage == last["stage"] and quiet and done < 1.0:
            return
        last["at"], last["stage"] = at, stage
        _run_update(run, stage=stage[:STAGE_MAX_LENGTH], progress=done, **_phase_fields(mark))

    return save


def _phase_start(phase: str, progress: float) -> PhaseMark:
    return PhaseMark(phase=phase, started_at=timezone.now().timestamp(), start_progress=progress)


def _phase_fields(mark: PhaseMark) -> dict:
    return {
        "phase": mark.phase[:16],
        "phase_started_at": datetime.fromtimestamp(mark.started_at, tz=UTC),
        "phase_start_progress": mark.start_progress,
        "phase_updates": mark.n_updates,
    }


def _run_update(run: AuditRun, **fields) -> None:
    for name, value in fields.items():
        setattr(run, name, value)
    AuditRun.objects.filter(id=run.id).update(**fields)


def policy_current() -> Policy:
    """The newest saved policy, versioned by its number here; the default file before any."""
    return _policy_of(PolicyVersion.objects.order_by("-version").first())


def policy_of_run(*, run: AuditRun) -> Policy:
    """The policy ``run`` is judged by: the newest when it first asks, then that one.

    Pinned by a conditional update, so every round and task of the run reads the same
    policy even when an admin saves a new version meanwhile.
    """
    if run.policy_version is None:
        newest = PolicyVersion.objects.order_by("-version").values_list("version", flat=True)
        AuditRun.objects.filter(id=run.id, policy_version__isnull=True).update(
            policy_version=newest.first() or 0
        )
        run.policy_version = AuditRun.objects.values_list("policy_version", flat=True).get(
            id=run.id
        )
    saved = PolicyVersion.objects.filter(version=run.policy_version).first()
    return _policy_of(saved)


def _policy_of(saved: PolicyVersion | None) -> Policy:
    if saved is None:
        return load_policy()
    return dataclasses.replace(load_policy(saved.text), version=str(saved.version))


@transaction.atomic
def policy_version_create(*, text: str, note: str, by: AbstractBaseUser) -> PolicyVersion:
    """Validate and save a new policy version; earlier versions stay as they were."""
    if not note.strip():
        raise SubmissionError("Say what changed and why: the note is kept with the version.")
    try:
        load_policy(text)
    except PolicyError as exc:
        raise SubmissionError(str(exc)) from None
    last = PolicyVersion.objects.select_for_update().order_by("-version").first()
    number = (last.version if last else 1) + 1  # version 1 is the shipped default
    saved = PolicyVersion.objects.create(
        version=number,
        text=text,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        note=note.strip(),
        created_by=by,
    )
    audit_entry_append(
        submission=None, action="policy", after=str(number), by=by, reason=note.strip()
    )
    return saved


def release_bundle_build(
    *, submission: Submission, run: AuditRun, with_model: bool, now: datetime | None = None
) -> StoredFile:
    """A zip of the model (unless withheld), its declared architecture and recipe if it
    has one, report.pdf, report.json and a manifest: the members' hashes, the request it
    releases, who approved it and the release date (``now``). Names, decisions and
    reasons only: no value of the data goes in.

    The declaration goes in even when the model is withheld: it holds no weights or
    data, report.json quotes it already, and it says what the report audited."""
    files = {f.role: f for f in submission.files.filter(version=run.version)}
    declared = files.get(FileRole.DECLARATION)
    members = {
        "report.json": report_dumps(run.report).encode(),
        "report.pdf": file_read(stored=run.report_pdf),
    }
    if with_model:
        members[f"model/{files[FileRole.MODEL].name}"] = file_read(
            stored=files[FileRole.MODEL].stored
        )
    if declared is not None:
        members[f"declaration/{declared.name}"] = file_read(stored=declared.stored)
    manifest = {
        "request": submission.pk,
        "title": submission.title,
        "version": run.version,
        "researcher": submission.author.get_username(),
        "project": submission.project.name if submission.project else None,
        "released_at": _iso(now or timezone.now()),
        "audit_run": run.id,
        "risk": run.report["verdict"]["risk"],
        "approvals": _manifest_approvals(run),
        "model_withheld": not with_model,
        "model_sha256": files[FileRole.MODEL].stored.sha256,
        "declaration_sha256": declared.stored.sha256 if declared else None,
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in members.items()},
    }
    members["manifest.json"] = json.dumps(manifest, indent=2, sort_keys=True).encode()
    return file_store(data=_zip(members))


def _manifest_approvals(run: AuditRun) -> list[dict]:
    """Each checker's decision on the released audit, with the admin's sign-off if any."""
    from tre_audit.reviews.models import Review  # the reviews app builds on this one

    reviews = Review.objects.filter(run=run).select_related("reviewer", "signed_off_by")
    return [
        {
            "checker": review.reviewer.get_username(),
            "decision": review.decision,
            "decision_label": review.get_decision_display(),
            "reason": review.reason,
            "condition": review.condition,
            "condition_label": review.get_condition_display(),
            "decided_at": _iso(review.created_at),
            "sign_off": _manifest_sign_off(review),
        }
        for review in reviews.order_by("created_at", "id")
    ]


def _manifest_sign_off(review) -> dict | None:
    """Who signed a high-risk approval off, when, and why (the reason is the one the
    audit log holds: its sign-off entry by that admin, written with the sign-off)."""
    if review.signed_off_at is None:
        return None
    entry = (
        AuditEntry.objects.filter(
            submission_id=review.submission_id,
            action="sign-off",
            actor_id=review.signed_off_by_id,
            created_at__gte=review.signed_off_at,
        )
        .order_by("id")
        .first()
    )
    return {
        "by": review.signed_off_by.get_username(),
        "at": _iso(review.signed_off_at),
        "reason": entry.reason if entry else "",
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _zip(members: dict[str, bytes]) -> bytes:
    """Deterministic zip bytes: fixed timestamps, sorted names."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, members[name])
    return buffer.getvalue()
