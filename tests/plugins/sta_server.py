"""pytest fixture ``sta_server``: a real OGC SensorThings API v1.1 server on 127.0.0.1.

The server is ``django-ogc-sensorthings`` (PyPI, ``test`` extra) with its Django ORM backend
and the dataArray extension (``CreateObservations``), on SQLite in a temporary directory,
served by Django's threaded HTTP server in a child process (:mod:`tests.plugins.sta_serve`).
It is migrated and started once per test session (2-5 s) and stopped at the end.

Other test folders use it with::

    from tests.plugins.sta_server import sta_server  # noqa: F401

The fixture yields the service root, e.g. ``http://127.0.0.1:41234/sensorthings/v1.1``.
Because the server is shared by the session, tests should use their own gateway ids.

Known behaviour of this server (checked by tests/sta/test_sta_server_behaviour.py):
interval ``phenomenonTime`` is rejected (HTTP 500 / ``"error"`` rows), duplicates are
stored (never HTTP 409), times are truncated to whole seconds, ``POST
Datastreams(id)/Observations`` answers 405 (use ``POST Observations`` with a Datastream link),
``$filter`` on ``properties/...`` silently matches nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SETTINGS_MODULE = "tests.plugins.sta_django_settings"
STARTUP_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_env(db_path: Path, service_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    env["DUET_STA_DB"] = str(db_path)
    env["DUET_STA_URL"] = service_url
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _wait_until_up(root: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"SensorThings server exited with {proc.returncode}:\n{log_path.read_text()}"
            )
        try:
            if httpx.get(root + "/", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"SensorThings server not up after {STARTUP_TIMEOUT_S} s:\n"
                       f"{log_path.read_text()}")


def _start(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the server on a free port; retry with another port if that one got taken."""
    log_path = work / "server.log"
    for _attempt in range(3):
        port = free_port()
        service_url = f"http://127.0.0.1:{port}/sensorthings"
        env = _server_env(work / "sta.sqlite3", service_url)
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.plugins.sta_serve", f"127.0.0.1:{port}"],
                env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
            )
        root = f"{service_url}/v1.1"
        try:
            _wait_until_up(root, proc, log_path)
            return proc, root
        except RuntimeError:
            _stop(proc)
            if "already in use" not in log_path.read_text(errors="replace"):
                raise
    raise RuntimeError("no free port for the SensorThings server after 3 attempts")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def running_sta_server(work: Path) -> Iterator[str]:
    """Start the server with its database in ``work``; yield the service root; stop it."""
    proc, root = _start(work)
    try:
        yield root
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def sta_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a running SensorThings v1.1 server (session-scoped)."""
    with running_sta_server(tmp_path_factory.mktemp("sta_server")) as root:
        yield root
