"""A private PostgreSQL server for one test run: initdb in a temporary directory, a free port.

``pytest --postgres`` starts it (see ``tests/conftest.py``); nothing else on the machine
is used or changed. PostgreSQL refuses to run as root, so as root the server runs as
the ``postgres`` user (Debian's package makes it; ``scripts/bootstrap`` installs that).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

#: The superuser initdb makes; trust authentication, so it needs no password.
USER = "tre"
#: Seconds pg_ctl waits for the server to accept connections (a loaded CI machine is slow).
START_TIMEOUT = 180


class PostgresError(RuntimeError):
    """The test server could not be set up; the message says why."""


def bin_dir() -> Path:
    """Where initdb and pg_ctl are: on PATH, else the newest of Debian's versions."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if not versions:
        raise PostgresError("PostgreSQL is not installed: run scripts/bootstrap.")
    return Path(versions[-1]).parent


def _version(path: str) -> float:
    try:
        return float(Path(path).parts[-3])
    except ValueError:
        return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One throw-away server; ``start`` returns its URL, ``stop`` removes every trace."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tre-audit-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = free_port()
        self.bin = bin_dir()
        self.started = False

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def start(self) -> str:
        _say(f"starting a private PostgreSQL ({self.bin}) on port {self.port} in {self.root}")
        self._own_root()
        self._run("initdb", "-D", self.data, "-U", USER, "--auth=trust", "--no-sync",
                  "--encoding=UTF8", "--locale=C")  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        _say(f"waiting up to {START_TIMEOUT} s for PostgreSQL to accept connections")
        self.started = True
        self._run("pg_ctl", "start", "-D", self.data, "-l", self.log, "-w",
                  "-t", str(START_TIMEOUT), "-o", options)  # fmt: skip
        return self.url

    def stop(self) -> None:
        """Stop the server (if it ran) and delete its directory; safe to call twice."""
        try:
            if self.started:
                self._run("pg_ctl", "stop", "-D", self.data, "-m", "immediate", "-w")
        except PostgresError as exc:
            _say(f"stopping PostgreSQL failed, its directory is removed anyway: {exc}")
        finally:
            self.started = False
            shutil.rmtree(self.root, ignore_errors=True)

    def _own_root(self) -> None:
        """As root, give the directory to the user the server will run as."""
        if os.geteuid() != 0:
            return
        owner = _server_user()
        os.chown(self.root, owner.pw_uid, owner.pw_gid)

    def _run(self, program: str, *args) -> None:
        command = [str(self.bin / program), *map(str, args)]
        if os.geteuid() == 0:
            command = ["runuser", "-u", _server_user().pw_name, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT + 60)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise PostgresError(
                f"{program} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}{log}"
            )


def _server_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresError(
            "Running as root, PostgreSQL needs the unprivileged user postgres: "
            "run scripts/bootstrap (it installs Debian's postgresql package)."
        ) from None


def database_url(settings_dict: dict) -> str:
    """A DATABASE_URL for another process to reach the database of ``settings_dict``."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    return (
        f"postgresql://{settings_dict['USER']}@{settings_dict['HOST']}:{settings_dict['PORT']}"
        f"/{settings_dict['NAME']}"
    )


def _say(message: str) -> None:
    print(f"tests/postgres: {message}", file=sys.stderr, flush=True)
