"""BLE scanner for Ruuvi and Aranet4 sensors, on bleak.

Shaped like aiomqtt: lifetimes with ``async with``, data with ``async for``, no callbacks::

    async with BleScanner(settings) as scanner:
        async for reading in scanner.readings():
            print(reading.address, reading.frame.readings)

What it does between the radio and that loop:

- scans passively by default (BlueZ needs advertisement-monitor ``or_patterns`` for that) and
  falls back to active scanning, with a warning, when passive scanning is unsupported;
- dispatches each advertisement on its manufacturer id to the Ruuvi or Aranet4 decoder;
- drops repeated advertisements of the same measurement, per device (Ruuvi sequence number,
  Aranet4 counter / measurement time);
- keeps a per-device table (last seen, RSSI, counts) and an allow-list by address or name;
- survives the adapter disappearing: any error starting or stopping the scan, or a silent
  scan (no advertisement for ``stall_timeout_s``), restarts it after an exponential backoff
  with jitter, forever;
- optionally polls Aranet4 devices over GATT (connect, read ``f0cd3001``, disconnect).

The radio is bleak's: tests pass a replaying ``BaseBleakScanner`` / ``BaseBleakClient``
subclass as ``scanner_backend`` / ``client_backend`` (see :mod:`edge.ble.replay`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

from bleak import BleakClient, BleakScanner
from bleak.args.bluez import OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakCharacteristicNotFoundError, BleakDBusError, BleakError

from edge.backoff import Backoff
from edge.ble.settings import BleSettings, GattPollDevice
from edge.codec import BadPayload, Frame
from edge.sensors.aranet4 import codec as aranet4
from edge.sensors.ruuvi import codec as ruuvi

logger = logging.getLogger(__name__)

Via = Literal["advertisement", "gatt"]

# D-Bus errors BlueZ answers when the advertisement-monitor API is missing or refused.
# (bleak itself turns UnknownMethod on RegisterMonitor into a BleakError naming "passive";
# a bare UnknownMethod can also come from a vanished adapter, so it is not listed here.)
_PASSIVE_UNSUPPORTED_DBUS = frozenset(
    {"org.freedesktop.DBus.Error.UnknownInterface", "org.bluez.Error.NotSupported"}
)
# A Ruuvi Air heard in E1 (extended) recently: its format-6 twin carries nothing new.
_E1_PREFERENCE_S = 60.0


@dataclass(frozen=True, slots=True)
class BleReading:
    """One decoded, de-duplicated measurement from one device."""

    address: str
    name: str | None
    rssi: int | None
    sensor: str  # descriptor name: "ruuvi" or "aranet4"
    frame: Frame
    received_at: float  # Unix time (s) the gateway received it
    via: Via = "advertisement"

    @property
    def measured_at(self) -> float:
        """Unix time (s) of the measurement: Aranet4 reports its age, others are live."""
        age = self.frame.info.get("age_s")
        return self.received_at - age if isinstance(age, int) else self.received_at

    @property
    def device_id(self) -> str:
        """Stable device identity: the MAC the sensor puts in its payload, else the address."""
        mac = self.frame.info.get("mac")
        return mac if isinstance(mac, str) else self.address


@dataclass(slots=True)
class DeviceState:
    """What the scanner knows about one device (the last-seen / RSSI table)."""

    address: str
    name: str | None = None
    sensor: str | None = None
    rssi: int | None = None
    last_seen: float = 0.0
    adverts: int = 0
    gatt_reads: int = 0
    readings: int = 0
    duplicates: int = 0
    last_key: object = None
    last_measured_at: float | None = None
    e1_seen_at: float | None = None


@dataclass(slots=True)
class ScannerStats:
    """Counters for health reporting; ``bad``/``skipped``/``errors`` are keyed by reason."""

    state: str = "idle"
    mode: str = ""
    adverts: int = 0
    readings: int = 0
    duplicates: int = 0
    filtered: int = 0
    unsupported: int = 0
    dropped: int = 0
    restarts: int = 0
    stalls: int = 0
    gatt_reads: int = 0
    gatt_errors: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-able snapshot for a status page or metrics."""
        out: dict[str, object] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = dict(value) if isinstance(value, Counter) else value
        return out


class ScanStalled(Exception):
    """No advertisement within ``stall_timeout_s``: BlueZ goes silent when the adapter goes."""


def passive_unsupported(exc: BaseException) -> bool:
    """True when ``exc`` says this platform/BlueZ cannot scan passively (not a missing adapter)."""
    if isinstance(exc, BleakDBusError):
        return exc.dbus_error in _PASSIVE_UNSUPPORTED_DBUS
    return isinstance(exc, BleakError) and "passive" in str(exc).lower()


def or_patterns(sensors: list[str]) -> list[OrPattern]:
    """BlueZ advertisement-monitor patterns matching the manufacturer ids of ``sensors``."""
    ids = {"ruuvi": ruuvi.MANUFACTURER_ID, "aranet4": aranet4.MANUFACTURER_ID}
    return [
        OrPattern(0, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, ids[s].to_bytes(2, "little"))
        for s in sensors
    ]


class BleScanner:
    """Async BLE scanner yielding :class:`BleReading` objects; see the module docstring."""

    def __init__(
        self,
        settings: BleSettings,
        *,
        scanner_backend: type[BaseBleakScanner] | None = None,
        client_backend: type[BaseBleakClient] | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.stats = ScannerStats(mode=settings.scanning_mode)
        self._scanner_backend = scanner_backend
        self._client_backend = client_backend
        self._rng = rng or random.Random()
        self._now = wall_clock
        self._mode: Literal["passive", "active"] = settings.scanning_mode
        self._devices: dict[str, DeviceState] = {}
        self._allow = set(settings.allow)
        # None is the end-of-stream marker put by __aexit__ (wakes a consumer in another task)
        self._queue: asyncio.Queue[BleReading | None] = asyncio.Queue(
            maxsize=settings.queue_size + 1
        )
        self._seen: dict[str, BLEDevice] = {}  # for GATT: connect without a discovery scan
        self._heard = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._last_error = ""  # cleared when an advertisement arrives

    # -- lifetime ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._running:
            raise RuntimeError("BleScanner is already running")
        self._running = True
        if self.settings.sensors:
            self._tasks.append(asyncio.create_task(self._scan_forever(), name="ble-scan"))
        for device in self.settings.gatt_poll:
            self._tasks.append(
                asyncio.create_task(self._poll_forever(device), name=f"ble-gatt-{device.address}")
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._running = False
        pending = {task for task in self._tasks if not task.done()}
        while pending:  # re-cancel: a cancellation may be lost in third-party code
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        self._tasks.clear()
        self.stats.state = "stopped"
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def readings(self) -> AsyncIterator[BleReading]:
        """Yield readings as they arrive; the iteration ends when the scanner is closed."""
        if not self._running:
            raise RuntimeError("use 'async with BleScanner(...)' before iterating readings()")
        while True:
            reading = await self._queue.get()
            if reading is None:
                return
            yield reading

    @property
    def devices(self) -> dict[str, DeviceState]:
        """Snapshot of the per-device table, keyed by address."""
        return dict(self._devices)

    @property
    def pending(self) -> int:
        """Readings queued and not yet consumed."""
        return self._queue.qsize()

    @property
    def scanning_mode(self) -> str:
        """The mode actually in use (``active`` after a passive fallback)."""
        return self._mode

    # -- scanning ---------------------------------------------------------------------------

    def _backoff(self) -> Backoff:
        """Exponential backoff with equal jitter (the gateway's shared policy)."""
        return Backoff(self.settings.backoff_initial_s, self.settings.backoff_max_s, rng=self._rng)

    def _make_scanner(self) -> BleakScanner:
        bluez: dict[str, Any] = {}
        if self.settings.adapter:
            bluez["adapter"] = self.settings.adapter
        if self._mode == "passive":
            bluez["or_patterns"] = or_patterns(list(self.settings.sensors))
        return BleakScanner(
            self._on_advertisement,
            scanning_mode=self._mode,
            bluez=bluez,  # type: ignore[arg-type]
            backend=self._scanner_backend,
        )

    async def _scan_forever(self) -> None:
        backoff = self._backoff()
        first = True
        while True:
            if not first:
                self.stats.restarts += 1
            first = False
            scanner: BleakScanner | None = None
            try:
                self.stats.state = "starting"
                scanner = self._make_scanner()
                await scanner.start()
                self.stats.state, self.stats.mode = "scanning", self._mode
                logger.info("BLE scanning started (%s)", self._mode)
                await self._watch(backoff)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._mode == "passive" and passive_unsupported(exc):
                    logger.warning(
                        "passive BLE scanning unsupported here (%s); falling back to active "
                        "scanning (see docs/ble.md)",
                        exc,
                    )
                    self._mode = "active"
                    first = True  # a fallback is not a restart
                    continue
                self._note_error(exc)
            finally:
                if scanner is not None:
                    await self._stop_quietly(scanner)
            self.stats.state = "backoff"
            delay = backoff.next_delay()
            logger.info("BLE scan restarting in %.1f s", delay)
            await asyncio.sleep(delay)

    async def _watch(self, backoff: Backoff) -> None:
        """Return only by raising :class:`ScanStalled` when the radio goes silent."""
        while True:
            self._heard.clear()
            try:
                # not asyncio.wait_for: on 3.11 it can swallow a cancellation that races
                # with the event being set, and the scanner would then never stop
                async with asyncio.timeout(self.settings.stall_timeout_s):
                    await self._heard.wait()
            except TimeoutError:
                self.stats.stalls += 1
                raise ScanStalled(
                    f"no advertisement for {self.settings.stall_timeout_s:g} s"
                ) from None
            backoff.reset()  # the radio works: the next failure starts from a short delay

    def _note_error(self, exc: BaseException) -> None:
        """Count every failure; log a repeated one (same type, nothing heard since) at debug."""
        kind = type(exc).__name__
        self.stats.errors[kind] += 1
        repeated = kind == self._last_error
        self._last_error = kind
        if not isinstance(exc, BleakError | OSError | EOFError | ScanStalled | TimeoutError):
            logger.error("BLE scan failed unexpectedly", exc_info=exc)
        elif repeated:
            logger.debug("BLE scan interrupted again: %s: %s", kind, exc)
        else:
            logger.warning("BLE scan interrupted: %s: %s", kind, exc)

    @staticmethod
    async def _stop_quietly(scanner: BleakScanner) -> None:
        """Stop a scan whose adapter may be gone: BlueZ then raises; that is expected."""
        try:
            async with asyncio.timeout(5):
                await scanner.stop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.debug("stopping BLE scan: %s: %s", type(exc).__name__, exc)

    # -- advertisement path -----------------------------------------------------------------

    def _on_advertisement(self, device: BLEDevice, adv: AdvertisementData) -> None:
        """bleak detection callback: must never raise."""
        try:
            self._handle(device, adv)
        except Exception as exc:  # a bug here must not kill BlueZ's signal handling
            self.stats.errors["callback"] += 1
            logger.error("BLE advertisement handling failed", exc_info=exc)

    def _handle(self, device: BLEDevice, adv: AdvertisementData) -> None:
        self._heard.set()
        self._last_error = ""
        self.stats.adverts += 1
        address = device.address.upper()
        name = adv.local_name or device.name
        if self._allow and address not in self._allow and name not in self._allow:
            self.stats.filtered += 1
            return
        sensor, payload = self._classify(adv)
        if sensor is None or payload is None:
            self.stats.unsupported += 1
            return
        now = self._now()
        state = self._devices.get(address) or DeviceState(address)
        self._devices[address] = state
        self._seen[address] = device
        state.name, state.sensor, state.rssi, state.last_seen = name, sensor, adv.rssi, now
        state.adverts += 1
        frame = self._decode(sensor, payload, name)
        if frame is None:
            return
        if self._is_duplicate(state, sensor, frame, payload, now):
            state.duplicates += 1
            self.stats.duplicates += 1
            return
        if frame.skip_reason:
            self.stats.skipped[f"{sensor}:{frame.skip_reason}"] += 1
        state.readings += 1
        self._put(BleReading(address, name, adv.rssi, sensor, frame, now))

    def _classify(self, adv: AdvertisementData) -> tuple[str | None, bytes | None]:
        for sensor in self.settings.sensors:
            mid = ruuvi.MANUFACTURER_ID if sensor == "ruuvi" else aranet4.MANUFACTURER_ID
            data = adv.manufacturer_data.get(mid)
            if data is not None:
                return sensor, bytes(data)
        return None, None

    def _decode(self, sensor: str, payload: bytes, name: str | None) -> Frame | None:
        try:
            if sensor == "ruuvi":
                return ruuvi.decode(payload)
            return aranet4.decode_advertisement(payload, name)
        except BadPayload as exc:
            self.stats.bad[f"{sensor}:{exc.reason}"] += 1
            return None

    def _is_duplicate(
        self, state: DeviceState, sensor: str, frame: Frame, payload: bytes, now: float
    ) -> bool:
        if not self.settings.deduplicate:
            return False
        info = frame.info
        if sensor == "ruuvi":
            if info.get("format") == 0xE1:
                state.e1_seen_at = now
            elif (
                info.get("format") == 6
                and state.e1_seen_at is not None
                and now - state.e1_seen_at < _E1_PREFERENCE_S
            ):
                return True
            seq = info.get("sequence")
            key: object = (info.get("format"), seq) if seq is not None else payload
        else:
            if _same_measurement(state, frame, now):
                return True
            counter = info.get("counter")
            key = ("counter", counter) if counter is not None else payload
        if key == state.last_key:
            return True
        state.last_key = key
        return False

    def _put(self, reading: BleReading) -> None:
        if self._queue.qsize() >= self.settings.queue_size:
            self._queue.get_nowait()
            self.stats.dropped += 1
        self._queue.put_nowait(reading)
        self.stats.readings += 1

    # -- Aranet4 GATT polling ---------------------------------------------------------------

    async def _poll_forever(self, device: GattPollDevice) -> None:
        backoff = self._backoff()
        state = self._devices.get(device.address) or DeviceState(device.address, device.name)
        self._devices[device.address] = state
        while True:
            try:
                delay = await self._poll_once(device, state)
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.gatt_errors += 1
                self.stats.errors[f"gatt:{type(exc).__name__}"] += 1
                logger.warning(
                    "Aranet4 %s GATT read failed: %s: %s", device.address, type(exc).__name__, exc
                )
                delay = backoff.next_delay()
            await asyncio.sleep(delay)

    async def _poll_once(self, device: GattPollDevice, state: DeviceState) -> float:
        """Connect, read current readings, disconnect; return seconds until the next read."""
        bluez: dict[str, Any] = {"adapter": self.settings.adapter} if self.settings.adapter else {}
        async with asyncio.timeout(self.settings.gatt_timeout_s):
            client = BleakClient(
                self._seen.get(device.address, device.address),
                timeout=self.settings.gatt_timeout_s,
                bluez=bluez,  # type: ignore[arg-type]
                backend=self._client_backend,
            )
            async with client:
                try:
                    data = bytes(await client.read_gatt_char(aranet4.CURRENT_READINGS_UUID))
                except BleakCharacteristicNotFoundError:  # older firmware: no interval/age
                    data = bytes(await client.read_gatt_char(aranet4.CURRENT_READINGS_SHORT_UUID))
        now = self._now()
        self.stats.gatt_reads += 1
        state.last_seen, state.gatt_reads = now, state.gatt_reads + 1
        state.sensor = "aranet4"
        frame = aranet4.decode_readings(data)
        if self.settings.deduplicate and _same_measurement(state, frame, now):
            state.duplicates += 1
            self.stats.duplicates += 1
        else:
            if frame.skip_reason:
                self.stats.skipped[f"aranet4:{frame.skip_reason}"] += 1
            state.readings += 1
            self._put(BleReading(device.address, device.name, None, "aranet4", frame, now, "gatt"))
        return _next_poll_delay(device, frame)


def _same_measurement(state: DeviceState, frame: Frame, now: float) -> bool:
    """Aranet4: same measurement when the derived measurement time matches the last one."""
    age, interval = frame.info.get("age_s"), frame.info.get("interval_s")
    if not isinstance(age, int) or not isinstance(interval, int) or interval <= 0:
        return False
    measured_at = now - age
    last, state.last_measured_at = state.last_measured_at, measured_at
    return last is not None and abs(measured_at - last) < min(interval / 2, 30.0)


def _next_poll_delay(device: GattPollDevice, frame: Frame) -> float:
    """Configured interval, else just after the device's next measurement (2 s margin)."""
    if device.interval_s is not None:
        return device.interval_s
    age, interval = frame.info.get("age_s"), frame.info.get("interval_s")
    if isinstance(age, int) and isinstance(interval, int) and interval > 0:
        return float(max(interval - age, 0) + 2)
    return 60.0


async def discover(
    settings: BleSettings,
    seconds: float,
    *,
    scanner_backend: type[BaseBleakScanner] | None = None,
) -> list[DeviceState]:
    """Scan for ``seconds`` and return the supported devices heard, strongest first.

    For a ``scan`` command: read-only, sends nothing to the sensors (passive by default).
    """
    quiet = settings.model_copy(update={"gatt_poll": []})
    async with BleScanner(quiet, scanner_backend=scanner_backend) as scanner:
        await asyncio.sleep(seconds)
    heard = [d for d in scanner.devices.values() if d.adverts]
    return sorted(heard, key=lambda d: d.rssi if d.rssi is not None else -999, reverse=True)
