"""The codec seam: what a sensor's codec gives its source, its emulator, `scan` and tests.

A codec is a pure, incremental decoder: ``feed(bytes)`` returns zero or more
:class:`Frame` objects and keeps at most one partial frame of state. Garbage, bad checksums
and truncated frames never raise: they are counted in :class:`DecoderStats` by reason and the
decoder resynchronises on the next start marker.

A frame that is valid on the wire but carries no usable measurement (warm-up zeros, a
sentinel value, a command reply) is returned with an empty ``readings`` tuple and a
``skip_reason`` such as ``"warm-up"`` — never as a zero reading.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Literal, Protocol

Interface = Literal["serial", "ble", "node"]


@dataclass(frozen=True, slots=True)
class Reading:
    """One measured value of one quantity (code from :mod:`edge.quantities`), in its UCUM unit."""

    quantity: str
    value: float


@dataclass(frozen=True, slots=True)
class Frame:
    """One well-formed frame from the wire.

    ``kind`` is ``"data"`` for measurements or a short name of the reply (``"ack"``,
    ``"version"``, ...). ``info`` carries reply fields (device id, firmware version, ...).
    """

    kind: str
    readings: tuple[Reading, ...] = ()
    skip_reason: str | None = None
    info: dict[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class DecoderStats:
    """Counters every decoder keeps; ``bad`` is keyed by reason (``"checksum"``, ``"garbage"``...)."""

    frames_ok: int = 0
    frames_skipped: int = 0
    bytes_discarded: int = 0
    bad: Counter[str] = field(default_factory=Counter)

    @property
    def frames_bad(self) -> int:
        return sum(self.bad.values())


class StreamDecoder(Protocol):
    """Incremental decoder over a byte stream."""

    stats: DecoderStats

    def feed(self, data: bytes) -> list[Frame]: ...

    def reset(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SerialSettings:
    baudrate: int
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1


@dataclass(frozen=True, slots=True)
class SerialCommands:
    """Commands a serial sensor needs from its source, by moment of its lifecycle.

    ``start`` after the port opens (and after a wake), ``identify`` once per connection to
    learn serial number and firmware, ``poll`` every interval for sensors that only answer
    when asked, ``sleep``/``wake`` for duty cycling. Every field is optional.
    """

    start: tuple[bytes, ...] = ()
    identify: tuple[bytes, ...] = ()
    poll: bytes | None = None
    sleep: tuple[bytes, ...] = ()
    wake: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Maintenance:
    """A periodic maintenance command (e.g. the SPS30's fan cleaning).

    The source sends ``command`` every ``option`` seconds (a key of the sensor's options,
    ``default_interval_s`` when unset, ``0`` turns it off) while awake, and discards readings
    for ``discard_s`` afterwards because the sensor reports nonsense meanwhile.
    """

    name: str
    command: bytes
    option: str
    default_interval_s: float
    discard_s: float


# ``decode(payload, name)``: one advertisement payload (manufacturer data without its company
# id, or service data) and the advertised name (None when not heard) → a Frame. Pure; raises
# BadPayload for what it cannot decode.
AdvertDecode = Callable[[bytes, str | None], Frame]


def no_measurement_key(frame: Frame) -> None:
    """For sensors whose frames carry no sequence number: the payload itself is the key."""
    del frame


@dataclass(frozen=True, slots=True)
class GattRead:
    """How the BLE scanner reads a sensor over GATT (connect, read, disconnect).

    The first of ``characteristics`` (UUIDs, in order of preference) that the device has is
    read and its bytes given to ``decode`` (pure, may raise :class:`BadPayload`); a device
    without the first one (older firmware) is read from the next.
    """

    characteristics: tuple[str, ...]
    decode: Callable[[bytes], Frame]

    def __post_init__(self) -> None:
        if not self.characteristics:
            raise ValueError("GattRead needs at least one characteristic UUID")


@dataclass(frozen=True, slots=True)
class Variants:
    """A device that broadcasts each measurement twice, in a full and a reduced variant told
    apart by one ``info`` entry (the Ruuvi Air: ``format`` E1 in extended advertisements,
    format 6 in legacy ones).

    A frame whose ``info[info_key]`` is ``reduced`` is a repeat while a frame whose entry is
    ``full`` was heard from the same device within the last ``for_s`` seconds; without a full
    frame (an adapter that cannot hear extended advertisements) the reduced ones are the
    readings.
    """

    info_key: str
    full: object
    reduced: object
    for_s: float


@dataclass(frozen=True, slots=True)
class BleCodec:
    """How the BLE scanner hears one advertising sensor: the BLE part of its descriptor.

    An advertisement belongs to the sensor when it carries manufacturer data under one of
    ``manufacturer_ids`` (the payload is the data after the 2-byte company id) or service data
    under one of ``service_data_uuids`` (full 128-bit UUIDs, lower case; the payload is the
    service data). Passive scanning asks BlueZ for exactly these. ``decode`` turns a payload
    into a frame.

    Repeats (BlueZ reports an advertisement again whenever the RSSI changes) are dropped per
    device, in this order: ``variants`` (the reduced twin of a full frame); then frames whose
    ``info`` has ``age_s`` and ``interval_s`` (seconds since the measurement, the device's
    measurement interval) when their measurement time is within half an interval (at most
    30 s) of the previous one; then a frame whose ``measurement_key`` (a sequence number or
    counter; ``None``: the payload bytes) equals the previous frame's. A frame with ``age_s``
    is time-stamped at ``received_at − age_s``.

    ``gatt`` says how to read the sensor over GATT, for devices configured under
    ``[[ble.gatt_poll]]``.
    """

    decode: AdvertDecode
    manufacturer_ids: tuple[int, ...] = ()
    service_data_uuids: tuple[str, ...] = ()
    measurement_key: Callable[[Frame], Hashable | None] = no_measurement_key
    variants: Variants | None = None
    gatt: GattRead | None = None

    def __post_init__(self) -> None:
        if not self.manufacturer_ids and not self.service_data_uuids:
            raise ValueError("BleCodec needs manufacturer_ids or service_data_uuids to match")
        if any(u != u.lower() or len(u) != 36 for u in self.service_data_uuids):
            raise ValueError("service_data_uuids must be full 128-bit UUIDs in lower case")


@dataclass(frozen=True, slots=True)
class SensorDescriptor:
    """What config, `scan`, `register` and docs need to know about a sensor type.

    ``name`` is the value of ``type`` in a config source. ``quantities`` lists every quantity
    code the sensor can yield. ``decoder`` builds a fresh stream decoder. ``probe`` is a
    read-only command (or ``b""`` for sensors that talk unprompted) that `scan` may send:
    it must never change a setting on the sensor. ``ble`` is how the BLE scanner hears a
    sensor with ``interface="ble"`` (required for those, unused otherwise).
    """

    name: str
    model: str
    manufacturer: str
    interface: Interface
    quantities: tuple[str, ...]
    decoder: Callable[[], StreamDecoder]
    serial: SerialSettings | None = None
    default_interval_s: float = 1.0
    warmup_s: float = 0.0
    probe: bytes = b""
    commands: SerialCommands = SerialCommands()
    maintenance: tuple[Maintenance, ...] = ()
    ble: BleCodec | None = None

    def __post_init__(self) -> None:
        if self.interface == "ble" and self.ble is None:
            raise ValueError(f"sensor {self.name!r}: interface 'ble' needs ble=BleCodec(...)")


class BufferedDecoder:
    """What every stream decoder keeps: its counters, the bytes of a partial frame, and
    whether it is inside a run of garbage (counted once per run, however it is chunked)."""

    def __init__(self) -> None:
        self.stats = DecoderStats()
        self._buf = bytearray()
        self._in_garbage = False

    def reset(self) -> None:
        """Drop any partial frame (call after a reconnect)."""
        self._buf.clear()
        self._in_garbage = False

    def _discard(self, n: int, reason: str) -> None:
        self.stats.bytes_discarded += n
        if reason == "garbage":
            if self._in_garbage:
                return
            self._in_garbage = True
        else:
            self._in_garbage = False
        self.stats.bad[reason] += 1


class BadPayload(ValueError):
    """A payload (one BLE advertisement) that cannot be decoded; ``reason`` is a stats key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PayloadDecoder:
    """A :class:`StreamDecoder` over self-contained payloads (advertisements): one ``feed`` is
    one payload, decoded by ``decode`` (a pure function raising :class:`BadPayload`)."""

    decode: Callable[[bytes], Frame]

    def __init__(self) -> None:
        self.stats = DecoderStats()

    def feed(self, data: bytes) -> list[Frame]:
        try:
            frame = type(self).decode(data)
        except BadPayload as exc:
            self.stats.bad[exc.reason] += 1
            self.stats.bytes_discarded += len(data)
            return []
        if frame.readings:
            self.stats.frames_ok += 1
        else:
            self.stats.frames_skipped += 1
        return [frame]

    def reset(self) -> None:
        """Payloads carry no partial state; nothing to forget."""
