"""An audit's progress as a person reads it: stages in words and the time left.

The audit reports stages by key (``"rmia"``, ``"sweep: refitting gamma=0.1 (2 of 6)"``)
and the fraction done; this module words them and estimates the time left from the
rate of the current phase. It imports nothing heavy, so the CLI can word a server's
progress without loading the audit, and it reads no clock: callers pass ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Attacks by the key the audit reports them under (``attacks.audit.ATTACKS`` keys).
ATTACK_STAGES = {
    "shadow": "Shadow-model attack",
    "lira": "LiRA (online)",
    "lira_offline": "LiRA (offline)",
    "rmia": "RMIA",
    "worst_case": "Supervised output attack",
}
_STEPS = {
    "": "Queued: waiting for a worker",
    "loading": "Loading the model and data in a sandbox",
    "rules": "Checking the model's settings against the rules",
    "sweep": "Sweeping hyperparameters for a safer setting",
    "report": "Writing the report",
    "done": "Done",
}
#: No estimate before the current phase has moved this far (a rate from less jitters)...
MIN_PHASE_PROGRESS = 0.03
#: ...or been reported this many times.
MIN_UPDATES = 2


def stage_text(stage: str) -> str:
    """What the audit is doing, in words: ``"Running: RMIA"``, ``"Sweep: refitting ..."``.

    Parameters
    ----------
    stage : str
        A stage as the audit reports it.

    Returns
    -------
    str
    """
    if stage in ATTACK_STAGES:
        return f"Running: {ATTACK_STAGES[stage]}"
    return _STEPS.get(stage, stage[:1].upper() + stage[1:])


def stage_phase(stage: str) -> str:
    """The part of the audit a stage belongs to; the time left is measured per phase.

    Parameters
    ----------
    stage : str

    Returns
    -------
    str
        ``"shadows"``, ``"attacks"``, ``"sweep"`` or the stage itself.
    """
    if stage in ATTACK_STAGES:
        return "attacks"
    if stage.startswith("shadow models"):
        return "shadows"
    if stage.startswith("sweep"):
        return "sweep"
    return stage


@dataclass(frozen=True)
class PhaseMark:
    """Where the current phase started: when (seconds), at what fraction, and how many
    progress reports it has had since.

    Parameters
    ----------
    phase : str
    started_at : float
        Seconds on the caller's clock (``time.monotonic()``, or a timestamp).
    start_progress : float
    n_updates : int
    """

    phase: str
    started_at: float
    start_progress: float
    n_updates: int = 1


def phase_mark_next(mark: PhaseMark | None, *, stage: str, done: float, now: float) -> PhaseMark:
    """The mark after a progress report: a new phase (or progress that went back, as in a
    re-queued run) starts a new mark; otherwise the report is counted.

    Parameters
    ----------
    mark : PhaseMark or None
    stage : str
    done : float
    now : float

    Returns
    -------
    PhaseMark
    """
    phase = stage_phase(stage)
    if mark is None or mark.phase != phase or done < mark.start_progress:
        return PhaseMark(phase=phase, started_at=now, start_progress=done)
    return PhaseMark(phase, mark.started_at, mark.start_progress, mark.n_updates + 1)


def eta_seconds(mark: PhaseMark | None, *, done: float, now: float) -> float | None:
    """Seconds left at the current phase's rate, or None before it has one.

    ``elapsed / moved * (1 - done)``, where ``moved`` is the progress since the phase
    started; None until the phase has moved :data:`MIN_PHASE_PROGRESS` and had
    :data:`MIN_UPDATES` reports, and once the audit is done.

    Parameters
    ----------
    mark : PhaseMark or None
    done : float
    now : float

    Returns
    -------
    float or None
    """
    if mark is None or mark.n_updates < MIN_UPDATES or done >= 1.0:
        return None
    moved, elapsed = done - mark.start_progress, now - mark.started_at
    if moved < MIN_PHASE_PROGRESS or elapsed <= 0:
        return None
    return elapsed / moved * (1.0 - done)


def eta_text(seconds: float | None) -> str:
    """``"about 40 s left"``, ``"about 3 min left"``, or "" without an estimate.

    Parameters
    ----------
    seconds : float or None

    Returns
    -------
    str
    """
    if seconds is None:
        return ""
    if seconds < 60:
        return f"about {max(5, round(seconds / 5) * 5)} s left"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min left"
    return f"about {seconds / 3600:.1f} h left"


def elapsed_text(seconds: float) -> str:
    """``"12 s"``, ``"3 min 05 s"``: a timer as the CLI prints it.

    Parameters
    ----------
    seconds : float

    Returns
    -------
    str
    """
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"
