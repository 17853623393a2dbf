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
from collections.abc import Callable
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


@dataclass(frozen=True, slots=True)
class SensorDescriptor:
    """What config, `scan`, `register` and docs need to know about a sensor type.

    ``name`` is the value of ``type`` in a config source. ``quantities`` lists every quantity
    code the sensor can yield. ``decoder`` builds a fresh stream decoder. ``probe`` is a
    read-only command (or ``b""`` for sensors that talk unprompted) that `scan` may send:
    it must never change a setting on the sensor.
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
