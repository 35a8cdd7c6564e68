"""Writers at once, each thread on its own database connection (run on SQLite and, with
--postgres, on PostgreSQL): one audit chain, and racing decisions end consistently."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from tests import factories
from tre_audit.reviews.enums import Decision, Role
from tre_audit.reviews.exceptions import ReviewInvalid, ReviewNotAllowed
from tre_audit.reviews.models import Review
from tre_audit.reviews.services import review_submit, submission_release
from tre_audit.submissions import services
from tre_audit.submissions.enums import Status
from tre_audit.submissions.exceptions import InvalidTransition
from tre_audit.submissions.models import AuditEntry, Submission
from tre_audit.submissions.selectors import current_run
from tre_audit.submissions.services import (
    audit_chain_verify,
    audit_entry_append,
    audit_run_execute,
    audit_shadow_store,
    submission_create,
    submission_new_version,
    submission_withdraw,
)

pytestmark = pytest.mark.django_db(transaction=True)

#: How long a thread may wait for the others at the barrier or to finish (a loaded
#: machine is slow; a deadlock shows as this timeout, not as a hang).
WAIT = 120
#: Each race is run this many times: an ordering bug shows in some of them.
ROUNDS = 3
#: What a loser of a race is refused with; anything else fails the test.
REFUSALS = (InvalidTransition, ReviewNotAllowed, ReviewInvalid)


def together(*jobs) -> list:
    """Run each job in its own thread, released at once by a barrier; return what each
    returned or the refusal it raised (other exceptions are re-raised here)."""
    barrier = threading.Barrier(len(jobs), timeout=WAIT)
    results = [None] * len(jobs)

    def run(i, job):
        try:
            barrier.wait()
            results[i] = job()
        except REFUSALS as exc:
            results[i] = exc
        except BaseException as exc:  # noqa: BLE001 - carried to the test's thread
            results[i] = ("error", exc)
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive(), f"a writer still runs after {WAIT} s (deadlock?)"
    for result in results:
        if isinstance(result, tuple) and result[:1] == ("error",):
            raise result[1]
    return results


def refused(results) -> list:
    return [r for r in results if isinstance(r, REFUSALS)]


def test_concurrent_appenders_leave_one_unbroken_chain():
    n_threads, n_appends = 8, 20

    def appender(i):
        def job():
            for j in range(n_appends):
                audit_entry_append(submission=None, action="policy", by=None, reason=f"{i}.{j}")

        return job

    together(*(appender(i) for i in range(n_threads)))
    entries = list(AuditEntry.objects.order_by("id"))
    assert len(entries) == n_threads * n_appends
    assert len({e.prev_hash for e in entries}) == len(entries)  # no two share a parent
    assert [e.prev_hash for e in entries[1:]] == [e.entry_hash for e in entries[:-1]]
    check = audit_chain_verify()
    assert check.ok and check.n_entries == n_threads * n_appends


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_release_racing_withdraw_ends_released_or_withdrawn_never_both(round_):
    submission = factories.create_audited_submission(Status.APPROVED)
    author = submission.author
    release_copy, withdraw_copy = (Submission.objects.get(pk=submission.pk) for _ in range(2))
    results = together(
        lambda: submission_release(submission=release_copy, by=author),
        lambda: submission_withdraw(submission=withdraw_copy, by=author, reason="wrong data"),
    )
    assert len(refused(results)) == 1
    submission.refresh_from_db()
    assert submission.status in (Status.RELEASED, Status.WITHDRAWN)
    assert (submission.release_bundle_id is not None) == (submission.status == Status.RELEASED)
    assert audit_chain_verify().ok


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_reject_racing_withdraw_ends_in_one_of_them(round_):
    submission = factories.create_audited_submission(Status.AWAITING_REVIEW)
    checker = factories.create_user(role=Role.CHECKER)
    run_id = current_run(submission).id
    review_copy, withdraw_copy = (Submission.objects.get(pk=submission.pk) for _ in range(2))
    results = together(
        lambda: review_submit(
            submission=review_copy,
            reviewer=checker,
            run_id=run_id,
            decision=Decision.REJECT,
            reason="Members are exposed.",
            evidence=["attack:lira"],
        ),
        lambda: submission_withdraw(
            submission=withdraw_copy, by=submission.author, reason="wrong data"
        ),
    )
    assert len(refused(results)) == 1
    submission.refresh_from_db()
    assert submission.status in (Status.REJECTED, Status.WITHDRAWN)
    rejected = Review.objects.filter(submission=submission, decision=Decision.REJECT).exists()
    assert rejected == (submission.status == Status.REJECTED)
    assert audit_chain_verify().ok


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_approval_racing_a_new_version_never_counts_for_the_new_version(
    round_, example_files, enqueued
):
    submission = factories.create_audited_submission(Status.AWAITING_REVIEW)
    run_v1 = current_run(submission)
    approve = {
        "run_id": run_v1.id,
        "decision": Decision.APPROVE,
        "reason": "Judged on the attacks and the leaf rule.",
        "evidence": ["attack:lira", "rule:min_leaf_records"],
    }
    first, second = (factories.create_user(role=Role.CHECKER) for _ in range(2))
    review_submit(submission=submission, reviewer=first, **approve)  # the second races
    review_copy, version_copy = (Submission.objects.get(pk=submission.pk) for _ in range(2))
    results = together(
        lambda: review_submit(submission=review_copy, reviewer=second, **approve),
        lambda: submission_new_version(
            submission=version_copy, by=submission.author, **example_files
        ),
    )
    assert len(refused(results)) == 1
    submission.refresh_from_db()
    approvals = Review.objects.filter(submission=submission, decision=Decision.APPROVE)
    if submission.status == Status.APPROVED:  # the approval came first: no new version
        assert submission.version == 1 and approvals.count() == 2
        assert isinstance(results[1], InvalidTransition)
    else:  # the new version came first: the approval of version 1 is refused
        assert (submission.status, submission.version) == (Status.SUBMITTED, 2)
        assert approvals.count() == 1 and not approvals.filter(run__version=2).exists()
        assert "Version 2 has been submitted since you opened this page" in str(results[0])
    assert audit_chain_verify().ok


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_shadows_finishing_at_once_are_each_counted_once(
    round_, example_files, enqueued, monkeypatch, settings
):
    settings.TRE_AUDIT_FANOUT, settings.TRE_AUDIT_SHADOW_MODELS = True, 8
    monkeypatch.setattr(services, "_round_chord_send", lambda *args: None)
    submission = submission_create(
        author=factories.create_user(role=Role.RESEARCHER),
        title="SVC",
        label="response",
        declaration=factories.EXACT,
        **example_files,
    )
    run = audit_run_execute(run=submission.runs.get())
    stores = [lambda k=k: audit_shadow_store(run=run, index=k, confidences=b"") for k in range(8)]
    redelivered = [lambda: audit_shadow_store(run=run, index=0, error="again")] * 2
    results = together(*stores, *redelivered)
    assert results.count(True) == 8
    run.refresh_from_db()
    assert (run.shadows_done, run.stage) == (8, "shadow models: 8 of 8 trained")
    assert run.progress == pytest.approx(0.5)
    assert [results[0], *results[8:]].count(True) == 1  # shadow 0 stored by one delivery
