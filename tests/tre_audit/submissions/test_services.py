import hashlib
import itertools
from datetime import timedelta

import pytest
from django.utils import timezone

from tests import factories
from tre_audit.reviews.services import submission_release
from tre_audit.submissions.enums import Status
from tre_audit.submissions.exceptions import InvalidTransition
from tre_audit.submissions.models import AuditEntry, StoredFile, Submission
from tre_audit.submissions.services import (
    KEPT_UPLOADS_FOR,
    TRANSITIONS,
    file_path,
    file_read,
    file_store,
    stored_files_prune,
    submission_set_status,
    submission_withdraw,
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


def test_kept_uploads_nothing_refers_to_are_pruned_after_a_day_and_nothing_else():
    kept = file_store(data=b"kept for a form that never went through")
    submission = factories.create_audited_submission()
    used = [f.stored for f in submission.files.all()]
    day_and_a_bit = timezone.now() + KEPT_UPLOADS_FOR + timedelta(minutes=1)

    assert stored_files_prune(now=timezone.now()) == 0  # too young, all of them
    assert stored_files_prune(now=day_and_a_bit) == 1
    assert not StoredFile.objects.filter(pk=kept.pk).exists()
    assert not file_path(kept.sha256).exists()
    assert all(file_read(stored=stored) for stored in used)  # a request's files stay


def test_storing_the_same_bytes_again_makes_the_file_new_to_the_pruner():
    old = file_store(data=b"kept twice")
    StoredFile.objects.filter(pk=old.pk).update(created_at=timezone.now() - 2 * KEPT_UPLOADS_FOR)
    file_store(data=b"kept twice")  # the form was sent again with the same file
    assert stored_files_prune(now=timezone.now() + KEPT_UPLOADS_FOR / 2) == 0
    assert file_read(stored=old) == b"kept twice"


def test_a_change_is_judged_on_the_stored_status_not_on_a_stale_copy():
    """A page opened before the release posts a withdraw: terminal stays terminal."""
    submission = factories.create_audited_submission(Status.APPROVED)
    stale = Submission.objects.get(pk=submission.pk)
    submission_release(submission=submission, by=submission.author)
    with pytest.raises(InvalidTransition, match="released cannot become withdrawn"):
        submission_withdraw(submission=stale, by=submission.author, reason="wrong data")
    assert stale.status == Status.RELEASED  # the caller's copy now says what is stored
    submission.refresh_from_db()
    assert submission.status == Status.RELEASED and submission.release_bundle_id is not None
