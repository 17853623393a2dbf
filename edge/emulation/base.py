"""Shared machinery for serial sensor emulators on a real pseudo-terminal.

An emulator runs in a background thread: it streams data frames at the sensor's interval (when
the sensor would), answers the host's commands, and injects faults on request. Everything it
sends as a valid data frame is decoded with the project's own codec and recorded in
:attr:`SensorEmulator.sent_values`, so an end-to-end test can compare exactly what arrived.

Subclasses (one module per sensor) provide the wire details: how to build a data frame from
values, how to split the host's byte stream into commands, and how to answer each command.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, TypedDict

from edge.codec import SensorDescriptor, StreamDecoder
from edge.emulation.pty_link import PtyLink
from edge.emulation.series import AirSeries

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sent:
    """One valid data frame the emulator wrote, as the project's codec decodes it."""

    seq: int
    t: float  # time.monotonic() when written
    values: dict[str, float] = field(default_factory=dict)
    skip_reason: str | None = None


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """A fault the emulator injected (``kind`` e.g. ``"garbage"``, ``"unplug"``)."""

    t: float
    kind: str
    detail: str = ""


def split_fixed(buf: bytearray, header: bytes, length: int) -> list[bytes]:
    """Cut complete fixed-length commands that start with ``header`` out of ``buf`` (in place).

    Bytes before a header are dropped; an incomplete command stays in ``buf``.
    """
    out: list[bytes] = []
    while True:
        start = buf.find(header)
        if start < 0:
            keep = len(header) - 1
            del buf[: max(0, len(buf) - keep)]
            return out
        if len(buf) - start < length:
            del buf[:start]
            return out
        out.append(bytes(buf[start : start + length]))
        del buf[: start + length]


class EmulatorOptions(TypedDict, total=False):
    """Keyword options every emulator takes (see :class:`SensorEmulator`)."""

    interval_s: float | None
    seed: int
    start_hour: float
    time_scale: float
    minute_s: float
    warmup_frames: int


class SensorEmulator(ABC):
    """A serial sensor on a pseudo-terminal; use as a context manager or start()/stop().

    ``interval_s`` is the data interval in active/continuous mode; ``time_scale`` speeds up the
    simulated clock (the hour of day driving the diurnal series); ``minute_s`` is how many real
    seconds an emulated "minute" lasts for minute-based settings (working periods);
    ``warmup_frames`` all-zero frames are sent after start and after each wake.
    """

    descriptor: ClassVar[SensorDescriptor]
    checksum_offset: ClassVar[int] = -1  # byte flipped by inject_bad_checksum (from the end)

    def __init__(
        self,
        link_path: str | os.PathLike[str] | None = None,
        *,
        interval_s: float | None = None,
        seed: int = 0,
        start_hour: float = 8.0,
        time_scale: float = 1.0,
        minute_s: float = 60.0,
        warmup_frames: int = 0,
    ) -> None:
        self.link = PtyLink(link_path)
        self.interval_s = (
            interval_s if interval_s is not None else self.descriptor.default_interval_s
        )
        self.start_hour = start_hour
        self.time_scale = time_scale
        self.minute_s = minute_s
        self.warmup_frames = warmup_frames
        self.series = AirSeries(seed=seed)
        self.rng = random.Random(seed + 1)
        self.sent_values: list[Sent] = []
        self.faults: list[FaultEvent] = []
        self.commands_seen: list[bytes] = []
        self.sleeping = False
        self.bytes_dropped = 0
        self._decoder: StreamDecoder = self.descriptor.decoder()
        self._cmd_buf = bytearray()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._todo: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._t0 = time.monotonic()
        self._next_due = self._t0
        self._silent_until = 0.0
        self._corrupt_next: str | None = None
        self._warmup_left = warmup_frames
        self._seq = 0

    # --- sensor-specific hooks ------------------------------------------------------------------

    @abstractmethod
    def sample(self, hour: float) -> dict[str, float]:
        """Values (quantity code -> value) the sensor would measure at this hour of day."""

    @abstractmethod
    def make_frame(self, values: dict[str, float]) -> bytes:
        """Encode one data frame; an empty dict means the all-zero warm-up frame."""

    @abstractmethod
    def split_commands(self, buf: bytearray) -> list[bytes]:
        """Cut complete host commands out of ``buf`` (in place)."""

    @abstractmethod
    def handle_command(self, raw: bytes) -> bytes:
        """Act on one host command; return the reply bytes (``b""`` for none).

        To answer with a measurement, call :meth:`emit_data` and return ``b""``.
        """

    @property
    def streaming(self) -> bool:
        """True if the sensor currently sends data unprompted (active / continuous mode)."""
        return not self.sleeping

    def current_interval(self) -> float:
        return self.interval_s

    # --- lifetime ---------------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """Slave path of the current pty (``/dev/pts/N``); changes on replug."""
        return self.link.path

    @property
    def port(self) -> str:
        """What a client should open: the stable symlink if any, else the pty path."""
        return str(self.link.link_path) if self.link.link_path is not None else self.link.path

    def start(self) -> SensorEmulator:
        self.link.open()
        self._t0 = time.monotonic()
        self._next_due = self._t0 + self.current_interval()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"emu-{self.descriptor.name}", daemon=True
        )
        self._thread.start()
        log.info("%s emulator on %s (link %s)", self.descriptor.name, self.path,
                 self.link.link_path)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            self.link.close()

    def __enter__(self) -> SensorEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- faults (callable from any thread) ----------------------------------------------------

    def inject_garbage(self, data: bytes | None = None) -> None:
        """Write ``data`` (default: 16 random bytes) between frames."""
        payload = data if data is not None else self.rng.randbytes(16)
        self._todo.put(lambda: self._write_fault("garbage", payload))

    def inject_truncated(self) -> None:
        """Send the next data frame cut in half (it is not recorded in ``sent_values``)."""
        self._corrupt_next = "truncated"

    def inject_bad_checksum(self) -> None:
        """Send the next data frame with a corrupted checksum (not recorded)."""
        self._corrupt_next = "checksum"

    def silence(self, seconds: float) -> None:
        """Send nothing, answer nothing, for ``seconds``."""
        self._silent_until = time.monotonic() + seconds
        self._log_fault("silence", f"{seconds:g}s")

    def unplug(self) -> None:
        """Close the pty master: an open client gets an error/EOF; the symlink disappears."""
        with self._lock:
            self.link.close()
            self._cmd_buf.clear()
        self._log_fault("unplug")

    def replug(self) -> str:
        """Create a fresh pty (maybe under a new path), repoint the symlink, return the path."""
        with self._lock:
            if self.link.is_open:
                self.link.close()
            path = self.link.open()
            self._warmup_left = self.warmup_frames
            self._next_due = time.monotonic() + self.current_interval()
        self._log_fault("replug", path)
        return path

    # --- helpers for tests --------------------------------------------------------------------

    def wait_for_client(self, timeout: float = 5.0) -> bool:
        """Wait until a program has the port open."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.link.is_open and self.link.client_connected():
                    return True
            time.sleep(0.005)
        return False

    def wait_sent(self, n: int, timeout: float = 5.0) -> list[Sent]:
        """Wait until at least ``n`` data frames were sent; return them."""
        deadline = time.monotonic() + timeout
        while len(self.sent_values) < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return list(self.sent_values)

    def hour(self) -> float:
        """Simulated hour of day."""
        return (self.start_hour + (time.monotonic() - self._t0) * self.time_scale / 3600.0) % 24.0

    # --- internals ------------------------------------------------------------------------------

    def _log_fault(self, kind: str, detail: str = "") -> None:
        self.faults.append(FaultEvent(time.monotonic(), kind, detail))
        log.info("%s emulator fault: %s %s", self.descriptor.name, kind, detail)

    def _write_fault(self, kind: str, payload: bytes) -> None:
        if self.link.write(payload):
            self._log_fault(kind, payload.hex())

    def write(self, data: bytes) -> bool:
        """Write unless silenced; True if every byte was accepted."""
        if not data or time.monotonic() < self._silent_until:
            return False
        n = self.link.write(data)
        if n < len(data):
            self.bytes_dropped += len(data) - n
            return False
        return True

    def emit_data(self, values: dict[str, float] | None = None) -> dict[str, float]:
        """Build, send and record one data frame (warm-up zeros first if pending).

        ``values`` re-sends given values instead of sampling new ones; returns what was used.
        """
        if self._warmup_left > 0:
            self._warmup_left -= 1
            values = {}
        elif values is None:
            values = self.sample(self.hour())
        frame = self.make_frame(values)
        corrupt, self._corrupt_next = self._corrupt_next, None
        if corrupt == "truncated":
            if self.write(frame[: len(frame) // 2]):
                self._log_fault("truncated", frame.hex())
            return values
        if corrupt == "checksum":
            bad = bytearray(frame)
            bad[self.checksum_offset] ^= 0x5A
            if self.write(bytes(bad)):
                self._log_fault("checksum", bytes(bad).hex())
            return values
        if not self.write(frame):
            return values
        decoded = [f for f in self._decoder.feed(frame) if f.kind == "data"]
        if not decoded:  # our encoder and our decoder disagree: a bug, say it loudly
            raise AssertionError(f"{self.descriptor.name} emulator built bad frame {frame.hex()}")
        for f in decoded:
            self._seq += 1
            readings = {r.quantity: r.value for r in f.readings}
            self.sent_values.append(Sent(self._seq, time.monotonic(), readings, f.skip_reason))
        return values

    def wake(self) -> None:
        """Resume measuring (restarts the warm-up frames)."""
        self.sleeping = False
        self._warmup_left = self.warmup_frames
        self._next_due = time.monotonic() + self.current_interval()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                connected = self._step()
                now = time.monotonic()
                wait = min(0.05, max(0.0, self._next_due - now))
                if connected and self.link.is_open:
                    self.link.wait_readable(wait)
                else:
                    self._stop.wait(min(wait, 0.01) or 0.005)
        except Exception:  # keep the failure visible in the test log
            log.exception("%s emulator thread crashed", self.descriptor.name)
            raise

    def _step(self) -> bool:
        with self._lock:
            if not self.link.is_open:
                return False
            data = self.link.take()
            connected = data is not None
            silent = time.monotonic() < self._silent_until
            if data and not silent:
                self._cmd_buf += data
                for raw in self.split_commands(self._cmd_buf):
                    self.commands_seen.append(raw)
                    self.write(self.handle_command(raw))
            while True:
                try:
                    job = self._todo.get_nowait()
                except queue.Empty:
                    break
                if connected:
                    job()
            now = time.monotonic()
            if now >= self._next_due:
                if connected and self.streaming and not silent:
                    self.emit_data()
                interval = self.current_interval()
                self._next_due += interval
                if self._next_due < now:  # fell behind (e.g. silence): do not burst
                    self._next_due = now + interval
            return connected
