"""The hash-chained audit log: verification, the anchor, the chain head, a broken log."""

import pytest

from tests import factories
from tre_audit.submissions.enums import Status
from tre_audit.submissions.exceptions import AuditLogBroken
from tre_audit.submissions.models import AuditChainHead, AuditEntry
from tre_audit.submissions.services import (
    AUDIT_LOG_BROKEN,
    audit_chain_state,
    audit_chain_verify,
    audit_entry_append,
    audit_entry_hash,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def anchored(django_capture_on_commit_callbacks):
    """Make a request walked to ``status`` with every entry written to the anchor file."""

    def make(status=Status.RELEASED):
        with django_capture_on_commit_callbacks(execute=True):
            factories.create_submission_at_status(status)

    return make


def rechain(from_id: int, *, reason: str, move_head: bool) -> None:
    """What a forger with database access does: rewrite one entry, re-hash the chain
    after it so it is consistent in itself, and (if ``move_head``) the chain head too."""
    entries = list(AuditEntry.objects.filter(id__gte=from_id).order_by("id"))
    prev = AuditEntry.objects.filter(id__lt=from_id).order_by("-id").first()
    prev_hash = prev.entry_hash if prev else "0" * 64
    entries[0].reason = reason
    for entry in entries:
        entry.prev_hash = prev_hash
        entry.entry_hash = prev_hash = audit_entry_hash(entry)
        AuditEntry.objects.filter(id=entry.id).update(
            reason=entry.reason, prev_hash=entry.prev_hash, entry_hash=entry.entry_hash
        )
    if move_head:
        AuditChainHead.objects.update(entry_id=entries[-1].id, entry_hash=prev_hash)


def append(**extra):
    return audit_entry_append(submission=None, action="policy", by=None, reason="ordinary", **extra)


def test_chain_verifies_after_many_changes():
    for status in (Status.RELEASED, Status.REJECTED, Status.WITHDRAWN):
        factories.create_submission_at_status(status)
    check = audit_chain_verify()
    assert check.ok and check.n_entries == 4 + 3 + 1
    assert audit_chain_state().broken == "" and audit_chain_state().checked_at is not None


def test_each_entry_chains_to_the_one_before_and_the_head_follows():
    factories.create_submission_at_status(Status.APPROVED)
    entries = list(AuditEntry.objects.order_by("id"))
    assert [e.prev_hash for e in entries[1:]] == [e.entry_hash for e in entries[:-1]]
    head = audit_chain_state()
    assert (head.entry_id, head.entry_hash) == (entries[-1].id, entries[-1].entry_hash)


def test_an_edited_entry_is_detected():
    factories.create_submission_at_status(Status.APPROVED)
    victim = AuditEntry.objects.order_by("id")[1]
    AuditEntry.objects.filter(id=victim.id).update(reason="nothing to see")  # bypasses save()
    check = audit_chain_verify()
    assert not check.ok and check.first_bad_id == victim.id
    assert "changed" in check.problem


def test_a_removed_entry_is_detected():
    factories.create_submission_at_status(Status.APPROVED)
    first, second = AuditEntry.objects.order_by("id")[:2]
    AuditEntry.objects.filter(id=first.id)._raw_delete(AuditEntry.objects.db)
    check = audit_chain_verify()
    assert not check.ok and check.first_bad_id == second.id


def test_entries_cannot_be_changed_or_deleted_through_the_model():
    factories.create_submission_at_status(Status.AUDITING)
    entry = AuditEntry.objects.get()
    entry.reason = "rewritten"
    with pytest.raises(ValueError):
        entry.save()
    with pytest.raises(ValueError):
        entry.delete()


def test_a_cut_off_tail_is_detected_by_the_anchor(anchored):
    anchored(Status.APPROVED)
    assert audit_chain_verify().ok
    newest = list(AuditEntry.objects.order_by("-id")[:2])
    AuditEntry.objects.filter(id__in=[e.id for e in newest])._raw_delete(AuditEntry.objects.db)
    AuditChainHead.objects.update(entry_id=newest[1].id - 1)  # even with the head moved back
    check = audit_chain_verify()  # the remaining chain is consistent in itself
    assert not check.ok and check.first_bad_id == newest[1].id
    assert "removed" in check.problem


@pytest.mark.parametrize("move_head", [False, True], ids=["head-left", "head-forged"])
def test_a_rewritten_anchored_entry_is_detected_after_later_entries(anchored, move_head):
    """The forgery of issue 9: entry rewritten, chain re-hashed, then ordinary actions."""
    anchored(Status.RELEASED)
    victim = AuditEntry.objects.order_by("id")[1]
    rechain(victim.id, reason="approved by nobody", move_head=move_head)
    if move_head:  # a forger who moved the head gets past the append check...
        append()
        append()
    else:
        with pytest.raises(AuditLogBroken):
            append()
    check = audit_chain_verify()  # ...but not past the anchor
    assert not check.ok and check.first_bad_id == victim.id
    assert "anchored hash" in check.problem


def test_a_removed_and_rechained_entry_is_detected(anchored):
    anchored(Status.RELEASED)
    first, second, third = AuditEntry.objects.order_by("id")[:3]
    AuditEntry.objects.filter(id=second.id)._raw_delete(AuditEntry.objects.db)
    rechain(third.id, reason=third.reason, move_head=True)
    check = audit_chain_verify()
    assert not check.ok and check.first_bad_id == second.id


def test_an_edited_newest_entry_stops_the_next_append_without_a_full_check():
    factories.create_submission_at_status(Status.AUDITING)
    newest = AuditEntry.objects.order_by("-id").first()
    newest.reason = "forged"
    AuditEntry.objects.filter(id=newest.id).update(
        reason="forged", entry_hash=audit_entry_hash(newest)
    )
    n_entries = AuditEntry.objects.count()
    with pytest.raises(AuditLogBroken, match="no change can be recorded"):
        append()
    assert AuditEntry.objects.count() == n_entries


def test_a_broken_log_refuses_changes_until_it_verifies_again(anchored):
    anchored(Status.AWAITING_REVIEW)
    victim = AuditEntry.objects.order_by("id").first()
    AuditEntry.objects.filter(id=victim.id).update(reason="forged")
    assert not audit_chain_verify().ok
    assert audit_chain_state().broken.startswith(f"Entry #{victim.id}:")
    submission = factories.create_submission_at_status(Status.SUBMITTED)  # no entry needed
    with pytest.raises(AuditLogBroken) as refused:
        factories.create_submission_at_status(Status.AUDITING)
    assert str(refused.value) == AUDIT_LOG_BROKEN
    submission.refresh_from_db()
    assert submission.status == Status.SUBMITTED
    AuditEntry.objects.filter(id=victim.id).update(reason=victim.reason)  # restored
    assert audit_chain_verify().ok and audit_chain_state().broken == ""
    append()
    assert audit_chain_verify().ok


def test_a_missing_chain_head_with_entries_is_broken():
    factories.create_submission_at_status(Status.AUDITING)
    AuditChainHead.objects.all().delete()
    with pytest.raises(AuditLogBroken):
        append()
    check = audit_chain_verify()
    assert not check.ok and "chain head" in check.problem


def test_a_torn_anchor_line_is_ignored(anchored, settings):
    anchored(Status.AUDITING)
    with open(settings.TRE_AUDIT_ANCHOR_FILE, "a", encoding="ascii") as anchor:
        anchor.write("99 abc")  # a crash in the middle of a write
    assert audit_chain_verify().ok
