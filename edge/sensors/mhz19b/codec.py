"""Winsen MH-Z19B (NDIR CO2, UART 9600 8N1, polled).

Wire format (Winsen MH-Z19B user manual v1.0; vectors in ``edge/sensors/mhz19b/vectors.json``):

- request, 9 bytes: ``FF 01 CMD b3..b7 CS``;
- response, 9 bytes: ``FF CMD b2..b7 CS``;
- CS = (0xFF − sum(bytes 1..7) + 1) & 0xFF, i.e. the two's complement of the byte sum.

Read response ``FF 86 HH LL TT SS xx xx CS``: CO2 = HH·256 + LL ppm. TT − 40 is an internal
temperature in °C and SS a status byte; both are undocumented (drivers disagree), so they go
to ``Frame.info``, never to readings. An all-zero payload means the sensor is still preheating.
The sensor only talks when asked: poll with :func:`cmd_read`.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.codec import (
    BufferedDecoder,
    Frame,
    Reading,
    SensorDescriptor,
    SerialCommands,
    SerialSettings,
)

START = 0xFF
SENSOR_NO = 0x01
FRAME_LEN = 9

CMD_READ = 0x86
CMD_ABC = 0x79
CMD_ZERO = 0x87
CMD_SPAN = 0x88
CMD_RANGE = 0x99
CMD_ABC_STATUS = 0x7D
CMD_FIRMWARE = 0xA0

# Replies the decoder accepts (byte 1); anything else after FF is not a response frame.
_REPLY_KIND = {
    CMD_READ: "data",
    CMD_ABC: "abc",
    CMD_ZERO: "zero_calibration",
    CMD_SPAN: "span_calibration",
    CMD_RANGE: "range",
    CMD_ABC_STATUS: "abc_status",
    CMD_FIRMWARE: "version",
}


def checksum(frame: bytes | bytearray) -> int:
    """Checksum of a 9-byte frame (over bytes 1..7)."""
    return (0x100 - (sum(frame[1:8]) & 0xFF)) & 0xFF


class Mhz19bDecoder(BufferedDecoder):
    """Incremental MH-Z19B response decoder.

    Bad-frame reasons in ``stats.bad``: ``garbage``, ``header`` (``FF`` followed by a byte that
    is no known response), ``checksum``. A frame failing its checksum is dropped only up to the
    next ``FF`` inside it, so a real frame starting there is still found.
    """

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        out: list[Frame] = []
        pos = 0
        end = len(buf)
        while pos < end:
            start = buf.find(START, pos)
            if start < 0:
                self._discard(end - pos, "garbage")
                pos = end
                break
            if start > pos:
                self._discard(start - pos, "garbage")
                pos = start
            if end - pos < 2:
                break
            if buf[pos + 1] not in _REPLY_KIND:
                self._discard(1, "header")
                pos += 1
                continue
            if end - pos < FRAME_LEN:
                break
            if checksum(buf[pos : pos + FRAME_LEN]) != buf[pos + 8]:
                nxt = buf.find(START, pos + 1, pos + FRAME_LEN)
                n = nxt - pos if nxt > 0 else FRAME_LEN
                self._discard(n, "checksum")
                pos += n
                continue
            frame = _decode(bytes(buf[pos : pos + FRAME_LEN]))
            pos += FRAME_LEN
            self.stats.frames_ok += 1
            self._in_garbage = False
            if frame.skip_reason is not None:
                self.stats.frames_skipped += 1
            out.append(frame)
        if pos:
            del buf[:pos]
        return out


def _decode(frame: bytes) -> Frame:
    cmd = frame[1]
    kind = _REPLY_KIND[cmd]
    if cmd == CMD_READ:
        if not any(frame[2:8]):
            return Frame("data", (), "warm-up")
        co2 = (frame[2] << 8) | frame[3]
        info: dict[str, object] = {"temperature_c": frame[4] - 40, "status": frame[5]}
        return Frame("data", (Reading("co2", float(co2)),), None, info)
    if cmd == CMD_ABC_STATUS:
        return Frame(kind, (), None, {"abc": bool(frame[7])})
    if cmd == CMD_FIRMWARE:
        text = bytes(frame[2:6]).decode("ascii", "replace")
        return Frame(kind, (), None, {"firmware": text})
    return Frame(kind, (), None, {"reply": bytes(frame[2:8]).hex()})


# --- host -> sensor commands ------------------------------------------------------------------


def command(cmd: int, data: bytes = b"") -> bytes:
    """Build a 9-byte request ``FF 01 CMD d3..d7 CS`` (``data`` up to 5 bytes)."""
    if len(data) > 5:
        raise ValueError(f"MH-Z19B command data is at most 5 bytes, got {len(data)}")
    body = bytearray([START, SENSOR_NO, cmd]) + data.ljust(5, b"\x00")
    body.append(0)
    body[8] = checksum(body)
    return bytes(body)


def cmd_read() -> bytes:
    """Read the CO2 concentration (read-only; also the `scan` probe)."""
    return command(CMD_READ)


def cmd_abc(on: bool) -> bytes:
    """Automatic baseline correction on/off (ABC assumes 400 ppm is reached once a day)."""
    return command(CMD_ABC, bytes([0xA0 if on else 0x00]))


def cmd_abc_status() -> bytes:
    """Ask whether ABC is on (read-only; byte 7 of the reply; firmware-dependent)."""
    return command(CMD_ABC_STATUS)


def cmd_firmware_version() -> bytes:
    """Ask for the firmware version string (read-only; firmware-dependent)."""
    return command(CMD_FIRMWARE)


def technician_zero_calibration() -> bytes:
    """TECHNICIAN ONLY: declare the current air to be 400 ppm.

    Run only after ≥ 20 min in outdoor air; done anywhere else it shifts every later reading.
    Never sent by the gateway on its own.
    """
    return command(CMD_ZERO)


def technician_span_calibration(ppm: int = 2000) -> bytes:
    """TECHNICIAN ONLY: declare the current gas to be ``ppm`` (do a zero calibration first)."""
    if not 1000 <= ppm <= 5000:
        raise ValueError(f"span calibration must be 1000..5000 ppm, got {ppm}")
    return command(CMD_SPAN, ppm.to_bytes(2, "big"))


def cmd_detection_range(ppm: int = 5000) -> bytes:
    """Set the detection range (2000, 5000 or 10000 ppm; layout per common drivers)."""
    if ppm not in (2000, 5000, 10000):
        raise ValueError(f"detection range must be 2000, 5000 or 10000 ppm, got {ppm}")
    return command(CMD_RANGE, bytes([0, 0, 0]) + ppm.to_bytes(2, "big"))


@dataclass(frozen=True, slots=True)
class Command:
    """A decoded host -> sensor request."""

    cmd: int
    data: bytes  # bytes 3..7


def parse_command(frame: bytes) -> Command | None:
    """Decode one 9-byte request; ``None`` if it is not a valid MH-Z19B request."""
    if len(frame) != FRAME_LEN or frame[0] != START or frame[1] != SENSOR_NO:
        return None
    if checksum(frame) != frame[8]:
        return None
    return Command(frame[2], bytes(frame[3:8]))


def response(cmd: int, data: bytes) -> bytes:
    """Build a 9-byte response ``FF CMD d2..d7 CS`` (for emulators and tests)."""
    body = bytearray([START, cmd]) + data.ljust(6, b"\x00")[:6]
    body.append(0)
    body[8] = checksum(body)
    return bytes(body)


def data_frame(co2: float, temperature_c: int = 26, status: int = 0) -> bytes:
    """Encode a read response; ``co2 == 0`` gives the all-zero preheat frame."""
    ppm = max(0, min(0xFFFF, round(co2)))
    if ppm == 0:
        return response(CMD_READ, b"")
    return response(CMD_READ, ppm.to_bytes(2, "big") + bytes([temperature_c + 40, status]))


# Lifecycle (see edge.codec.SerialCommands):
# What a polling source sends: nothing at start, then POLL every interval.
# No sleep mode (the NDIR lamp pulses on its own): nothing to send for duty cycling.
DESCRIPTOR = SensorDescriptor(
    name="mhz19b",
    model="MH-Z19B",
    manufacturer="Winsen",
    interface="serial",
    quantities=("co2",),
    decoder=Mhz19bDecoder,
    serial=SerialSettings(baudrate=9600),
    default_interval_s=5.0,
    warmup_s=180.0,  # datasheet preheat time; readings before it are not trustworthy
    # The sensor never talks unprompted, so `scan` must ask: "read CO2" changes nothing.
    probe=cmd_read(),
    commands=SerialCommands(
        poll=cmd_read(),
    ),
)
