"""What the long-lived hosts (the enclave's, secure inference's) share: how they are
started and how the service tells its own host from a process that reused the PID."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def python_command(program: str, *, python: str | None = None) -> list[str]:
    """An isolated interpreter (``-I``: no ``PYTHON*`` variable, no user site) running
    ``program``'s ``main()``, importing this project from where it lives."""
    project_root = os.fspath(Path(__file__).resolve().parents[1])
    bootstrap = (
        f"import sys; sys.path.insert(0, {project_root!r}); "
        f"from {program} import main; sys.exit(main())"
    )
    return [python or sys.executable, "-I", "-c", bootstrap]


def pid_runs(pid: int, program: str, option: str, value: str | os.PathLike) -> bool:
    """Whether ``pid`` is a live (not zombie) ``program`` started with ``option value``.

    PIDs are reused: a stored PID is trusted only if its command line says so.
    Reads ``/proc`` (Linux); elsewhere it answers False, so nothing is ever
    signalled on a guess.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return False
    wanted = [option.encode(), os.fsencode(value)]
    pairs = [arguments[i : i + 2] for i in range(len(arguments) - 1)]
    return any(program.encode() in a for a in arguments) and wanted in pairs
