import hashlib
import itertools

import pytest

from tests import factories
from tre_audit.submissions.enums import Status
from tre_audit.submissions.exceptions import InvalidTransition
from tre_audit.submissions.models import AuditEntry
from tre_audit.submissions.services import (
    TRANSITIONS,
    audit_chain_verify,
    audit_entry_hash,
    file_path,
    file_read,
    file_store,
    submission_set_status,
)

pytestmark = pytest.mark.django_db

ALLOWED = [(a, b) for a, targets in TRANSITIONS.items() for b in sorted(targets)]
FORBIDDEN = [(a, b) for a, b in itertools.product(Status, Status) if (a, b) not in ALLOWED]


def test_every_status_is_reachable_and_has_a_rule():
    assert set(TRANSITIONS) == set(Status)
    assert set(factories.PATHS) == set(Status)


@pytest.mark.parametrize("before, after", ALLOWED)
def test_allowed_transitions_are_made_and_logged(before, after):
    submission = factories.create_submission_at_status(before)
    user = factories.create_user()
    submission_set_status(submission=submission, to=after, by=user, reason="why")
    submission.refresh_from_db()
    assert submission.status == after
    entry = AuditEntry.objects.last()
    assert (entry.before, entry.after, entry.actor, entry.reason) == (before, after, user, "why")


@pytest.mark.parametrize("before, after", FORBIDDEN)
def test_forbidden_transitions_are_refused_and_leave_no_trace(before, after):
    submission = factories.create_submission_at_status(before)
    n_entries = AuditEntry.objects.count()
    with pytest.raises(InvalidTransition):
        submission_set_status(submission=submission, to=after, by=None)
    submission.refresh_from_db()
    assert submission.status == before
    assert AuditEntry.objects.count() == n_entries


def test_chain_verifies_after_many_changes():
    for status in (Status.RELEASED, Status.REJECTED, Status.WITHDRAWN):
        factories.create_submission_at_status(status)
    check = audit_chain_verify()
    assert check.ok and check.n_entries == 4 + 3 + 1


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


def test_files_are_stored_once_by_content():
    a = file_store(data=b"train,1\n")
    again = file_store(data=b"train,1\n")
    other = file_store(data=b"train,2\n")
    assert a.sha256 == again.sha256 == hashlib.sha256(b"train,1\n").hexdigest()
    assert other.sha256 != a.sha256
    assert file_read(stored=a) == b"train,1\n"


def test_a_stored_file_changed_on_disk_is_refused():
    stored = file_store(data=b"original")
    file_path(stored.sha256).write_bytes(b"tampered")
    with pytest.raises(OSError, match="no longer matches"):
        file_read(stored=stored)


def test_a_cut_off_tail_is_detected_by_the_anchor(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        factories.create_submission_at_status(Status.APPROVED)
    assert audit_chain_verify().ok
    newest = AuditEntry.objects.order_by("-id")[:2]
    AuditEntry.objects.filter(id__in=[e.id for e in newest])._raw_delete(AuditEntry.objects.db)
    check = audit_chain_verify()  # the remaining chain is consistent in itself
    assert not check.ok and check.first_bad_id == newest[0].id
    assert "removed" in check.problem


def test_the_anchor_catches_a_consistently_rewritten_tail(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        factories.create_submission_at_status(Status.AUDITING)
    last = AuditEntry.objects.order_by("-id").first()
    last.reason = "forged"
    forged_hash = audit_entry_hash(last)  # a forger who knows the scheme rehashes
    AuditEntry.objects.filter(id=last.id).update(reason="forged", entry_hash=forged_hash)
    check = audit_chain_verify()
    assert not check.ok and check.first_bad_id == last.id
    assert "anchored" in check.problem
