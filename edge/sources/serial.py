"""The generic serial source: a serial port (real or pseudo-terminal) + a sensor codec.

The port is found by path (``/dev/ttyUSB0``, a ``/dev/serial/by-id/…`` link, a pty) or by the
USB adapter's serial number, so an adapter that comes back under another name after an
unplug is found again. Any error — port missing, read error, silence longer than the
sensor's silence timeout — ends ``run``; the runtime reopens it with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import serial_asyncio_fast
from serial.tools import list_ports

from edge import plugins
from edge.codec import Frame, Maintenance, SensorDescriptor, StreamDecoder
from edge.config import SourceSettings
from edge.model import Datastream, Observation, Provenance
from edge.seams import SourceContext

log = logging.getLogger("duet.source.serial")

READ_CHUNK = 4096


class PortNotFound(ConnectionError):
    pass


def resolve_port(settings: SourceSettings) -> str:
    """The device path for a source: by USB serial number when configured, else its path."""
    if settings.usb_serial:
        for port in list_ports.comports():
            if port.serial_number == settings.usb_serial:
                return str(port.device)
        raise PortNotFound(f"no USB serial adapter with serial number {settings.usb_serial!r}")
    assert settings.port is not None
    return settings.port


@dataclass(slots=True)
class _Window:
    """Accumulates readings for one averaging interval."""

    start_ms: int
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


class SerialSource:
    """Reads one serial sensor and emits observations at the configured interval."""

    def __init__(self, settings: SourceSettings, gateway_id: str) -> None:
        self.name = settings.name
        self.settings = settings
        sensor = plugins.sensor(settings.type)
        self.desc: SensorDescriptor = sensor.descriptor
        self.gateway_id = gateway_id
        self._streams = {q: Datastream(gateway_id, settings.name, q) for q in self.desc.quantities}
        self._provenance = Provenance(
            sensor_model=self.desc.model, sensor_serial=settings.serial_number
        )
        self._interval_ms = int(settings.interval_s * 1000)
        # At or below the sensor's own rate every frame is an observation; above it, frames
        # are subsampled by time (or averaged, with ``average = true``).
        self._every_frame = settings.interval_s <= self.desc.default_interval_s
        self._last_slot: int | None = None
        self._window: _Window | None = None
        options = sensor.options.model_validate(settings.options).model_dump()
        self.commands = self.desc.commands
        self.poll_interval_s = max(settings.interval_s, self.desc.default_interval_s)
        warmup = options.get("warmup_s")
        self.warmup_s = float(warmup) if isinstance(warmup, int | float) else self.desc.warmup_s
        silence = options.get("silence_timeout_s")
        self.silence_timeout_s = (
            float(silence)
            if isinstance(silence, int | float)
            else max(10.0, 10 * self.poll_interval_s)
        )
        self.maintenance = [
            (task, _interval(options.get(task.option), task.default_interval_s))
            for task in self.desc.maintenance
        ]
        self._sleeping = False
        self._discard_until = 0.0  # monotonic: readings before this are warm-up

    @property
    def provenance(self) -> Provenance:
        return self._provenance

    async def run(self, ctx: SourceContext) -> None:
        port = resolve_port(self.settings)
        assert self.desc.serial is not None
        serial = self.desc.serial
        reader, writer = await serial_asyncio_fast.open_serial_connection(
            url=port,
            baudrate=self.settings.baudrate or serial.baudrate,
            bytesize=serial.bytesize,
            parity=serial.parity,
            stopbits=serial.stopbits,
        )
        ctx.health.device["port"] = port
        ctx.health.connected_since_ms = ctx.clock_ms()
        ctx.health.set_state("connected", f"opened {port}")
        decoder = self.desc.decoder()
        helpers: list[asyncio.Task[None]] = []
        try:
            self._start_warmup(ctx)
            await self._send(writer, self.commands.start)
            await self._send(writer, self.commands.identify)
            if self.commands.poll is not None:
                helpers.append(asyncio.create_task(self._poll(writer, self.commands.poll)))
            for job, interval_s in self.maintenance:
                if interval_s > 0:
                    helpers.append(
                        asyncio.create_task(self._maintain(ctx, writer, job, interval_s))
                    )
            if self.settings.duty_cycle is not None:
                helpers.append(asyncio.create_task(self._duty_cycle(ctx, writer)))
            await self._read_loop(ctx, reader, decoder, port, helpers)
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            ctx.health.frames_bad.update(decoder.stats.bad)  # keep counts across reconnects
            writer.close()
            self._drop_window()

    async def _read_loop(
        self,
        ctx: SourceContext,
        reader: asyncio.StreamReader,
        decoder: StreamDecoder,
        port: str,
        helpers: list[asyncio.Task[None]],
    ) -> None:
        while True:
            for task in helpers:  # a failed command writer means the port is gone
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            timeout = None if self._sleeping else self.silence_timeout_s
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that races with data arriving, and shutdown would hang
                async with asyncio.timeout(timeout):
                    data = await reader.read(READ_CHUNK)
            except TimeoutError:
                if self._sleeping:
                    continue
                raise TimeoutError(
                    f"no bytes from {port} for {self.silence_timeout_s:.0f} s"
                ) from None
            if not data:
                raise ConnectionError(f"{port} closed")
            bad_before = decoder.stats.frames_bad
            frames = decoder.feed(data)
            self._account(ctx, decoder.stats.frames_bad - bad_before)
            observations = self._observations(ctx, frames)
            if observations:
                ctx.health.observations += len(observations)
                ctx.emit(observations)

    async def _send(self, writer: asyncio.StreamWriter, commands: tuple[bytes, ...]) -> None:
        for command in commands:
            writer.write(command)
            await writer.drain()
            await asyncio.sleep(0.05)  # sensors want a breath between commands

    async def _poll(self, writer: asyncio.StreamWriter, command: bytes) -> None:
        """Polled sensors (SPS30, MH-Z19B, SCD30) answer only when asked."""
        while True:
            if not self._sleeping:
                writer.write(command)
                await writer.drain()
            await asyncio.sleep(self.poll_interval_s)

    async def _maintain(
        self, ctx: SourceContext, writer: asyncio.StreamWriter, task: Maintenance, interval_s: float
    ) -> None:
        """Run a maintenance command on its schedule (e.g. SPS30 fan cleaning); skipped asleep."""
        while True:
            await asyncio.sleep(interval_s)
            if self._sleeping:
                continue
            writer.write(task.command)
            await writer.drain()
            ctx.health.device[f"last_{task.name}_ms"] = str(ctx.clock_ms())
            log.info(
                "maintenance started",
                extra={"event": task.name, "source": self.name, "discard_s": task.discard_s},
            )
            self._discard_until = time.monotonic() + task.discard_s

    async def _duty_cycle(self, ctx: SourceContext, writer: asyncio.StreamWriter) -> None:
        """Measure for ``measure_s`` (warm-up included), then sleep for ``sleep_s``; forever."""
        cycle = self.settings.duty_cycle
        assert cycle is not None
        while True:
            await asyncio.sleep(cycle.measure_s)
            if cycle.sleep_s <= 0:
                continue
            self._sleeping = True
            ctx.health.set_state("sleeping", f"duty cycle: asleep for {cycle.sleep_s:g} s")
            await self._send(writer, self.commands.sleep)
            self._drop_window()
            await asyncio.sleep(cycle.sleep_s)
            await self._send(writer, self.commands.wake)
            self._sleeping = False
            self._start_warmup(ctx)
            ctx.health.set_state("connected", "duty cycle: awake")

    def _start_warmup(self, ctx: SourceContext) -> None:
        if self.warmup_s > 0:
            self._discard_until = time.monotonic() + self.warmup_s
            ctx.health.set_state("warming-up", f"discarding readings for {self.warmup_s:g} s")

    def _account(self, ctx: SourceContext, new_bad: int) -> None:
        if new_bad:
            ctx.health.frame_result(False, new_bad)

    def _observations(self, ctx: SourceContext, frames: list[Frame]) -> list[Observation]:
        out: list[Observation] = []
        now = ctx.clock_ms()
        health = ctx.health
        if frames:
            health.frame_result(True, len(frames))
        for frame in frames:
            if frame.info:
                self._learn_device(frame, health.device)
            if frame.kind != "data":
                continue
            health.last_frame_ms = now
            if not frame.readings:
                health.frames_skipped += 1
                continue
            if self._discard_until:
                if time.monotonic() < self._discard_until or self._sleeping:
                    health.frames_skipped += 1  # warm-up or asleep: not an observation
                    continue
                self._discard_until = 0.0
                health.set_state("connected", "warm-up over")
            health.frames_ok += 1
            if self.settings.average:
                out.extend(self._average(frame, now))
            elif self._every_frame or now // self._interval_ms != self._last_slot:
                self._last_slot = now // self._interval_ms  # the first frame of each interval
                prov = self._provenance
                streams = self._streams
                for r in frame.readings:
                    stream = streams.get(r.quantity)
                    if stream is not None:
                        out.append(Observation(stream, r.value, now, prov))
        return out

    def _learn_device(self, frame: Frame, device: dict[str, str]) -> None:
        """Put serial numbers / firmware versions a sensor reports into provenance."""
        serial = frame.info.get("serial") or frame.info.get("device_id")
        firmware = frame.info.get("firmware") or frame.info.get("firmware_version")
        prov = self._provenance
        if serial and not self.settings.serial_number and str(serial) != prov.sensor_serial:
            prov = Provenance(prov.sensor_model, str(serial), prov.firmware_version)
            device["serial"] = str(serial)
        if firmware and str(firmware) != prov.firmware_version:
            prov = Provenance(prov.sensor_model, prov.sensor_serial, str(firmware))
            device["firmware"] = str(firmware)
        self._provenance = prov

    def _average(self, frame: Frame, now: int) -> list[Observation]:
        out: list[Observation] = []
        start = now - now % self._interval_ms
        window = self._window
        if window is not None and window.start_ms != start:
            out = self._close_window(window)
            window = None
        if window is None:
            window = self._window = _Window(start)
        for r in frame.readings:
            window.sums[r.quantity] = window.sums.get(r.quantity, 0.0) + r.value
            window.counts[r.quantity] = window.counts.get(r.quantity, 0) + 1
        return out

    def _close_window(self, window: _Window) -> list[Observation]:
        end = window.start_ms + self._interval_ms
        return [
            Observation(
                self._streams[q],
                window.sums[q] / n,
                window.start_ms,
                self._provenance,
                phenomenon_end_ms=end,
            )
            for q, n in window.counts.items()
            if q in self._streams
        ]

    def _drop_window(self) -> None:
        """A partial averaging window is dropped at disconnect: a gap, never an interpolation."""
        self._window = None


def _interval(configured: object, default: float) -> float:
    """A maintenance period from the sensor's options (``None``: the sensor's default)."""
    return float(configured) if isinstance(configured, int | float) else default
