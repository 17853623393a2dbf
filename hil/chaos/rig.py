"""One scenario's set-up: broker, twin receiver, gateway, emulated sensors, journal tap.

The rig starts everything, restarts a process that died by itself (as systemd would), and at
the end **settles**: every process back up, data flowing for a moment (so gaps announced at a
restart ride to the twin with a batch), then the emulators fall silent and the rig waits
until the twin holds — or was told will never get — every number the gateway committed,
before a clean stop. Only then are the figures taken (:mod:`hil.chaos.accounting`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from edge.emulation.base import SensorEmulator
from edge.outbox import summarize
from hil.chaos.accounting import Tally, outstanding, tally
from hil.chaos.procs import Broker, Exit, Gateway, Ingest, Service
from hil.chaos.tap import JournalTap, Ledger, wait_quiet
from hil.emulators import EMULATORS

SHIPPED_GROUP = "duet-ingest"  # provisioning/systemd/duet-edge-ingest.service: --group duet-ingest
RESTART_AFTER_S = 1.0  # systemd's RestartSec is 5 s; shorter here to keep scenarios short


@dataclass(slots=True)
class RigOptions:
    """What differs between scenarios."""

    persistence: bool = True  # the broker's
    group: str = SHIPPED_GROUP  # "" = a plain subscription
    confirm: str = "twin"  # [uplinks.mqtt] confirm
    rate_hz: float = 100.0  # frames per second of each SDS011 (a PMS5003 sends 0.4 × this)
    sds011: int = 3
    pms5003: int = 1
    buffer: dict[str, float | int | str] = field(default_factory=dict)  # extra [buffer] keys
    data_dir: Path | None = None  # default: <scenario dir>/data
    ack_timeout_s: float = 3.0
    durability: str = "normal"  # [buffer] durability


@dataclass(slots=True)
class Health:
    """Processes that ended by themselves during a scenario."""

    exits: list[Exit] = field(default_factory=list)

    @property
    def tracebacks(self) -> list[Exit]:
        return [e for e in self.exits if e.traceback]


class Rig:
    def __init__(self, workdir: Path, gateway_id: str, options: RigOptions, seed: int) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.dir = workdir
        self.gateway_id = gateway_id
        self.options = options
        self.seed = seed
        self.broker = Broker(workdir / "broker", options.persistence)
        self.twin = workdir / "twin.db"
        self.ingest = Ingest(self.broker.port, self.twin, workdir / "ingest.log", options.group)
        self.data_dir = options.data_dir or workdir / "data"
        self.emulators = self._emulators()
        self.config = self._write_config()
        self.gateway = Gateway(self.config, workdir / "gateway.log")
        self.ledger = Ledger(workdir / "ledger.db")
        self.tap = JournalTap(self.data_dir, gateway_id, self.ledger)
        self.health = Health()
        self.wanted: dict[str, bool] = {"broker": True, "receiver": True, "gateway": True}
        self._down_since: dict[str, float] = {}

    # ------------------------------------------------------------------ set-up
    def _emulators(self) -> list[tuple[str, str, SensorEmulator]]:
        out: list[tuple[str, str, SensorEmulator]] = []
        rate = self.options.rate_hz
        for kind, count, hz in (("sds011", self.options.sds011, rate),
                                ("pms5003", self.options.pms5003, 0.4 * rate)):
            for i in range(count):
                name = f"{kind[:3]}{i}"
                emu = EMULATORS[kind](link_path=self.dir / f"tty-{name}", interval_s=1.0 / hz,
                                      seed=self.seed * 100 + len(out))
                out.append((name, kind, emu))
        return out

    def _write_config(self) -> Path:
        buffer = {"commit_interval_s": 0.2, "commit_rows": 500, "spill_after_s": 2.0,
                  "durability": self.options.durability, **self.options.buffer}
        lines = [
            "[gateway]", f'id = "{self.gateway_id}"', f'data_dir = "{self.data_dir}"', "",
            "[buffer]", *(f"{k} = {_toml(v)}" for k, v in buffer.items()), "",
            "[runtime]", "backoff_initial_s = 0.2", "backoff_max_s = 1.0",
            "drain_timeout_s = 3", "",
            "[uplinks.mqtt]", f"port = {self.broker.port}", "max_inflight = 8",
            "keepalive_s = 5", f"ack_timeout_s = {self.options.ack_timeout_s}",
            "max_latency_s = 0.3", f'confirm = "{self.options.confirm}"', "",
            "[log]", 'format = "json"', 'level = "INFO"', "",
        ]
        for name, kind, emu in self.emulators:
            lines += ["[[sources]]", f'name = "{name}"', f'type = "{kind}"',
                      f'port = "{emu.port}"', "interval_s = 0.001",
                      "options = { silence_timeout_s = 3, warmup_s = 0 }", ""]
        path = self.dir / "gateway.toml"
        path.write_text("\n".join(lines))
        return path

    def start(self, wait_for_data_s: float = 40.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.broker.start()
        self.ingest.start()
        for _name, _kind, emu in self.emulators:
            emu.start()
        self.tap.start()
        self.gateway.start()
        deadline = time.monotonic() + wait_for_data_s
        while not self.committed_ranges() and time.monotonic() < deadline:
            self.wait(0.1)
        if not self.committed_ranges():
            raise RuntimeError(f"the gateway committed nothing in {wait_for_data_s:.0f} s; "
                               f"see {self.gateway.log_path}")

    def close(self) -> None:
        for service in (self.gateway, self.ingest, self.broker):
            service.kill9()
        for _name, _kind, emu in self.emulators:
            emu.stop()
        self.tap.stop()
        self.ledger.close()

    # ------------------------------------------------------------------ faults
    def services(self) -> list[Service]:
        return [self.broker, self.ingest, self.gateway]

    def kill9(self, service: Service) -> None:
        """``kill -9`` and leave it down until :meth:`restart`."""
        self.wanted[service.name] = False
        service.kill9()

    def stop(self, service: Service, timeout: float = 20.0) -> int | None:
        """SIGTERM (SIGKILL after ``timeout``), down until :meth:`restart`; the exit status."""
        self.wanted[service.name] = False
        return service.stop(timeout)

    def restart(self, service: Service) -> None:
        self.wanted[service.name] = True
        if not service.running:
            if service is self.gateway:
                self.tap.run += 1
            service.start()

    def wait(self, seconds: float) -> None:
        """Sleep, restarting any wanted process that died by itself."""
        end = time.monotonic() + seconds
        while True:
            self.supervise()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.1, left))

    def supervise(self) -> None:
        now = time.monotonic()
        for service in self.services():
            ended = service.reap()
            if ended is not None:
                self.health.exits.append(ended)
                self._down_since[service.name] = now
            if (self.wanted[service.name] and not service.running
                    and now - self._down_since.get(service.name, 0.0) >= RESTART_AFTER_S):
                self.restart(service)

    def silence_sensors(self, seconds: float) -> None:
        for _name, _kind, emu in self.emulators:
            emu.silence(seconds)

    def resume_sensors(self) -> None:
        self.silence_sensors(0.0)

    # ------------------------------------------------------------------ the end
    def committed_ranges(self) -> list[tuple[int, int]]:
        return self.ledger.committed_ranges(self.gateway_id)

    def outstanding(self) -> int:
        return outstanding(self.committed_ranges(), self.twin, self.gateway_id)

    def settle(self, timeout: float = 60.0) -> bool:
        """Everything up, a moment of data, silence, wait for the twin, clean stop.

        True when the twin holds or was told about every committed number.
        """
        for service in self.services():
            self.restart(service)
        self.resume_sensors()
        self.wait(1.5)  # a batch after the last restart carries the gaps it recorded
        self.silence_sensors(1e6)
        deadline = time.monotonic() + timeout
        for _attempt in range(2):
            wait_quiet(self.ledger, 1.0, 10.0)
            self._wait_for_the_twin(deadline)
            self.stop(self.gateway)
            self.tap.read_all()
            if not self.outstanding() or time.monotonic() >= deadline:
                break
            self.restart(self.gateway)  # the clean stop left some unconfirmed: drain them
        return self.outstanding() == 0

    def _wait_for_the_twin(self, deadline: float) -> None:
        """Until the twin has everything, the gateway has nothing left to send, no progress
        for three ack timeouts, or the deadline."""
        idle = 0  # consecutive checks with nothing left to send in the outbox
        last, since = self.outstanding(), time.monotonic()
        stall_s = max(10.0, 3 * self.options.ack_timeout_s)
        while last and time.monotonic() < deadline and idle < 3:
            if time.monotonic() - since > stall_s:
                return
            self.wait(0.5)
            idle = idle + 1 if self.gateway_has_nothing_left() else 0
            now = self.outstanding()
            if now != last:
                last, since = now, time.monotonic()

    def gateway_has_nothing_left(self) -> bool:
        """The gateway's outbox holds nothing unconfirmed and no gap still to announce: the
        twin will get nothing more, whatever it lacks (read-only, safe while it runs)."""
        try:
            summary = summarize(self.data_dir / "outbox.db", ["mqtt"])
        except Exception:  # moved aside, being created, unreadable: not known to be done
            return False
        return summary.unsent == 0 and summary.gaps == 0

    def tally(self) -> Tally:
        self.tap.read_all()
        return tally(self.ledger.path, self.twin, self.gateway_id)


def _toml(value: float | int | str) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)
