"""Audits whose shadow models are Celery tasks (TRE_AUDIT_FANOUT), without a broker: the
chord runs eagerly in this process, or its sends are recorded (real workers in
tests/integration/test_fanout.py)."""

from datetime import timedelta

import numpy as np
import pytest
from django.db.models import F

from attacks.policy import default_policy_text
from tests import factories
from tre_audit.celery import app
from tre_audit.reviews.enums import Role
from tre_audit.submissions import services
from tre_audit.submissions.enums import RunStatus, Status
from tre_audit.submissions.models import AuditRun, AuditShadow
from tre_audit.submissions.services import (
    REQUEUED,
    SHADOW_STOPPED_TWICE,
    _audit_config,
    audit_run_execute,
    audit_run_round,
    audit_runs_reconcile,
    audit_shadow_store,
    audit_shadow_train,
    policy_version_create,
    submission_create,
)
from tre_audit.submissions.tasks import audit_run_execute_task

pytestmark = pytest.mark.django_db

#: Rounds of 2, 4 and 8 shadows: small, and more than one chord.
SMALL_ROUNDS = (
    default_policy_text()
    .replace("min_shadow_models = 4", "min_shadow_models = 2")
    .replace("max_shadow_models = 64", "max_shadow_models = 8")
)


@pytest.fixture(autouse=True)
def _service(settings):
    """The service's own audit, fanned out, small."""
    settings.TRE_AUDIT_FANOUT = True
    settings.TRE_AUDIT_SHADOW_MODELS = None
    settings.TRE_AUDIT_SWEEP = False
    settings.TRE_AUDIT_JOBS = 1
    admin = factories.create_user(role=Role.TRE_ADMIN)
    policy_version_create(text=SMALL_ROUNDS, note="small rounds for the tests", by=admin)


@pytest.fixture
def eager():
    """Tasks (and chords) run in this process as they are sent."""
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture
def chords(monkeypatch):
    """The rounds' chords that would have been sent: (run id, attempt, shadow indices)."""
    sent = []
    monkeypatch.setattr(
        services,
        "_round_chord_send",
        lambda run_id, attempt, indices: sent.append((run_id, attempt, list(indices))),
    )
    return sent


def _run(example_files) -> AuditRun:
    submission = submission_create(
        author=factories.create_user(role="researcher"),
        title="SVC",
        label="response",
        declaration=factories.EXACT,
        **example_files,
    )
    return submission.runs.get()


@pytest.mark.parametrize("sweep", [False, True])
def test_a_fanned_out_audit_reports_what_the_one_task_audit_does(
    example_files, eager, settings, sweep
):
    settings.TRE_AUDIT_SWEEP = sweep  # the sweep reuses the audit's shadows
    fanned = audit_run_execute(run=_run(example_files))
    fanned.refresh_from_db()
    one_task = audit_run_execute(run=_run(example_files), config=_audit_config())
    assert fanned.status == one_task.status == RunStatus.DONE
    assert _without_run(fanned.report) == _without_run(one_task.report)
    assert (fanned.report["sweep"] is not None) == sweep
    rounds = fanned.report["shadow_rounds"]
    assert [r["n_models"] for r in rounds["rounds"]][:2] == [2, 4]
    shadows = AuditShadow.objects.filter(run=fanned)
    assert shadows.count() == rounds["n_models"] == fanned.shadows_done
    assert set(shadows.values_list("starts", flat=True)) == {1}
    assert not AuditShadow.objects.filter(run=one_task).exists()
    assert fanned.submission.status == Status.AWAITING_REVIEW


def test_the_first_round_is_sent_as_a_chord_and_the_run_waits_for_it(example_files, chords):
    run = audit_run_execute(run=_run(example_files), task_id="task-1")
    run.refresh_from_db()
    assert chords == [(run.id, 1, [0, 1])]
    assert (run.status, run.shadows_wanted, run.shadows_max) == (RunStatus.RUNNING, 2, 8)
    assert run.stage == "shadow models: 0 of 2 trained"
    assert list(run.shadows.values_list("index", "starts")) == [(0, 0), (1, 0)]


def test_an_impossible_service_config_fails_the_run_before_any_shadow_is_sent(
    example_files, chords, settings
):
    settings.TRE_AUDIT_JOBS = -1
    run = audit_run_execute(run=_run(example_files))
    assert run.status == RunStatus.FAILED and "number of jobs" in run.error
    assert chords == [] and not run.shadows.exists()


def test_finished_shadows_are_counted_once_each_and_move_the_progress(example_files, chords):
    run = audit_run_execute(run=_run(example_files))
    assert audit_shadow_store(run=run, index=1, confidences=b"")
    run.refresh_from_db()
    assert (run.shadows_done, run.stage) == (1, "shadow models: 1 of 2 trained")
    assert run.progress == pytest.approx(0.05 + 0.45 * 1 / 8)
    assert not audit_shadow_store(run=run, index=1, error="a redelivery")  # stored already
    run.refresh_from_db()
    assert run.shadows_done == 1 and run.shadows.get(index=1).error == ""


def test_a_shadow_is_trained_and_stored_once_however_often_it_is_delivered(example_files, chords):
    run = audit_run_execute(run=_run(example_files))
    audit_shadow_train(run=run, attempt=1, index=0)
    shadow = run.shadows.get(index=0)
    confidences = np.frombuffer(bytes(shadow.confidences), dtype="<f8")
    assert shadow.starts == 1 and shadow.error == "" and shadow.finished_at is not None
    assert len(confidences) > 0 and ((confidences >= 0) & (confidences <= 1)).all()
    audit_shadow_train(run=run, attempt=1, index=0)  # redelivered after it was stored
    assert run.shadows.get(index=0).starts == 1


def test_a_shadow_of_an_attempt_that_is_no_longer_the_runs_is_left_alone(example_files, chords):
    run = audit_run_execute(run=_run(example_files))
    audit_shadow_train(run=run, attempt=2, index=0)  # no such attempt
    assert run.shadows.get(index=0).starts == 0
    run = audit_run_round(run=run, attempt=2, n_models=2)
    assert run.shadows_wanted == 2 and run.shadow_rounds == []  # nothing measured


def test_a_shadow_whose_worker_died_under_it_twice_is_failed_not_trained_again(
    example_files, chords
):
    run = audit_run_execute(run=_run(example_files))
    AuditShadow.objects.filter(run=run, index=0).update(starts=2)  # two deliveries died
    audit_shadow_train(run=run, attempt=1, index=0)
    shadow = run.shadows.get(index=0)
    assert (shadow.starts, shadow.error) == (2, SHADOW_STOPPED_TWICE)
    assert shadow.finished_at is not None


def test_a_round_sends_the_next_one_and_a_repeated_callback_changes_nothing(example_files, chords):
    run = audit_run_execute(run=_run(example_files))
    for k in (0, 1):
        audit_shadow_train(run=run, attempt=1, index=k)
    run = audit_run_round(run=run, attempt=1, n_models=2)
    run.refresh_from_db()
    assert [c[2] for c in chords] == [[0, 1], [2, 3]]
    assert [r["n_models"] for r in run.shadow_rounds] == [2]
    assert run.shadows_wanted == 4 and run.status == RunStatus.RUNNING
    audit_run_round(run=run, attempt=1, n_models=2)  # the same callback delivered again
    run.refresh_from_db()
    assert len(chords) == 2 and len(run.shadow_rounds) == 1


def test_a_policy_saved_mid_audit_changes_neither_its_rounds_nor_its_report(example_files, chords):
    run = audit_run_execute(run=_run(example_files))
    pinned = run.policy_version
    wider = SMALL_ROUNDS.replace("max_shadow_models = 8", "max_shadow_models = 2")
    policy_version_create(
        text=wider, note="saved while the audit runs", by=factories.create_user(role=Role.TRE_ADMIN)
    )
    for k in (0, 1):
        audit_shadow_train(run=run, attempt=1, index=k)
    run = audit_run_round(run=run, attempt=1, n_models=2)
    run.refresh_from_db()
    assert run.policy_version == pinned
    assert [c[2] for c in chords] == [[0, 1], [2, 3]]  # the new maximum of 2 would stop here
    assert run.status == RunStatus.RUNNING and run.shadows_max == 8


def test_a_failed_shadow_ends_the_rounds_and_each_pool_attack_reports_it(example_files, chords):
    run = audit_run_execute(run=_run(example_files))
    audit_shadow_train(run=run, attempt=1, index=0)
    audit_shadow_store(run=run, index=1, error="The model crashed the sandbox.")
    run = audit_run_round(run=run, attempt=1, n_models=2)
    run.refresh_from_db()
    assert run.status == RunStatus.DONE and len(chords) == 1
    errors = {a["name"]: a["error"] for a in run.report["attacks"]}
    assert errors["lira"] == errors["rmia"] == "The model crashed the sandbox."
    assert not errors["shadow"] and not errors["worst_case"]


# Reconciling: waiting is not lost, a chord that died is ------------------------------


def _sent(monkeypatch) -> list[int]:
    sent = []
    monkeypatch.setattr(audit_run_execute_task, "delay", sent.append)
    return sent


def test_a_run_whose_shadows_wait_in_the_queue_is_not_lost(
    example_files, chords, monkeypatch, settings
):
    run = audit_run_execute(run=_run(example_files))
    run.refresh_from_db()
    sent = _sent(monkeypatch)
    hours_later = run.heartbeat_at + timedelta(hours=2)  # behind other audits' shadows
    assert audit_runs_reconcile(now=hours_later) == 0 and sent == []
    wait = settings.TRE_AUDIT_QUEUE_WAIT_SECONDS + settings.TRE_AUDIT_STALE_SECONDS
    given_up = run.heartbeat_at + timedelta(seconds=wait + 1)
    assert audit_runs_reconcile(now=given_up) == 1 and sent == [run.id]


def test_a_run_whose_shadow_worker_died_is_requeued_once_its_heartbeat_is_stale(
    example_files, chords, monkeypatch, settings
):
    run = audit_run_execute(run=_run(example_files))
    audit_shadow_train(run=run, attempt=1, index=0)
    AuditShadow.objects.filter(run=run, index=1).update(starts=F("starts") + 1)  # then died
    run.refresh_from_db()
    sent = _sent(monkeypatch)
    stale = settings.TRE_AUDIT_STALE_SECONDS
    beating = run.heartbeat_at + timedelta(seconds=stale - 1)
    assert audit_runs_reconcile(now=beating) == 0 and sent == []
    lost = run.heartbeat_at + timedelta(seconds=stale + 1)
    assert audit_runs_reconcile(now=lost) == 1 and sent == [run.id]
    run.refresh_from_db()
    assert (run.status, run.stage) == (RunStatus.QUEUED, REQUEUED)
    audit_run_execute(run=run, task_id="task-2")  # the new attempt keeps what was trained
    run.refresh_from_db()
    assert (run.attempts, run.shadows_wanted, run.shadow_rounds) == (2, 2, [])
    assert chords[-1] == (run.id, 2, [0, 1])
    assert run.shadows.get(index=0).finished_at is not None
    audit_shadow_train(run=run, attempt=2, index=1)  # trained again, once
    assert run.shadows.get(index=1).starts == 2 and run.shadows.get(index=1).error == ""


def test_a_run_between_rounds_waits_for_its_callback_until_the_visibility_timeout(
    example_files, chords, monkeypatch, settings
):
    run = audit_run_execute(run=_run(example_files))
    for k in (0, 1):
        audit_shadow_train(run=run, attempt=1, index=k)  # all trained: the callback is due
    run.refresh_from_db()
    sent = _sent(monkeypatch)
    stale = settings.TRE_AUDIT_STALE_SECONDS
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    due = run.heartbeat_at + timedelta(seconds=stale + visibility - 1)
    assert audit_runs_reconcile(now=due) == 0 and sent == []
    lost = run.heartbeat_at + timedelta(seconds=stale + visibility + 1)
    assert audit_runs_reconcile(now=lost) == 1 and sent == [run.id]


def _without_run(report: dict) -> dict:
    """The report but for its ``run``, the one part that differs between runs."""
    return {k: v for k, v in report.items() if k != "run"}


def test_a_networks_shadow_tasks_train_from_its_declared_recipe(mlp_files, eager):
    """Each shadow task and each round reads the version's declaration: without it no
    shadow of the network could be trained, and the pool attacks would report so."""
    admin = factories.create_user(role=Role.TRE_ADMIN)
    one_round = SMALL_ROUNDS.replace("max_shadow_models = 8", "max_shadow_models = 2")
    policy_version_create(text=one_round, note="one round of two shadows", by=admin)
    submission = submission_create(
        author=factories.create_user(role="researcher"),
        title="Breast-cancer MLP",
        label="label",
        declaration=factories.EXACT,
        model=mlp_files["model"],
        architecture=mlp_files["declaration"],
        train=mlp_files["train"],
        test=mlp_files["test"],
    )
    run = audit_run_execute(run=submission.runs.get())
    run.refresh_from_db()
    assert run.status == RunStatus.DONE, run.error
    errors = {a["name"]: a["error"] for a in run.report["attacks"]}
    assert set(errors.values()) == {None}, errors
    shadows = AuditShadow.objects.filter(run=run)
    assert shadows.count() == run.report["shadow_rounds"]["n_models"] == 2
    n_records = run.report["data"]["n_members"] + run.report["data"]["n_non_members"]
    for shadow in shadows:
        assert shadow.error == "" and len(bytes(shadow.confidences)) == 8 * n_records
    assert run.report["model"]["declaration"]["recipe"]["epochs"] == 20
