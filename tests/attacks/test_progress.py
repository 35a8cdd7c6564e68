"""Progress in words and the time left, with the clock passed in."""

import pytest

from attacks.audit import ATTACKS
from attacks.progress import (
    ATTACK_STAGES,
    PhaseMark,
    elapsed_text,
    eta_seconds,
    eta_text,
    phase_mark_next,
    stage_text,
)

SHADOWS = "shadow models: 1 trained"


def marks(*reports):
    """The mark after each (stage, done, now) report, from none."""
    mark = None
    for stage, done, now in reports:
        mark = phase_mark_next(mark, stage=stage, done=done, now=now)
    return mark


def test_no_estimate_before_the_phase_has_a_rate():
    assert eta_seconds(None, done=0.5, now=10.0) is None
    one = marks(("shadow models: 1 trained", 0.10, 100.0))
    assert eta_seconds(one, done=0.10, now=105.0) is None  # one report: no rate yet
    barely = marks((SHADOWS, 0.10, 100.0), (SHADOWS, 0.11, 101.0))
    assert eta_seconds(barely, done=0.11, now=101.0) is None  # moved under 3 points


def test_the_time_left_is_the_phases_elapsed_time_per_progress_times_what_is_left():
    mark = marks((SHADOWS, 0.10, 100.0), ("shadow models: 3 trained", 0.30, 120.0))
    assert mark == PhaseMark("shadows", 100.0, 0.10, 2)
    # 0.2 of progress in 20 s, 0.7 left: 70 s; measured at a later now the rate is slower.
    assert eta_seconds(mark, done=0.30, now=120.0) == pytest.approx(70.0)
    assert eta_seconds(mark, done=0.30, now=140.0) == pytest.approx(140.0)
    assert eta_seconds(mark, done=1.0, now=140.0) is None


def test_a_new_phase_or_progress_going_back_starts_a_new_mark():
    shadows = marks(("shadow models: 1 trained", 0.1, 0.0), ("shadow models: 2 trained", 0.2, 5.0))
    attacks = phase_mark_next(shadows, stage="rmia", done=0.6, now=9.0)
    assert attacks == PhaseMark("attacks", 9.0, 0.6, 1)
    same = phase_mark_next(attacks, stage="worst_case", done=0.65, now=12.0)
    assert same == PhaseMark("attacks", 9.0, 0.6, 2)  # each attack is one phase
    back = phase_mark_next(same, stage="worst_case", done=0.05, now=13.0)  # re-queued
    assert back == PhaseMark("attacks", 13.0, 0.05, 1)


def test_stages_are_words_without_internal_keys():
    assert set(ATTACK_STAGES) == set(ATTACKS)  # every attack the audit runs has a name
    texts = [stage_text(name) for name in ATTACKS]
    assert "Running: Supervised output attack" in texts and "Running: RMIA" in texts
    assert not any("attack attack" in t.lower() or "_" in t for t in texts)
    assert stage_text("rules") == "Checking the model's settings against the rules"
    assert stage_text("sweep: refitting gamma=0.1 (2 of 6)").startswith("Sweep: refitting")


@pytest.mark.parametrize(
    "seconds, text",
    [(None, ""), (2, "about 5 s left"), (42, "about 40 s left"), (200, "about 3 min left")],
)
def test_the_time_left_reads_as_a_rough_figure(seconds, text):
    assert eta_text(seconds) == text


def test_the_timer_reads_in_seconds_then_minutes():
    assert (elapsed_text(12.7), elapsed_text(185)) == ("12 s", "3 min 05 s")
