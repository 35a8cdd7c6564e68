import socket
from datetime import timedelta

import pytest
from celery import Celery
from django.contrib.auth.models import Group

from tests import factories
from tests.attacks.report_fixture import sample_report
from tests.tre_audit.dashboard.helpers import (
    T0,
    audited,
    broker_connects,
    clock,
    decided_after,
    review,
    submitted_request,
)
from tre_audit.dashboard import selectors
from tre_audit.reviews.enums import Decision, Role
from tre_audit.reviews.services import review_sign_off
from tre_audit.submissions.enums import RunStatus, Status
from tre_audit.submissions.models import AuditEntry, AuditRun, PolicyVersion, Project
from tre_audit.submissions.services import (
    audit_run_fail,
    policy_version_create,
    submission_set_status,
    submission_withdraw,
)

pytestmark = pytest.mark.django_db


# Requests by state ----------------------------------------------------------


def test_status_counts_list_every_status_with_zeros():
    for status in (Status.SUBMITTED, Status.SUBMITTED, Status.REJECTED, Status.RELEASED):
        factories.create_submission_at_status(status)

    counts = {row["status"]: row["count"] for row in selectors.submission_counts_by_status()}

    assert list(counts) == list(Status.values)
    assert counts[Status.SUBMITTED] == 2
    assert counts[Status.REJECTED] == 1
    assert counts[Status.RELEASED] == 1
    assert counts[Status.AUDITING] == 0
    assert sum(counts.values()) == 4


# Failed and retried audits --------------------------------------------------


def _run_failed(error: str) -> AuditRun:
    submission = factories.create_submission_at_status(Status.AUDITING)
    run = AuditRun.objects.create(submission=submission, status=RunStatus.RUNNING, attempts=1)
    return audit_run_fail(run=run, error=error)


def test_failed_audits_are_listed_newest_first_with_their_request():
    older = _run_failed("The model file is not a scikit-learn estimator.")
    newer = _run_failed("The audit stopped unexpectedly (MemoryError).")
    factories.create_submission_at_status(Status.AWAITING_REVIEW)  # a finished run: not failed

    failed = selectors.audit_run_list_failed()

    assert failed["count"] == 2
    assert [row["id"] for row in failed["runs"]] == [newer.id, older.id]
    row = failed["runs"][0]
    assert row["error"] == "The audit stopped unexpectedly (MemoryError)."
    assert row["submission_id"] == newer.submission_id
    assert row["submission_url"] == f"/requests/{newer.submission_id}/"


def test_failed_audits_count_all_but_list_only_the_limit():
    for _ in range(3):
        _run_failed("boom")

    failed = selectors.audit_run_list_failed(limit=2)

    assert failed["count"] == 3
    assert len(failed["runs"]) == 2


def test_retried_audits_are_those_with_more_than_one_attempt():
    submission = factories.create_submission_at_status(Status.AUDITING)
    once = AuditRun.objects.create(submission=submission, status=RunStatus.RUNNING, attempts=1)
    twice = AuditRun.objects.create(submission=submission, status=RunStatus.RUNNING, attempts=2)
    AuditRun.objects.create(submission=submission, status=RunStatus.QUEUED, attempts=0)

    retried = selectors.audit_run_list_retried()

    assert retried["count"] == 1
    assert [row["id"] for row in retried["runs"]] == [twice.id]
    assert once.id not in [row["id"] for row in retried["runs"]]


def test_audits_in_progress_are_the_queued_and_running_ones_and_can_be_stopped():
    submission = factories.create_submission_at_status(Status.AUDITING)
    queued = AuditRun.objects.create(submission=submission, status=RunStatus.QUEUED)
    running = AuditRun.objects.create(submission=submission, status=RunStatus.RUNNING, attempts=1)
    _run_failed("boom")

    active = selectors.audit_run_list_active()

    assert active["count"] == 2
    assert {row["id"] for row in active["runs"]} == {queued.id, running.id}
    assert all(row["stoppable"] for row in active["runs"])
    assert not any(row["stoppable"] for row in selectors.audit_run_list_failed()["runs"])


# Time to decision -----------------------------------------------------------


def test_percentile_interpolates_between_ranks():
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    assert selectors.percentile(values, 50) == 3.0
    assert selectors.percentile(values, 90) == pytest.approx(7.6)  # 4 + 0.6 * (10 - 4)
    assert selectors.percentile(values, 0) == 1.0
    assert selectors.percentile(values, 100) == 10.0
    assert selectors.percentile([5.0], 90) == 5.0
    assert selectors.percentile([1.0, 2.0], 50) == 1.5
    with pytest.raises(ValueError):
        selectors.percentile([], 50)


def test_decision_times_without_decisions_are_unknown():
    submitted_request()
    assert selectors.decision_time_stats() == selectors.DecisionTimes(0, None, None)


def test_decision_times_median_and_90th_percentile_in_hours():
    for hours, to in [
        (1, Status.APPROVED),
        (2, Status.REJECTED),
        (3, Status.CHANGES_REQUESTED),
        (4, Status.APPROVED),
        (10, Status.REJECTED),
    ]:
        decided_after(hours, to, start=T0 + timedelta(days=hours))
    audited(submitted_request())  # still awaiting review: not decided
    decided_after(0.5, Status.WITHDRAWN)  # withdrawn is not a checker's decision

    times = selectors.decision_time_stats()

    assert times.n == 5
    assert times.median_hours == pytest.approx(3.0)
    assert times.p90_hours == pytest.approx(7.6)


def test_decision_time_counts_the_first_decision_only():
    submission = decided_after(2, Status.CHANGES_REQUESTED)
    with clock(T0 + timedelta(hours=30)):
        submission_set_status(submission=submission, to=Status.SUBMITTED, by=None)
    audited(submission, at=T0 + timedelta(hours=31))
    with clock(T0 + timedelta(hours=40)):
        submission_set_status(submission=submission, to=Status.APPROVED, by=None)

    times = selectors.decision_time_stats()

    assert (times.n, times.median_hours, times.p90_hours) == (1, 2.0, 2.0)


def test_decision_time_ignores_requests_without_a_submitted_entry():
    factories.create_submission_at_status(Status.REJECTED)  # no "submitted" entry to start from
    decided_after(6)
    assert selectors.decision_time_stats() == selectors.DecisionTimes(1, 6.0, 6.0)


# Risk distribution ----------------------------------------------------------


def test_risk_distribution_uses_each_requests_newest_finished_audit():
    factories.create_submission_at_status(Status.AWAITING_REVIEW, risk="high")
    factories.create_submission_at_status(Status.APPROVED, risk="low")
    factories.create_submission_at_status(Status.REJECTED, risk="high")
    changed = factories.create_submission_at_status(Status.AWAITING_REVIEW, risk="high")
    AuditRun.objects.create(
        submission=changed, status=RunStatus.DONE, report={"verdict": {"risk": "medium"}}
    )
    AuditRun.objects.create(submission=changed, status=RunStatus.FAILED)  # newer, but not finished
    factories.create_submission_at_status(Status.AUDITING)  # no finished audit: not counted

    rows = selectors.risk_distribution()

    assert rows == [
        {"risk": "low", "count": 1},
        {"risk": "medium", "count": 1},
        {"risk": "high", "count": 2},
    ]


def test_risk_distribution_counts_a_report_without_risk_as_unknown():
    submission = factories.create_submission_at_status(Status.AUDITING)
    AuditRun.objects.create(submission=submission, status=RunStatus.DONE, report={})

    rows = selectors.risk_distribution()

    assert {"risk": "unknown", "count": 1} in rows
    assert sum(row["count"] for row in rows) == 1


# Reasons for sending a model back ------------------------------------------


def test_finding_titles_come_from_the_report():
    titles = selectors.finding_titles(sample_report())
    assert titles["attack:rmia"] == "RMIA"
    assert titles["attack:lira"] == "LiRA (online)"
    assert titles["rule:min_leaf_records"] == "Leaves can hold one record"
    assert titles["sweep"] == "Hyperparameter sweep"
    assert selectors.finding_titles(None) == {}


def test_rejection_reasons_count_evidence_of_reject_and_request_changes_reviews():
    review(audited(submitted_request()), Decision.REJECT, ["attack:rmia", "rule:min_leaf_records"])
    review(audited(submitted_request()), Decision.REQUEST_CHANGES, ["attack:rmia"])
    review(audited(submitted_request()), Decision.APPROVE, ["attack:lira"])  # not a refusal

    rows = selectors.rejection_reason_counts()

    assert rows == [
        {"source": "attack:rmia", "title": "RMIA", "count": 2},
        {"source": "rule:min_leaf_records", "title": "Leaves can hold one record", "count": 1},
    ]


def test_rejection_reasons_name_every_source_for_people_and_respect_the_limit():
    review(audited(submitted_request()), Decision.REJECT, ["record", "attack:shadow"])
    review(audited(submitted_request()), Decision.REJECT, ["record"])

    rows = selectors.rejection_reason_counts(limit=1)

    assert rows == [{"source": "record", "title": "The queried record", "count": 2}]


# Sign-offs -------------------------------------------------------------------


def test_pending_sign_offs_list_high_risk_approvals_with_who_may_sign():
    admin = factories.create_user(role=Role.TRE_ADMIN)
    author_admin = factories.create_user(role=Role.TRE_ADMIN)
    approval = review(audited(submitted_request(author=author_admin)), Decision.APPROVE, ["record"])

    mine = selectors.sign_off_list_pending(admin=admin)
    theirs = selectors.sign_off_list_pending(admin=author_admin)

    assert [row["review_id"] for row in mine] == [approval.id]
    assert mine[0]["user_can_sign_off"] is True
    assert mine[0]["justification"] == "Released behind a query-only endpoint."
    assert theirs[0]["user_can_sign_off"] is False
    assert "someone other than the checker or author" in theirs[0]["why_not"]


def test_signed_off_and_withdrawn_approvals_are_not_pending():
    admin = factories.create_user(role=Role.TRE_ADMIN)
    signed = review(audited(submitted_request()), Decision.APPROVE, ["record"])
    review_sign_off(review=signed, admin=admin, reason="Endpoint only; agreed with the PI.")
    withdrawn = review(audited(submitted_request()), Decision.APPROVE, ["record"])
    submission_withdraw(submission=withdrawn.submission, by=withdrawn.submission.author, reason="x")
    low_risk = factories.create_submission_at_status(Status.AWAITING_REVIEW, risk="low")
    review(low_risk, Decision.APPROVE, [])  # low risk: no sign-off needed

    assert selectors.sign_off_list_pending(admin=admin) == []


def test_approval_of_an_earlier_audit_is_not_pending():
    admin = factories.create_user(role=Role.TRE_ADMIN)
    stale = review(audited(submitted_request()), Decision.APPROVE, ["record"])
    AuditRun.objects.create(  # the same version audited again: reviews start over
        submission=stale.submission, status=RunStatus.DONE, report=sample_report()
    )

    assert selectors.sign_off_list_pending(admin=admin) == []


# The broker ------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_broker_is_reported_after_one_short_attempt():
    port = _closed_port()
    app = Celery("unreachable", broker=f"redis://127.0.0.1:{port}/0", set_as_current=False)

    with broker_connects(port) as attempts:
        overview = selectors.broker_overview(app=app, timeout=1.0)

    assert attempts and len(attempts) <= 3  # no retry loop
    assert all(timeout is not None and timeout <= 1.0 for timeout in attempts)
    assert overview.reachable is False
    assert overview.queue_depth is None
    assert overview.workers == []
    assert "refused" in overview.error.lower()


def test_task_rows_read_the_run_id_and_start_time():
    row = selectors._task_row(
        {"id": "abc", "name": "submissions.audit_run_execute", "args": [42], "time_start": 0.0}
    )
    assert row["run_id"] == 42
    assert row["since"] is None  # 0 is "not started"
    old_style = selectors._task_row({"id": "x", "args": "(7,)", "time_start": 1_700_000_000.5})
    assert old_style["run_id"] == 7
    assert old_style["since"].year == 2023
    assert selectors._task_row({"id": "y", "args": "<unreadable>"})["run_id"] is None


# The audit log ---------------------------------------------------------------


def test_chain_status_is_ok_for_an_untouched_log():
    decided_after(2)
    status = selectors.audit_chain_status()
    assert status.check.ok
    assert status.check.n_entries == AuditEntry.objects.count()
    assert status.bad_entry is None


def test_chain_status_names_an_entry_edited_in_the_database():
    decided_after(2)
    edited = AuditEntry.objects.filter(action="status").order_by("id")[1]
    AuditEntry.objects.filter(id=edited.id).update(reason="nothing to see here")

    status = selectors.audit_chain_status()

    assert not status.check.ok
    assert status.check.first_bad_id == edited.id
    assert status.bad_entry["id"] == edited.id
    assert status.bad_entry["reason"] == "nothing to see here"
    assert "changed" in status.check.problem


def test_newest_entries_come_first_up_to_the_limit():
    submission = decided_after(2)
    entries = selectors.audit_entry_list_newest(limit=3)
    newest = AuditEntry.objects.order_by("-id")[:3]

    assert [e["id"] for e in entries] == [e.id for e in newest]
    assert entries[0]["after"] == Status.REJECTED
    assert entries[0]["submission_url"] == submission.get_absolute_url()
    assert len(entries[0]["short_hash"]) == 12


# Users and the policy --------------------------------------------------------


def test_users_are_listed_with_roles_and_projects():
    both = factories.create_user("bea", role=Role.CHECKER)
    both.groups.add(Group.objects.get(name=Role.RESEARCHER))
    project = Project.objects.create(name="Cardiac cohort")
    project.members.add(both)
    factories.create_user("zed")

    rows = {row["username"]: row for row in selectors.user_list_with_roles()}

    assert rows["bea"]["roles"] == [Role.RESEARCHER, Role.CHECKER]
    assert rows["bea"]["role_labels"] == ["Researcher", "Output checker"]
    assert rows["bea"]["projects"] == ["Cardiac cohort"]
    assert rows["zed"]["roles"] == []


def test_policy_before_any_save_is_the_shipped_default():
    overview = selectors.policy_overview()
    assert overview["current"]["version"] == 1
    assert [v["version"] for v in overview["history"]] == [1]
    assert "auc_high = 0.8" in overview["current"]["text"]


def test_policy_history_diffs_each_version_against_the_one_before():
    admin = factories.create_user("ada", role=Role.TRE_ADMIN)
    default = selectors.policy_overview()["current"]["text"]
    stricter = default.replace("auc_high = 0.8", "auc_high = 0.75")
    policy_version_create(text=stricter, note="Stricter AUC", by=admin)
    policy_version_create(text=stricter, note="Same again", by=admin)

    overview = selectors.policy_overview()

    assert overview["current"]["version"] == 3
    assert overview["current"]["created_by"] == "ada"
    assert [v["version"] for v in overview["history"]] == [3, 2, 1]
    v2 = overview["history"][1]
    assert v2["previous"] == 1
    assert {"kind": "remove", "text": "-auc_high = 0.8"} in v2["diff"]
    assert {"kind": "add", "text": "+auc_high = 0.75"} in v2["diff"]
    assert overview["history"][0]["diff"] == []  # same text as version 2
    assert PolicyVersion.objects.count() == 2


def test_policy_diff_tags_lines():
    diff = selectors.policy_diff("a = 1\nb = 2\n", "a = 1\nb = 3\n")
    assert [line["kind"] for line in diff] == ["hunk", "context", "remove", "add"]
