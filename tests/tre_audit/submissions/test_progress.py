"""An audit's progress as the request page shows it: stages in words, a timer, the time left."""

import datetime as dt

import pytest
from django.urls import reverse

from tests import factories
from tre_audit.submissions import selectors
from tre_audit.submissions.enums import RunStatus, Status
from tre_audit.submissions.models import AuditRun
from tre_audit.submissions.services import _progress_saver

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


class Clock:
    """A clock the test moves: ``now()`` is what the saver reads."""

    def __init__(self):
        self.at = T0

    def __call__(self):
        return self.at

    def advance(self, seconds: float):
        self.at += dt.timedelta(seconds=seconds)


def running_run(author=None) -> AuditRun:
    submission = factories.create_submission_at_status(Status.SUBMITTED, author=author)
    return AuditRun.objects.create(
        submission=submission, status=RunStatus.RUNNING, started_at=T0, attempts=1
    )


def test_each_new_stage_is_written_at_once_and_a_moving_fraction_at_most_twice_a_second():
    run, clock = running_run(), Clock()
    save = _progress_saver(run, now=clock)
    save("sweep: refitting gamma=0.1 (1 of 6)", 0.70)
    clock.advance(0.1)
    save("sweep: refitting gamma=1.0 (2 of 6)", 0.71)  # a new grid point: never dropped
    run.refresh_from_db()
    assert (run.stage, run.progress) == ("sweep: refitting gamma=1.0 (2 of 6)", 0.71)
    clock.advance(0.1)
    save("sweep: refitting gamma=1.0 (2 of 6)", 0.72)  # the same stage, too soon
    run.refresh_from_db()
    assert run.progress == 0.71 and run.phase_updates == 2


def test_a_stage_longer_than_the_field_is_cut_to_it():
    run = running_run()
    _progress_saver(run, now=Clock())("sweep: " + "x" * 200, 0.8)
    run.refresh_from_db()
    assert len(run.stage) == AuditRun._meta.get_field("stage").max_length


def test_the_time_left_appears_once_the_phase_has_a_rate():
    run, clock = running_run(), Clock()
    save = _progress_saver(run, now=clock)
    save("shadow models: 1 trained", 0.10)
    run.refresh_from_db()
    assert selectors.run_eta_seconds(run=run, now=clock()) is None
    clock.advance(20)
    save("shadow models: 3 trained", 0.30)
    run.refresh_from_db()
    assert selectors.run_eta_seconds(run=run, now=clock()) == pytest.approx(70.0)
    shown = selectors.run_progress(run=run, now=clock())
    assert shown["eta_text"] == "about 1 min left" and shown["elapsed_seconds"] == 20.0
    assert shown["stage"] == "Shadow models: 3 trained"


def test_a_second_saver_of_the_same_run_carries_its_phase_on():
    """The fan-out's round callback saves in another process, from the stored mark."""
    run, clock = running_run(), Clock()
    _progress_saver(run, now=clock)("sweep", 0.70)
    clock.advance(30)
    _progress_saver(AuditRun.objects.get(pk=run.pk), now=clock)("sweep: x (1 of 4)", 0.85)
    run.refresh_from_db()
    assert run.phase_updates == 2
    assert selectors.run_eta_seconds(run=run, now=clock()) == pytest.approx(30.0)


def test_the_progress_view_gives_words_the_timer_and_the_time_left(client):
    user = factories.create_user(role="researcher")
    run, clock = running_run(author=user), Clock()
    save = _progress_saver(run, now=clock)
    save("worst_case", 0.50)
    clock.advance(10)
    save("rmia", 0.60)
    client.force_login(user)
    shown = client.get(reverse("submissions:progress", args=[run.submission.pk])).json()
    assert shown["stage"] == "Running: RMIA" and shown["progress"] == 0.60
    assert shown["elapsed_seconds"] > 0 and shown["eta_seconds"] > 0 and shown["eta_text"]
