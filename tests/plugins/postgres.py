"""A real PostgreSQL server (Debian's package) on a free 127.0.0.1 port, for the twin store tests.

``initdb`` + ``pg_ctl`` in a private temporary directory, run as an unprivileged user (the
``postgres`` system user when the tests run as root, the current user otherwise). Nothing is
mocked: the tests talk to the same server binary a twin operator runs. ``scripts/setup.sh test``
installs ``postgresql`` and ``postgis``.

Fixtures:

- ``pg_server`` (session): one server for the whole run; tests get their own database from
- ``pg_dsn`` (function): a fresh database (with PostGIS when it is installed), dropped after;
- ``pg_private`` (function): a server of its own, for tests that kill -9 or restart it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def _pg_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin, or the directory of ``pg_ctl`` on PATH."""
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        majors = sorted((p for p in root.iterdir() if (p / "bin" / "pg_ctl").exists()),
                        key=lambda p: int(p.name) if p.name.isdigit() else 0)
        if majors:
            return majors[-1] / "bin"
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster: ``start``, ``stop`` (fast), ``kill9`` (the postmaster, no cleanup)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.workdir = Path(tempfile.mkdtemp(prefix="duet-pg-"))
        self.datadir = self.workdir / "data"
        self.log = self.workdir / "postgres.log"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self._uid = pwd.getpwnam(self.user).pw_uid
        self._gid = pwd.getpwnam(self.user).pw_gid
        os.chmod(self.workdir, 0o700)
        os.chown(self.workdir, self._uid, self._gid)
        self._run(["initdb", "-D", str(self.datadir), "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", "--no-sync", "--locale=C"])
        with open(self.datadir / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.workdir}'\n"
                "fsync = on\nsynchronous_commit = on\nmax_connections = 50\n"
                "shared_buffers = 64MB\n"
            )

    @property
    def pid(self) -> int | None:
        pidfile = self.datadir / "postmaster.pid"
        try:
            return int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[bytes]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        return subprocess.run(cmd, user=self._uid, group=self._gid, cwd=self.workdir,
                              capture_output=True, check=check, timeout=60)

    def start(self) -> None:
        self._run(["pg_ctl", "-D", str(self.datadir), "-l", str(self.log), "-w", "-t", "30",
                   "start"])

    def stop(self) -> None:
        self._run(["pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop"], check=False)

    def kill9(self) -> None:
        """SIGKILL the postmaster and every backend (as a power cut would)."""
        pid = self.pid
        if pid is None:
            return
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        for child in [pid, *(int(p) for p in children.stdout.split())]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        # A killed postmaster leaves its pid file; pg_ctl start copes with a stale one.

    def create_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _require_bindir() -> Path:
    bindir = _pg_bin_dir()
    if bindir is None:
        pytest.fail("PostgreSQL is not installed: run `bash scripts/setup.sh test`")
    return bindir


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = PgServer(_require_bindir())
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> Iterator[str]:
    name = pg_server.create_database()
    try:
        yield pg_server.dsn(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def pg_private() -> Iterator[PgServer]:
    server = PgServer(_require_bindir())
    server.start()
    try:
        yield server
    finally:
        server.destroy()
