"""OmniPreSense OPS243-A Doppler speed radar (UART, default 19200 8N1, ASCII lines).

⚠ From the OmniPreSense API manual (AN-010) and public driver notes only: no public raw capture
exists, so the vectors in ``edge/sensors/ops243/vectors.json`` are constructed from the documented
formats. The decoder is deliberately tolerant.

One report per line (``\\n`` or ``\\r\\n``):

- JSON speed report (``OJ``): ``{"speed":0.58, "direction":"inbound", "time":105, "tick":135}``
  (``speed`` may be a list when several objects are reported; the first is used);
- per-object report (``ON``): ``{"DetectedObjectVelocity":"12.3", "direction":"inbound",
  "unit":"mph", "time":"1714..."}`` — the radar has seen an object for two consecutive speed
  samples and reports its maximum speed (again if a faster sample follows);
- plain lines: ``12.3`` / ``-12.3`` or, with time/magnitude output on, several numbers with the
  speed last (``137.429, 3.6``); an optional quoted unit (``"mph",12.3``);
- replies: ``{"Units":"mph"}``, ``{"DetectedObjectCount":3}``, module info objects.

Sign convention: positive = inbound (approaching), negative = outbound, unless a ``direction``
field says otherwise. Speeds are converted to km/h from the unit in force (updated by ``Units``
replies and ``unit`` fields; ``units`` argument otherwise, the radar's default m/s).

Frames: object reports are ``kind="data"`` with one ``speed`` reading (km/h, absolute) and
``info`` ``{"object": True, "direction": "inbound"|"outbound", "time": …}``; raw speed samples are
``kind="speed"`` (same shape, ``object`` False) so a generic source does not count each sample as
a vehicle; counts are ``kind="count"``, unit replies ``kind="units"``, anything else JSON
``kind="info"``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from edge.codec import (
    DecoderStats,
    Frame,
    Reading,
    SensorDescriptor,
    SerialCommands,
    SerialSettings,
)

MAX_LINE = 512

# km/h per unit; keys are the unit names the radar prints (and our aliases)
UNIT_TO_KMH = {
    "mph": 1.609344,
    "kmh": 1.0,
    "km/h": 1.0,
    "kph": 1.0,
    "mps": 3.6,
    "m/s": 3.6,
    "m-s": 3.6,
    "cmps": 0.036,
    "cm/s": 0.036,
    "fps": 1.09728,
    "ft/s": 1.09728,
}
DEFAULT_UNITS = "mps"

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_UNIT_TOKEN = re.compile(r'"([A-Za-z/\-]+)"')


_MAX_EXACT = 2**53


def _first_scalar(values: list[object]) -> object:
    """The first element of a (possibly nested) JSON list, without recursion."""
    item: object = values
    while isinstance(item, list) and item:
        item = item[0]
    return item


def _num(value: object) -> float | None:
    """A finite float from a JSON number or numeric string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if not -_MAX_EXACT <= value <= _MAX_EXACT:
            return None  # a radar never reports this: garbage, not a speed (and float() overflows)
        f = float(value)
    elif isinstance(value, float):
        f = value
    elif isinstance(value, str):
        try:
            f = float(value.strip())
        except ValueError:
            return None
    elif isinstance(value, list) and value:
        return _num(_first_scalar(value))
    else:
        return None
    return f if math.isfinite(f) else None


class Ops243Decoder:
    """Line-oriented OPS243 decoder.

    Bad-line reasons in ``stats.bad``: ``json`` (a ``{`` line that is not valid JSON), ``line``
    (a line with no number and no known reply), ``overlong`` (no newline within 512 bytes),
    ``speed`` (a speed that is not a finite number).
    """

    def __init__(self, units: str = DEFAULT_UNITS) -> None:
        if units not in UNIT_TO_KMH:
            raise ValueError(f"unknown OPS243 units {units!r}; allowed: {', '.join(UNIT_TO_KMH)}")
        self.stats = DecoderStats()
        self.units = units
        self._buf = bytearray()

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        out: list[Frame] = []
        pos = 0
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if len(buf) - pos > MAX_LINE:
                    self._bad(len(buf) - pos, "overlong")
                    pos = len(buf)
                break
            if nl - pos > MAX_LINE:
                self._bad(nl + 1 - pos, "overlong")
            else:
                frame = self._line(bytes(buf[pos:nl]))
                if frame is not None:
                    self.stats.frames_ok += 1
                    out.append(frame)
            pos = nl + 1
        if pos:
            del buf[:pos]
        return out

    def _bad(self, n: int, reason: str) -> None:
        self.stats.bytes_discarded += n
        self.stats.bad[reason] += 1

    def _line(self, raw: bytes) -> Frame | None:
        text = raw.decode("utf-8", "replace").strip().strip("\x00")
        if not text:
            return None
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except (ValueError, RecursionError):  # RecursionError: absurdly nested garbage
                self._bad(len(raw) + 1, "json")
                return None
            if not isinstance(obj, dict):
                self._bad(len(raw) + 1, "json")
                return None
            return self._json(obj, len(raw) + 1)
        return self._plain(text, len(raw) + 1)

    def _unit_update(self, value: object) -> None:
        if isinstance(value, str) and value.strip().lower() in UNIT_TO_KMH:
            self.units = value.strip().lower()

    def _json(self, obj: dict[str, object], size: int) -> Frame | None:
        for key in ("unit", "units", "Unit", "Units"):
            if key in obj:
                self._unit_update(obj[key])
        if "DetectedObjectVelocity" in obj:
            return self._speed(obj["DetectedObjectVelocity"], obj, True, size)
        if "speed" in obj:
            return self._speed(obj["speed"], obj, False, size)
        if "DetectedObjectCount" in obj:
            count = _num(obj["DetectedObjectCount"])
            return Frame("count", (), None, {"count": int(count) if count is not None else None})
        if set(obj) <= {"unit", "units", "Unit", "Units"}:
            return Frame("units", (), None, {"units": self.units})
        return Frame("info", (), None, {str(k): v for k, v in obj.items()})

    def _speed(self, value: object, obj: dict[str, object], is_object: bool, size: int
               ) -> Frame | None:
        speed = _num(value)
        if speed is None:
            self._bad(size, "speed")
            return None
        direction = obj.get("direction")
        if direction not in ("inbound", "outbound"):
            direction = "outbound" if speed < 0 else "inbound"
        info: dict[str, object] = {"object": is_object, "direction": direction,
                                   "units": self.units}
        t = _num(obj.get("time"))
        if t is not None:
            info["time"] = t
        kmh = abs(speed) * UNIT_TO_KMH[self.units]
        return Frame("data" if is_object else "speed", (Reading("speed", kmh),), None, info)

    def _plain(self, text: str, size: int) -> Frame | None:
        unit = _UNIT_TOKEN.search(text)
        if unit:
            self._unit_update(unit.group(1).lower())
        numbers = _NUMBER.findall(_UNIT_TOKEN.sub("", text))
        if not numbers:
            if unit:
                return Frame("units", (), None, {"units": self.units})
            self._bad(size, "line")
            return None
        obj: dict[str, object] = {}
        if len(numbers) >= 2:
            obj["time"] = numbers[0]
        return self._speed(numbers[-1], obj, False, size)


# --- host -> sensor commands (two ASCII characters each) --------------------------------------

_UNIT_COMMANDS = {"mph": b"US", "kmh": b"UK", "mps": b"UM", "cmps": b"UC", "fps": b"UF"}
_BAUD_COMMANDS = {9600: b"I1", 19200: b"I2", 57600: b"I3", 115200: b"I4", 230400: b"I5"}


def cmd_units(units: str) -> bytes:
    """Set the speed units (``mph``, ``kmh``, ``mps``, ``cmps``, ``fps``)."""
    try:
        return _UNIT_COMMANDS[units]
    except KeyError:
        raise ValueError(f"unknown units {units!r}; allowed: {', '.join(_UNIT_COMMANDS)}") from None


def cmd_json(on: bool) -> bytes:
    return b"OJ" if on else b"Oj"


def cmd_object_reports(on: bool) -> bytes:
    """Per-object max-speed reports (``ON``) on/off."""
    return b"ON" if on else b"On"


def cmd_speed_reports(on: bool) -> bytes:
    return b"OS" if on else b"Os"


def cmd_time_reports(on: bool) -> bytes:
    return b"OT" if on else b"Ot"


def cmd_magnitude_reports(on: bool) -> bytes:
    return b"OM" if on else b"Om"


def cmd_object_count() -> bytes:
    """Ask for the number of objects counted (read-only)."""
    return b"N?"


def cmd_reset_object_count() -> bytes:
    return b"N!"


def cmd_module_info() -> bytes:
    """Ask for product/firmware information (read-only; the `scan` probe)."""
    return b"??"


def cmd_baudrate(baud: int) -> bytes:
    try:
        return _BAUD_COMMANDS[baud]
    except KeyError:
        allowed = ", ".join(map(str, _BAUD_COMMANDS))
        raise ValueError(f"unsupported baud rate {baud}; allowed: {allowed}") from None


@dataclass(frozen=True, slots=True)
class Command:
    text: str


def parse_command(frame: bytes) -> Command | None:
    """A two-character ASCII command, or ``None``."""
    if len(frame) != 2 or not frame.isascii() or not frame.decode().isprintable():
        return None
    return Command(frame.decode())


def object_report(speed_kmh: float, direction: str, time_s: float | None = None,
                  units: str = "kmh") -> bytes:
    """Encode a JSON per-object line as the radar prints it (for emulators and tests)."""
    obj: dict[str, object] = {}
    if time_s is not None:
        obj["time"] = f"{time_s:.3f}"
    obj["unit"] = units
    obj["direction"] = direction
    value = speed_kmh / UNIT_TO_KMH[units]
    obj["DetectedObjectVelocity"] = f"{value if direction == 'inbound' else -value:.1f}"
    return json.dumps(obj, separators=(",", ":")).encode() + b"\r\n"


# Lifecycle (see edge.codec.SerialCommands):
# Sent once after opening: JSON output, per-object reports, km/h.
# A traffic radar is not duty-cycled (it would miss vehicles): nothing to send.
DESCRIPTOR = SensorDescriptor(
    name="ops243",
    model="OPS243-A",
    manufacturer="OmniPreSense",
    interface="serial",
    quantities=("speed",),
    decoder=Ops243Decoder,
    serial=SerialSettings(baudrate=19200),
    default_interval_s=900.0,  # traffic is aggregated per 15 min, like Telraam
    warmup_s=0.0,
    # "??" only prints module information; a quiet road may give no report for minutes,
    # so listening alone cannot identify the radar.
    probe=cmd_module_info(),
    commands=SerialCommands(
        start=(cmd_json(True), cmd_object_reports(True), cmd_units("kmh")),
    ),
)
