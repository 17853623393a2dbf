"""BLE scanner for the advertising sensors of the registry, on bleak.

Shaped like aiomqtt: lifetimes with ``async with``, data with ``async for``, no callbacks::

    async with BleScanner(settings) as scanner:
        async for reading in scanner.readings():
            print(reading.address, reading.frame.readings)

What it does between the radio and that loop:

- scans passively by default (BlueZ needs advertisement-monitor ``or_patterns`` for that) and
  falls back to active scanning, with a warning, when passive scanning is unsupported;
- dispatches each advertisement on its manufacturer id (or service-data UUID) to the sensor
  that declared it: every sensor folder with a :class:`edge.codec.BleCodec` in its descriptor
  (:func:`edge.plugins.ble_codecs`); this module names no sensor;
- drops repeated advertisements of the same measurement, per device, by the sensor's rules
  (full/reduced variants, measurement time, sequence number: see :class:`~edge.codec.BleCodec`);
- keeps a per-device table (last seen, RSSI, counts) and an allow-list by address or name;
- survives the adapter disappearing: any error starting or stopping the scan, or a silent
  scan (no advertisement for ``stall_timeout_s``), restarts it after an exponential backoff
  with jitter, forever;
- optionally polls devices over GATT (connect, read the characteristic their sensor's
  :class:`~edge.codec.GattRead` names, disconnect).

The radio is bleak's: tests pass a replaying ``BaseBleakScanner`` / ``BaseBleakClient``
subclass as ``scanner_backend`` / ``client_backend`` (see :mod:`edge.ble.replay`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
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

from edge import plugins
from edge.backoff import Backoff
from edge.ble.settings import BleSettings, GattPollDevice, check_ble_sensor
from edge.codec import BadPayload, BleCodec, Frame, GattRead

logger = logging.getLogger(__name__)

Via = Literal["advertisement", "gatt"]

# D-Bus errors BlueZ answers when the advertisement-monitor API is missing or refused.
# (bleak itself turns UnknownMethod on RegisterMonitor into a BleakError naming "passive";
# a bare UnknownMethod can also come from a vanished adapter, so it is not listed here.)
_PASSIVE_UNSUPPORTED_DBUS = frozenset(
    {"org.freedesktop.DBus.Error.UnknownInterface", "org.bluez.Error.NotSupported"}
)
# Service data UUIDs with the Bluetooth base are advertised in their 16- or 32-bit form.
_BASE_UUID_TAIL = "-0000-1000-8000-00805f9b34fb"


@dataclass(frozen=True, slots=True)
class BleReading:
    """One decoded, de-duplicated measurement from one device."""

    address: str
    name: str | None
    rssi: int | None
    sensor: str  # the sensor type (descriptor name) whose codec decoded it
    frame: Frame
    received_at: float  # Unix time (s) the gateway received it
    via: Via = "advertisement"

    @property
    def measured_at(self) -> float:
        """Unix time (s) of the measurement: ``received_at − age_s`` when the frame reports
        its age (an Aranet4 does), else ``received_at``."""
        age = self.frame.info.get("age_s")
        return self.received_at - age if isinstance(age, int) else self.received_at

    @property
    def device_id(self) -> str:
        """Stable device identity: the MAC the sensor puts in its payload (``info["mac"]``,
        a Ruuvi does), else the address."""
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
    full_seen_at: float | None = None  # last full variant (codec.variants) heard


@dataclass(frozen=True, slots=True)
class Listener:
    """One selected sensor type, as the advertisement dispatch table holds it."""

    sensor: str
    codec: BleCodec


def dispatch_tables(
    sensors: Iterable[str],
) -> tuple[dict[int, tuple[Listener, ...]], dict[str, tuple[Listener, ...]]]:
    """(manufacturer id → listeners, service-data UUID → listeners) for the named sensors.

    Several sensors may claim one id (SAF Tehnika's Aranet models share 0x0702): they are
    tried in registry order and the first that decodes the payload takes it.
    """
    codecs = plugins.ble_codecs()
    by_company: dict[int, tuple[Listener, ...]] = {}
    by_service: dict[str, tuple[Listener, ...]] = {}
    for name in dict.fromkeys(sensors):
        listener = Listener(check_ble_sensor(name), codecs[name])
        for company in listener.codec.manufacturer_ids:
            by_company[company] = (*by_company.get(company, ()), listener)
        for service in listener.codec.service_data_uuids:
            by_service[service] = (*by_service.get(service, ()), listener)
    return by_company, by_service


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


def service_data_prefix(service: str) -> tuple[AdvertisementDataType, bytes]:
    """How service data under the 128-bit UUID ``service`` starts on air: its AD type and the
    UUID in its shortest form, little-endian (16 or 32 bits for the Bluetooth base UUID)."""
    raw = uuid.UUID(service)
    if service.endswith(_BASE_UUID_TAIL):
        short = raw.int >> 96
        if short <= 0xFFFF:
            return AdvertisementDataType.SERVICE_DATA_UUID16, short.to_bytes(2, "little")
        return AdvertisementDataType.SERVICE_DATA_UUID32, short.to_bytes(4, "little")
    return AdvertisementDataType.SERVICE_DATA_UUID128, raw.bytes[::-1]


def or_patterns(codecs: Iterable[BleCodec]) -> list[OrPattern]:
    """BlueZ advertisement-monitor patterns matching what ``codecs`` listen to: manufacturer
    data starting with each company id, service data starting with each UUID."""
    patterns: list[OrPattern] = []
    for codec in codecs:
        patterns += [
            OrPattern(0, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA,
                      company.to_bytes(2, "little"))
            for company in codec.manufacturer_ids
        ]
        patterns += [OrPattern(0, *service_data_prefix(s)) for s in codec.service_data_uuids]
    return patterns


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
        self._by_company, self._by_service = dispatch_tables(settings.sensors)
        self._gatt = {d.sensor: _gatt_codec(d.sensor) for d in settings.gatt_poll}
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
            codecs = plugins.ble_codecs()
            bluez["or_patterns"] = or_patterns(codecs[name] for name in self.settings.sensors)
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
        listeners, payload = self._match(adv)
        if not listeners:
            self.stats.unsupported += 1
            return
        now = self._now()
        state = self._devices.get(address)
        if state is None:
            state = self._devices[address] = DeviceState(address)
        self._seen[address] = device
        listener = listeners[0]
        frame: Frame | None
        try:
            frame = listener.codec.decode(payload, name)
        except BadPayload as exc:
            listener, frame = self._decode_others(listeners, payload, name, exc.reason)
        state.name, state.sensor, state.rssi, state.last_seen = name, listener.sensor, adv.rssi, now
        state.adverts += 1
        if frame is None:
            return
        if self.settings.deduplicate and _is_repeat(state, listener.codec, frame, now, payload):
            state.duplicates += 1
            self.stats.duplicates += 1
            return
        if frame.skip_reason:
            self.stats.skipped[f"{listener.sensor}:{frame.skip_reason}"] += 1
        state.readings += 1
        self._put(BleReading(address, name, adv.rssi, listener.sensor, frame, now))

    def _match(self, adv: AdvertisementData) -> tuple[tuple[Listener, ...], bytes]:
        """The listeners of the first manufacturer id (else service-data UUID) of ``adv`` that
        a selected sensor declared, and its payload; ``((), b"")`` when none did."""
        for company, data in adv.manufacturer_data.items():
            listeners = self._by_company.get(company)
            if listeners is not None:
                return listeners, bytes(data)
        if self._by_service:
            for service, data in adv.service_data.items():
                listeners = self._by_service.get(service)
                if listeners is not None:
                    return listeners, bytes(data)
        return (), b""

    def _decode_others(
        self, listeners: tuple[Listener, ...], payload: bytes, name: str | None, reason: str
    ) -> tuple[Listener, Frame | None]:
        """After the first listener refused ``payload`` (for ``reason``): the next one that
        decodes it, and the frame (sensors sharing a company id); when none does, the first
        listener and ``None``, counted in ``stats.bad`` under the first one's reason."""
        for listener in listeners[1:]:
            try:
                return listener, listener.codec.decode(payload, name)
            except BadPayload:
                continue
        self.stats.bad[f"{listeners[0].sensor}:{reason}"] += 1
        return listeners[0], None

    def _put(self, reading: BleReading) -> None:
        if self._queue.qsize() >= self.settings.queue_size:
            self._queue.get_nowait()
            self.stats.dropped += 1
        self._queue.put_nowait(reading)
        self.stats.readings += 1

    # -- GATT polling -----------------------------------------------------------------------

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
                    "%s %s GATT read failed: %s: %s",
                    device.sensor, device.address, type(exc).__name__, exc,
                )
                delay = backoff.next_delay()
            await asyncio.sleep(delay)

    async def _poll_once(self, device: GattPollDevice, state: DeviceState) -> float:
        """Connect, read current readings, disconnect; return seconds until the next read."""
        codec, gatt = self._gatt[device.sensor]
        bluez: dict[str, Any] = {"adapter": self.settings.adapter} if self.settings.adapter else {}
        async with asyncio.timeout(self.settings.gatt_timeout_s):
            client = BleakClient(
                self._seen.get(device.address, device.address),
                timeout=self.settings.gatt_timeout_s,
                bluez=bluez,  # type: ignore[arg-type]
                backend=self._client_backend,
            )
            async with client:
                data = await _read_first(client, gatt.characteristics)
        now = self._now()
        self.stats.gatt_reads += 1
        state.last_seen, state.gatt_reads = now, state.gatt_reads + 1
        state.sensor = device.sensor
        frame = gatt.decode(data)
        if self.settings.deduplicate and _is_repeat(state, codec, frame, now, None):
            state.duplicates += 1
            self.stats.duplicates += 1
        else:
            if frame.skip_reason:
                self.stats.skipped[f"{device.sensor}:{frame.skip_reason}"] += 1
            state.readings += 1
            self._put(
                BleReading(device.address, device.name, None, device.sensor, frame, now, "gatt")
            )
        return _next_poll_delay(device, frame)


def _gatt_codec(sensor: str) -> tuple[BleCodec, GattRead]:
    codec = plugins.ble_codecs()[check_ble_sensor(sensor)]
    if codec.gatt is None:
        raise ValueError(f"sensor {sensor!r} cannot be read over GATT")
    return codec, codec.gatt


async def _read_first(client: BleakClient, characteristics: tuple[str, ...]) -> bytes:
    """Read the first of ``characteristics`` the device has (older firmware lacks some)."""
    *preferred, last = characteristics
    for characteristic in preferred:
        try:
            return bytes(await client.read_gatt_char(characteristic))
        except BleakCharacteristicNotFoundError:
            continue
    return bytes(await client.read_gatt_char(last))


def _is_repeat(
    state: DeviceState, codec: BleCodec, frame: Frame, now: float, payload: bytes | None
) -> bool:
    """The device's previous measurement again, by the rules of :class:`~edge.codec.BleCodec`
    (``payload``: the key of a frame without a measurement key; ``None`` for GATT reads)."""
    info = frame.info
    variants = codec.variants
    if variants is not None:
        variant = info.get(variants.info_key)
        if variant == variants.full:
            state.full_seen_at = now
        elif (
            variant == variants.reduced
            and state.full_seen_at is not None
            and now - state.full_seen_at < variants.for_s
        ):
            return True
    if "age_s" in info and _same_measurement(state, frame, now):
        return True
    key = codec.measurement_key(frame)
    if key is None:
        if payload is None:
            return False
        key = payload
    if key == state.last_key:
        return True
    state.last_key = key
    return False


def _same_measurement(state: DeviceState, frame: Frame, now: float) -> bool:
    """Same measurement when the measurement time (``now − age_s``) is within half the
    measurement interval (at most 30 s) of the last one; frames without both never are."""
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
