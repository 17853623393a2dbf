"""Sensirion SPS30 (PM1/2.5/4/10, number concentrations, typical size; UART 115200 8N1, SHDLC).

Wire format (Sensirion SPS30 datasheet, SHDLC section; vectors in ``edge/sensors/sps30/vectors.json``):

- host -> sensor (MOSI): ``7E ADR CMD LEN DATA… CHK 7E``;
- sensor -> host (MISO): ``7E ADR CMD STATE LEN DATA… CHK 7E``;
- CHK = bitwise NOT of the low byte of the sum of all bytes between the delimiters (without
  CHK), computed over un-stuffed bytes;
- byte stuffing between the delimiters, CHK included: 0x7E, 0x7D, 0x11, 0x13 are sent as ``7D``
  followed by the byte XOR 0x20.

Measurement reply (CMD 0x03) with LEN 40: ten big-endian float32 — mass PM1/2.5/4/10 (µg/m³),
number PM0.5/1/2.5/4/10 (#/cm³), typical particle size (µm); LEN 20: the same as uint16
(firmware ≥ 2.0 with integer output; size in nm); LEN 0: "no new data" (skipped, not bad).
A non-zero STATE is an error reply (kind ``"error"``); bit 7 of STATE flags a device error to be
read from the status register.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

from edge.codec import (
    BufferedDecoder,
    Frame,
    Maintenance,
    Reading,
    SensorDescriptor,
    SerialCommands,
    SerialSettings,
)

FLAG = 0x7E
ESC = 0x7D
_STUFF = {0x7E, 0x7D, 0x11, 0x13}
ADDR = 0x00
MAX_DATA = 255
# longest possible stuffed MISO frame: 2 flags + 2 * (ADR CMD STATE LEN DATA CHK)
MAX_FRAME = 2 + 2 * (5 + MAX_DATA)

CMD_START = 0x00
CMD_STOP = 0x01
CMD_READ = 0x03
CMD_SLEEP = 0x10
CMD_WAKE = 0x11
CMD_FAN_CLEAN = 0x56
CMD_AUTO_CLEAN = 0x80
CMD_DEVICE_INFO = 0xD0
CMD_VERSION = 0xD1
CMD_STATUS = 0xD2
CMD_RESET = 0xD3

WAKE_PULSE = b"\xff"  # a lone byte that wakes the UART before the wake command

_QUANTITIES = (
    "pm1",
    "pm2_5",
    "pm4",
    "pm10",
    "ncm0_5",
    "ncm1",
    "ncm2_5",
    "ncm4",
    "ncm10",
    "particle_size",
)
_FLOATS = struct.Struct(">10f")
_UINTS = struct.Struct(">10H")

_KIND = {
    CMD_START: "start",
    CMD_STOP: "stop",
    CMD_SLEEP: "sleep",
    CMD_WAKE: "wake",
    CMD_FAN_CLEAN: "fan_cleaning",
    CMD_AUTO_CLEAN: "auto_clean_interval",
    CMD_DEVICE_INFO: "device_info",
    CMD_VERSION: "version",
    CMD_STATUS: "status",
    CMD_RESET: "reset",
}

STATE_MESSAGES = {
    0x01: "wrong data length",
    0x02: "unknown command",
    0x03: "no access right",
    0x04: "illegal command parameter",
    0x28: "argument out of range",
    0x43: "command not allowed in current state",
}


def shdlc_checksum(body: bytes | bytearray) -> int:
    """NOT of the low byte of the sum of the un-stuffed bytes between the delimiters."""
    return ~sum(body) & 0xFF


def stuff(body: bytes | bytearray) -> bytes:
    """Escape 0x7E/0x7D/0x11/0x13 in a frame body (without delimiters)."""
    if not _STUFF.intersection(body):
        return bytes(body)
    out = bytearray()
    for b in body:
        if b in _STUFF:
            out += bytes((ESC, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def unstuff(body: bytes | bytearray) -> bytes | None:
    """Undo byte stuffing; ``None`` if an escape is dangling or escapes a byte that needs none."""
    if ESC not in body:
        return bytes(body)
    parts = bytes(body).split(b"\x7d")
    out = bytearray(parts[0])
    for part in parts[1:]:  # each part starts with the escaped byte (no per-byte loop)
        if not part or (part[0] ^ 0x20) not in _STUFF:
            return None
        out.append(part[0] ^ 0x20)
        out += part[1:]
    return bytes(out)


class Sps30Decoder(BufferedDecoder):
    """Incremental SPS30 SHDLC (MISO) decoder.

    Frames are cut at 0x7E delimiters. Bad-frame reasons in ``stats.bad``: ``garbage`` (bytes
    before a delimiter), ``stuffing`` (an invalid escape), ``length`` (LEN does not match the
    frame, or no closing delimiter within the longest possible frame), ``checksum``. The closing
    delimiter of a bad frame is kept as the possible start of the next one, so resync is
    immediate. An empty ``7E 7E`` pair is the usual idle/resync pattern and is not counted.
    """

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        out: list[Frame] = []
        pos = 0
        end = len(buf)
        while pos < end:
            start = buf.find(FLAG, pos)
            if start < 0:
                self._discard(end - pos, "garbage")
                pos = end
                break
            if start > pos:
                self._discard(start - pos, "garbage")
                pos = start
            stop = buf.find(FLAG, pos + 1, pos + MAX_FRAME)
            if stop < 0:
                if end - pos >= MAX_FRAME:
                    self._discard(1, "length")
                    pos += 1
                    continue
                break
            if stop == pos + 1:  # "7E 7E": we were between frames; the second may be a start
                self.stats.bytes_discarded += 1
                pos = stop
                continue
            frame = self._frame(buf[pos + 1 : stop])
            if frame is not None:
                self.stats.frames_ok += 1
                self._in_garbage = False
                if frame.skip_reason is not None:
                    self.stats.frames_skipped += 1
                out.append(frame)
                pos = stop + 1
            else:
                pos = stop  # the closing flag may open the next frame
        if pos:
            del buf[:pos]
        return out

    def _frame(self, stuffed: bytearray) -> Frame | None:
        body = unstuff(stuffed)
        n = len(stuffed) + 1
        if body is None:
            self._discard(n, "stuffing")
            return None
        if len(body) < 5 or body[3] != len(body) - 5:
            self._discard(n, "length")
            return None
        if ~(sum(body) - body[-1]) & 0xFF != body[-1]:  # shdlc_checksum without a copy
            self._discard(n, "checksum")
            return None
        return decode_miso(body)


def decode_miso(body: bytes) -> Frame:
    """Decode an un-stuffed, checksum-valid MISO body ``ADR CMD STATE LEN DATA…``."""
    cmd, state, length = body[1], body[2], body[3]
    data = body[4 : 4 + length]
    if state & 0x7F:
        code = state & 0x7F
        return Frame(
            "error",
            (),
            None,
            {
                "command": cmd,
                "state": code,
                "device_error": bool(state & 0x80),
                "message": STATE_MESSAGES.get(code, "unknown error"),
            },
        )
    info: dict[str, object] = {"device_error": True} if state & 0x80 else {}
    if cmd == CMD_READ and length == 40:  # the hot path: no intermediate copy
        return _measurement_values(_FLOATS.unpack_from(body, 4), info)
    if cmd == CMD_READ:
        return _measurement(data, info)
    kind = _KIND.get(cmd, "reply")
    if cmd == CMD_DEVICE_INFO:
        info["serial"] = data.split(b"\x00", 1)[0].decode("ascii", "replace")
    elif cmd == CMD_VERSION and length >= 2:
        info["firmware"] = f"{data[0]}.{data[1]}"
        if length >= 7:
            info["hardware"] = data[3]
            info["shdlc"] = f"{data[5]}.{data[6]}"
    elif cmd == CMD_STATUS and length >= 4:
        reg = int.from_bytes(data[:4], "big")
        info |= {
            "status": reg,
            "fan_speed_warning": bool(reg & (1 << 21)),
            "laser_error": bool(reg & (1 << 5)),
            "fan_error": bool(reg & (1 << 4)),
        }
    elif cmd == CMD_AUTO_CLEAN and length >= 4:
        info["interval_s"] = int.from_bytes(data[:4], "big")
    elif length:
        info["data"] = data.hex()
    return Frame(kind, (), None, info)


def _measurement(data: bytes, info: dict[str, object]) -> Frame:
    if not data:
        return Frame("data", (), "no-new-data", info)
    if len(data) == 40:
        values: tuple[float, ...] = _FLOATS.unpack(data)
    elif len(data) == 20:
        raw = _UINTS.unpack(data)
        values = (*(float(v) for v in raw[:9]), raw[9] / 1000.0)  # size in nm -> µm
    else:
        return Frame("data", (), "unknown-format", info | {"data": data.hex()})
    return _measurement_values(values, info)


def _measurement_values(values: tuple[float, ...], info: dict[str, object]) -> Frame:
    if not any(values):
        return Frame("data", (), "warm-up", info)
    if not math.isfinite(sum(values)) or min(values) < 0:  # NaN/inf poison the sum
        return Frame("data", (), "invalid", info)
    return Frame("data", tuple(map(_reading, _QUANTITIES, values)), None, info)


def _reading_fast(quantity: str, value: float) -> Reading:
    """Build a Reading without the frozen-dataclass ``__init__`` (about a third cheaper; ten
    of them per frame are most of the decode time). Only used while ``Reading`` has exactly
    the two slots (checked at import); otherwise the normal constructor is used."""
    r = _new(Reading)
    _set_quantity(r, quantity)
    _set_value(r, value)
    return r


_new = object.__new__
_reading: Callable[[str, float], Reading] = Reading
if getattr(Reading, "__slots__", None) == ("quantity", "value"):
    _set_quantity = vars(Reading)["quantity"].__set__
    _set_value = vars(Reading)["value"].__set__
    _reading = _reading_fast


# --- host -> sensor commands ------------------------------------------------------------------


def command(cmd: int, data: bytes = b"", addr: int = ADDR) -> bytes:
    """Build a stuffed MOSI frame ``7E ADR CMD LEN DATA CHK 7E``."""
    body = bytes([addr, cmd, len(data)]) + data
    return bytes([FLAG]) + stuff(body + bytes([shdlc_checksum(body)])) + bytes([FLAG])


def cmd_start_measurement(float_output: bool = True) -> bytes:
    """Start measuring: big-endian float output (0x03) or uint16 (0x05, firmware ≥ 2.0)."""
    return command(CMD_START, bytes([0x01, 0x03 if float_output else 0x05]))


def cmd_stop_measurement() -> bytes:
    return command(CMD_STOP)


def cmd_read_measured_values() -> bytes:
    """Read the latest measurement (reply LEN 0 = no new data since the last read)."""
    return command(CMD_READ)


def cmd_sleep() -> bytes:
    """Enter sleep (allowed in idle mode only; stop the measurement first)."""
    return command(CMD_SLEEP)


def cmd_wake(with_pulse: bool = True) -> bytes:
    """Wake from sleep; the UART needs a lone byte first (``WAKE_PULSE``) to notice."""
    frame = command(CMD_WAKE)
    return WAKE_PULSE + frame if with_pulse else frame


def cmd_fan_cleaning() -> bytes:
    """Run the fan at full speed for 10 s (measurement mode only)."""
    return command(CMD_FAN_CLEAN)


def cmd_read_auto_clean_interval() -> bytes:
    return command(CMD_AUTO_CLEAN, b"\x00")


def cmd_serial_number() -> bytes:
    """Read the serial number (device information, parameter 0x03; read-only)."""
    return command(CMD_DEVICE_INFO, b"\x03")


def cmd_product_type() -> bytes:
    return command(CMD_DEVICE_INFO, b"\x00")


def cmd_version() -> bytes:
    """Read firmware/hardware/SHDLC versions (read-only)."""
    return command(CMD_VERSION)


def cmd_device_status(clear: bool = False) -> bytes:
    """Read the device status register (optionally clearing it)."""
    return command(CMD_STATUS, bytes([1 if clear else 0]))


def cmd_reset() -> bytes:
    return command(CMD_RESET)


@dataclass(frozen=True, slots=True)
class Command:
    """A decoded host -> sensor (MOSI) frame."""

    addr: int
    cmd: int
    data: bytes


def parse_command(frame: bytes) -> Command | None:
    """Decode one stuffed MOSI frame including its delimiters; ``None`` if invalid."""
    if len(frame) < 6 or frame[0] != FLAG or frame[-1] != FLAG:
        return None
    body = unstuff(frame[1:-1])
    if body is None or len(body) < 4 or body[2] != len(body) - 4:
        return None
    if shdlc_checksum(body[:-1]) != body[-1]:
        return None
    return Command(body[0], body[1], bytes(body[3:-1]))


def reply(cmd: int, data: bytes = b"", state: int = 0, addr: int = ADDR) -> bytes:
    """Build a stuffed MISO frame (for emulators and tests)."""
    body = bytes([addr, cmd, state, len(data)]) + data
    return bytes([FLAG]) + stuff(body + bytes([shdlc_checksum(body)])) + bytes([FLAG])


def data_frame(values: dict[str, float]) -> bytes:
    """Encode a float measurement reply; an empty dict gives the all-zero warm-up reply."""
    return reply(CMD_READ, _FLOATS.pack(*(values.get(q, 0.0) for q in _QUANTITIES)))


# Lifecycle (see edge.codec.SerialCommands):
# What a polling source sends: start once, then read every interval.
# Duty cycling: sleep is only allowed in idle mode, so stop first; wake then start again.
# Read-only queries a source sends once after opening the port: serial number and firmware
# version go into every observation's provenance.
# Run by the gateway on a schedule (weekly by default, `fan_cleaning_interval_s` option):
# the sensor's own auto-cleaning counter restarts at every power cycle.
DESCRIPTOR = SensorDescriptor(
    name="sps30",
    model="SPS30",
    manufacturer="Sensirion",
    interface="serial",
    quantities=_QUANTITIES,
    decoder=Sps30Decoder,
    serial=SerialSettings(baudrate=115200),
    default_interval_s=1.0,
    warmup_s=30.0,  # datasheet: 8–30 s start-up time to specified accuracy
    # Read-only: the version request changes nothing and is answered in every state but
    # sleep; the SPS30 never talks unprompted.
    probe=cmd_version(),
    commands=SerialCommands(
        start=(cmd_wake(), cmd_start_measurement()),
        identify=(cmd_serial_number(), cmd_version()),
        poll=cmd_read_measured_values(),
        sleep=(cmd_stop_measurement(), cmd_sleep()),
        wake=(cmd_wake(), cmd_start_measurement()),
    ),
    maintenance=(
        Maintenance(
            name="fan_cleaning",
            command=cmd_fan_cleaning(),
            option="fan_cleaning_interval_s",
            default_interval_s=7 * 86400.0,
            discard_s=15.0,  # the sensor reports inflated values during its 10 s clean
        ),
    ),
)
