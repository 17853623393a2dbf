"""The real processes a chaos scenario starts, kills and restarts.

* :class:`Broker`: Mosquitto on a free 127.0.0.1 port, with the shipped broker's queueing
  and autosave settings (``provisioning/mosquitto/duet-broker.conf``), persistence on or off;
* :class:`Gateway`: ``duet-edge run CONFIG``;
* :class:`Ingest`: ``duet-edge ingest`` with the arguments of the shipped systemd unit
  (``provisioning/systemd/duet-edge-ingest.service``: shared group ``duet-ingest``), or a
  plain subscription (``--group ''``).

Every process writes its output to a log file in the scenario's folder. A process that exits
by itself (not killed by the harness) is noticed by :meth:`Service.reap` and counted, like
systemd's ``Restart=on-failure`` would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def duet_edge() -> list[str]:
    """The installed ``duet-edge`` command of this virtual environment (what systemd runs)."""
    script = Path(sys.executable).with_name("duet-edge")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from edge.cli import main; main()"]


@dataclass(slots=True)
class Exit:
    """A process that ended by itself: its exit status and the last line it wrote."""

    name: str
    code: int
    last_line: str
    traceback: bool


class Service:
    """One real process: start, ``kill -9``, graceful stop, and exits it did on its own."""

    def __init__(self, name: str, args: list[str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.exits: list[Exit] = []
        self._log_offset = 0

    @property
    def running(self) -> bool:
        return self.proc is not None

    def start(self) -> None:
        assert self.proc is None, f"{self.name} already running"
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )

    def kill9(self) -> None:
        """SIGKILL: the process saves nothing (as a crash, an OOM kill or a power cut would)."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); the exit status."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self.proc = None
        return code

    def reap(self) -> Exit | None:
        """If the process ended by itself: record and return how (else None)."""
        if self.proc is None or self.proc.poll() is None:
            return None
        code = self.proc.returncode
        self.proc = None
        text = self.output_since_start()
        lines = [line for line in text.splitlines() if line.strip()]
        ended = Exit(self.name, code, lines[-1][:300] if lines else "", "Traceback" in text)
        self.exits.append(ended)
        return ended

    def output_since_start(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class Broker(Service):
    """Mosquitto; ``stop`` saves its state (if persistent), ``kill9`` loses what it held
    since its last autosave (every 30 s, as shipped)."""

    def __init__(self, workdir: Path, persistence: bool) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.persistence = persistence
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            f"persistence {'true' if persistence else 'false'}\n"
            f"persistence_location {workdir}/\n"
            "autosave_interval 30\n"
            "max_queued_messages 100000\n"
            "user root\n"  # started as root: stay root so the state file can be written
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )
        super().__init__("broker", [MOSQUITTO, "-c", str(conf)], workdir / "mosquitto.log")

    def start(self) -> None:
        super().start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_text()[-500:]}")
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), 0.2
            ):
                return
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not open its port within 10 s")


class Gateway(Service):
    """``duet-edge run CONFIG``."""

    def __init__(self, config: Path, log_path: Path) -> None:
        super().__init__("gateway", [*duet_edge(), "run", str(config)], log_path)


class Ingest(Service):
    """``duet-edge ingest`` as the shipped unit runs it (``group`` "" = plain subscription)."""

    def __init__(self, port: int, store: Path, log_path: Path, group: str) -> None:
        super().__init__(
            "receiver",
            [*duet_edge(), "ingest", "--port", str(port), "--store", str(store),
             "--group", group, "--client-id", "duet-ingest-chaos"],
            log_path,
        )
