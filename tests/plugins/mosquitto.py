"""A real Mosquitto broker on a free 127.0.0.1 port, startable, stoppable and restartable."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """One Mosquitto process; ``stop``/``start`` keep the port and the persistence file."""

    def __init__(self, workdir: Path, port: int | None = None, persistence: bool = True) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            f"persistence {'true' if persistence else 'false'}\n"
            "user root\n"  # stay root when started as root, so the state file can be written
            f"persistence_location {workdir}/\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 0\n"
            "log_dest stderr\n"
        )

    def start(self, timeout: float = 10.0) -> None:
        assert self.proc is None, "already running"
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)], stdout=logf, stderr=logf
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def kill9(self) -> None:
        """SIGKILL: the broker saves nothing (what it held since its last autosave is gone)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        """Graceful stop (SIGTERM): the broker saves its persistent state."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    broker = Broker(workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
