"""The CLI's first second and its progress lines: errors before the heavy imports, a timer
that moves, one line per stage when the output is a log rather than a terminal."""

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tre_audit.cli import QUIET_SECONDS, ProgressPrinter, progress_line

#: The console script the package installs, next to this interpreter.
TRE_AUDIT = Path(sys.executable).with_name("tre-audit")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--model", "missing.skops", "--train", "t.csv", "--test", "h.csv", "--label", "y"],
            "missing.skops does not exist.",
        ),
        (
            ["--model", "m.skops", "--train", "t.csv", "--test", "h.csv"],
            "the following arguments are required: --label",
        ),
    ],
)
def test_a_missing_file_or_argument_is_one_sentence_and_exit_2_before_any_audit_code(
    tmp_path, args, message
):
    started = time.perf_counter()
    result = subprocess.run(
        [str(TRE_AUDIT), "audit", *args, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        timeout=60,
    )
    seconds = time.perf_counter() - started
    print(f"tre-audit audit with {message!r}: exit {result.returncode} in {seconds:.2f} s")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]  # one line
    assert message in result.stderr and "Traceback" not in result.stderr


def test_the_cli_parses_and_checks_files_without_importing_the_audit(tmp_path):
    """What makes the error fast: nothing of NumPy, scikit-learn or Django is loaded."""
    code = (
        "import sys\nfrom tre_audit.cli import main\n"
        "main(['audit', '--model', 'm.skops', '--train', 't', '--test', 'h', '--label', 'y',"
        " '--out', 'out'])\n"
        "heavy = [m for m in ('numpy', 'sklearn', 'django', 'attacks.audit') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stderr


def test_the_help_is_light():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tre_audit.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "audit" in result.stdout
    assert not any(f" {m}\n" in result.stderr for m in ("numpy", "sklearn", "django"))


def test_a_progress_line_names_the_stage_in_words_with_its_timer():
    line = progress_line(elapsed=12.4, stage="rmia", done=0.45, eta=None)
    assert line == "[12 s] Running: RMIA (45%)"
    assert progress_line(elapsed=75, stage="sweep", done=0.7, eta=200).endswith(
        "(70%), about 3 min left"
    )


def test_a_log_gets_one_line_per_stage_and_a_line_after_a_long_silence():
    out, clock = io.StringIO(), Clock()
    printer = ProgressPrinter(out, live=False, clock=clock)
    printer.update("rules", 0.0)
    clock.now += 2
    printer.update("rules", 0.0)  # nothing moved: no new line
    clock.now += 3
    printer.update("rmia", 0.6)
    clock.now += 10
    printer.tick()  # quiet for 10 s: not yet
    clock.now += QUIET_SECONDS
    printer.tick()  # a long step: the timer is printed again
    assert out.getvalue().splitlines() == [
        "[0 s] Checking the model's settings against the rules (0%)",
        "[5 s] Running: RMIA (60%)",
        "[45 s] Running: RMIA (60%)",
    ]


def test_a_terminal_gets_one_live_line_whose_timer_moves_between_reports():
    out, clock = io.StringIO(), Clock()
    printer = ProgressPrinter(out, live=True, clock=clock)
    printer.update("sweep: refitting gamma=0.1 (1 of 6)", 0.7)
    clock.now += 3
    printer.tick()
    printer.close()
    frames = out.getvalue().split("\r")[1:]
    assert [f.strip() for f in frames] == [
        "[0 s] Sweep: refitting gamma=0.1 (1 of 6) (70%)",
        "[3 s] Sweep: refitting gamma=0.1 (1 of 6) (70%)",
    ]
    assert out.getvalue().endswith("\n")
