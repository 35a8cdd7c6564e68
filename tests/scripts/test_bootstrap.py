"""scripts/bootstrap's apt step, sourced with a fake apt-get: no root, no network."""

import subprocess
from pathlib import Path

BOOTSTRAP = Path(__file__).parents[2] / "scripts" / "bootstrap"

#: An apt-get that fails as one does when another apt holds the lock, loudly.
FAILING_APT = """#!/bin/sh
echo "$@" >> calls
for i in 1 2 3 4 5; do echo "W: some apt noise $i" >&2; done
echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 42" >&2
exit 100
"""


def apt_install(tmp_path, apt_get: str):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "apt-get").write_text(apt_get)
    (fake / "apt-get").chmod(0o755)
    return subprocess.run(
        ["bash", "-c", f'source "{BOOTSTRAP}"; apt_install redis-server chromium'],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": f"{fake}:/usr/bin:/bin"},
        timeout=30,
    )


def test_an_apt_failure_is_one_sentence_with_the_command_to_run(tmp_path):
    result = apt_install(tmp_path, FAILING_APT)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        "bootstrap: apt-get update failed with exit status 100 (its output is in "
        "var/log/bootstrap.log); run: apt-get update && apt-get install -y redis-server chromium"
    )
    assert "E: Could not get lock" not in result.stderr  # the dump is in the log, not the screen
    assert "Could not get lock" in (tmp_path / "var/log/bootstrap.log").read_text()


def test_apt_waits_for_a_held_lock_instead_of_failing_at_once(tmp_path):
    result = apt_install(tmp_path, '#!/bin/sh\necho "$@" >> calls\n')
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == 2 and all("DPkg::Lock::Timeout=600" in call for call in calls)
    assert calls[1].endswith("install -y redis-server chromium")


def test_a_pip_failure_is_one_sentence_and_leaves_no_stamp(tmp_path):
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text('#!/bin/sh\necho "ERROR: pip says a lot" >&2\nexit 1\n')
    (venv_bin / "python").chmod(0o755)
    (tmp_path / "pyproject.toml").write_text("")
    result = subprocess.run(
        ["bash", "-c", f'source "{BOOTSTRAP}"; python_packages'],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        timeout=30,
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("bootstrap: upgrading pip failed with exit status 1 (its output is in ")
    )
    assert "pip says a lot" not in result.stderr
    assert not (tmp_path / ".venv" / ".tre-audit-installed").exists()
