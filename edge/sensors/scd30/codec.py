"""Sensirion SCD30 (NDIR CO2 + temperature + humidity) over Modbus RTU (UART 19200 8N1).

Wire format (Sensirion "Interface Description SCD30"; vectors in ``edge/sensors/scd30/vectors.json``):
slave address 0x61; function 0x03 reads holding registers, 0x06 writes one register; every
frame ends with CRC-16/Modbus (reflected polynomial 0xA001, init 0xFFFF, low byte first).

- read reply: ``61 03 N data(N) CRC``; the measurement (6 registers, N = 12) is three
  big-endian float32: CO2 ppm, temperature °C, relative humidity %;
- write reply: an echo of the request ``61 06 REG VALUE CRC``;
- exception: ``61 83|86 CODE CRC``.

A 2-byte read reply does not say which register it answers (firmware version, data-ready...):
call :meth:`Scd30Decoder.expect` with the register just requested to name it; otherwise it is
returned as kind ``"register"``. All-zero measurements (before the first one is ready) are
skipped as warm-up, NaN as invalid.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from edge.codec import (
    BufferedDecoder,
    Frame,
    Reading,
    SensorDescriptor,
    SerialCommands,
    SerialSettings,
)

ADDRESS = 0x61
FN_READ = 0x03
FN_WRITE = 0x06

REG_FIRMWARE = 0x0020
REG_INTERVAL = 0x0025
REG_DATA_READY = 0x0027
REG_MEASUREMENT = 0x0028
REG_SOFT_RESET = 0x0034
REG_START = 0x0036
REG_STOP = 0x0037
REG_ALTITUDE = 0x0038
REG_FRC = 0x0039
REG_ASC = 0x003A
REG_TEMP_OFFSET = 0x003B

_REG_KIND = {
    REG_FIRMWARE: "version",
    REG_INTERVAL: "interval",
    REG_DATA_READY: "data_ready",
    REG_ALTITUDE: "altitude",
    REG_FRC: "forced_recalibration",
    REG_ASC: "asc",
    REG_TEMP_OFFSET: "temperature_offset",
}
_WRITE_KIND = {
    REG_START: "start",
    REG_STOP: "stop",
    REG_SOFT_RESET: "reset",
    REG_INTERVAL: "interval",
    REG_ALTITUDE: "altitude",
    REG_FRC: "forced_recalibration",
    REG_ASC: "asc",
    REG_TEMP_OFFSET: "temperature_offset",
}
_EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "slave device failure",
}
MAX_READ_BYTES = 2 * 125  # Modbus limit for one read

_MEAS = struct.Struct(">3f")


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16_modbus(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/Modbus (poly 0xA001 reflected, init 0xFFFF); append it low byte first."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


def with_crc(body: bytes) -> bytes:
    return body + crc16_modbus(body).to_bytes(2, "little")


class Scd30Decoder(BufferedDecoder):
    """Incremental decoder for SCD30 Modbus replies.

    Bad-frame reasons in ``stats.bad``: ``garbage`` (bytes before the slave address),
    ``header`` (address followed by an unknown function or an impossible byte count), ``crc``.
    A frame failing its CRC is dropped only up to the next ``0x61`` inside it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._expected: int | None = None

    def reset(self) -> None:
        super().reset()
        self._expected = None

    def expect(self, register: int) -> None:
        """Name the register of the next short read reply (the one just requested)."""
        self._expected = register

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        out: list[Frame] = []
        pos = 0
        end = len(buf)
        while pos < end:
            start = buf.find(ADDRESS, pos)
            if start < 0:
                self._discard(end - pos, "garbage")
                pos = end
                break
            if start > pos:
                self._discard(start - pos, "garbage")
                pos = start
            if end - pos < 3:
                break
            size = _frame_size(buf[pos + 1], buf[pos + 2])
            if size is None:
                self._discard(1, "header")
                pos += 1
                continue
            if end - pos < size:
                # A false header (0x61 0x03 with a large count inside noise) would make us
                # wait for bytes that never form a frame and hold good frames back: if a
                # complete, valid frame starts later in what we have, the header was not one.
                later = _next_valid_frame(buf, pos + 1, end)
                if later is None:
                    break
                self._discard(later - pos, "header")
                pos = later
                continue
            frame_end = pos + size
            if crc16_modbus(memoryview(buf)[pos : frame_end - 2]) != (
                buf[frame_end - 2] | (buf[frame_end - 1] << 8)
            ):
                nxt = buf.find(ADDRESS, pos + 1, frame_end)
                n = nxt - pos if nxt > 0 else size
                self._discard(n, "crc")
                pos += n
                continue
            frame = self._decode(bytes(buf[pos:frame_end]))
            pos = frame_end
            self.stats.frames_ok += 1
            self._in_garbage = False
            if frame.skip_reason is not None:
                self.stats.frames_skipped += 1
            out.append(frame)
        if pos:
            del buf[:pos]
        return out

    def _decode(self, frame: bytes) -> Frame:
        fn = frame[1]
        if fn & 0x80:
            code = frame[2]
            return Frame(
                "error",
                (),
                None,
                {
                    "function": fn & 0x7F,
                    "code": code,
                    "message": _EXCEPTIONS.get(code, "unknown exception"),
                },
            )
        if fn == FN_WRITE:
            reg = int.from_bytes(frame[2:4], "big")
            value = int.from_bytes(frame[4:6], "big")
            return Frame(_WRITE_KIND.get(reg, "write"), (), None, {"register": reg, "value": value})
        payload = frame[3:-2]
        if len(payload) == 12:
            self._expected = None
            return _measurement(payload)
        asked: int | None = self._expected
        self._expected = None
        words = [int.from_bytes(payload[i : i + 2], "big") for i in range(0, len(payload), 2)]
        info: dict[str, object] = {"register": asked, "words": words}
        if asked == REG_FIRMWARE and words:
            info["firmware"] = f"{words[0] >> 8}.{words[0] & 0xFF}"
        elif asked == REG_DATA_READY and words:
            info["ready"] = bool(words[0])
        elif words:
            info["value"] = words[0]
        kind = _REG_KIND.get(asked, "register") if asked is not None else "register"
        return Frame(kind, (), None, info)


def _next_valid_frame(buf: bytearray, start: int, end: int) -> int | None:
    """Position of the first complete frame with a valid CRC in ``buf[start:end]``."""
    pos = buf.find(ADDRESS, start, end)
    while 0 <= pos <= end - 5:
        size = _frame_size(buf[pos + 1], buf[pos + 2])
        if size is not None and pos + size <= end and crc16_modbus(
            memoryview(buf)[pos : pos + size - 2]
        ) == (buf[pos + size - 2] | (buf[pos + size - 1] << 8)):
            return pos
        pos = buf.find(ADDRESS, pos + 1, end)
    return None


def _frame_size(fn: int, third: int) -> int | None:
    """Total frame size from the function code and the byte after it (None: impossible)."""
    if fn == FN_READ:
        if third == 0 or third & 1 or third > MAX_READ_BYTES:
            return None
        return 3 + third + 2
    if fn == FN_WRITE:
        return 8
    if fn in (FN_READ | 0x80, FN_WRITE | 0x80):
        return 5
    return None


def _measurement(payload: bytes) -> Frame:
    co2, temp, rh = _MEAS.unpack(payload)
    if co2 == 0 and temp == 0 and rh == 0:
        return Frame("data", (), "warm-up")
    if not (math.isfinite(co2) and math.isfinite(temp) and math.isfinite(rh)):
        return Frame("data", (), "invalid")
    return Frame(
        "data",
        (
            Reading("co2", co2),
            Reading("temperature", temp),
            Reading("humidity", rh),
        ),
    )


# --- host -> sensor commands ------------------------------------------------------------------


def read_registers(register: int, count: int) -> bytes:
    """Build a function 0x03 request for ``count`` registers from ``register``."""
    return with_crc(
        bytes([ADDRESS, FN_READ]) + register.to_bytes(2, "big") + count.to_bytes(2, "big")
    )


def write_register(register: int, value: int) -> bytes:
    """Build a function 0x06 request."""
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"register value must be 0..65535, got {value}")
    return with_crc(
        bytes([ADDRESS, FN_WRITE]) + register.to_bytes(2, "big") + value.to_bytes(2, "big")
    )


def cmd_read_measurement() -> bytes:
    return read_registers(REG_MEASUREMENT, 6)


def cmd_read_firmware() -> bytes:
    """Read the firmware version (read-only; the `scan` probe)."""
    return read_registers(REG_FIRMWARE, 1)


def cmd_data_ready() -> bytes:
    return read_registers(REG_DATA_READY, 1)


def cmd_start_continuous(pressure_mbar: int = 0) -> bytes:
    """Start continuous measurement; ``pressure_mbar`` 700..1400 compensates, 0 = none."""
    if pressure_mbar != 0 and not 700 <= pressure_mbar <= 1400:
        raise ValueError(f"ambient pressure must be 0 (off) or 700..1400 mbar, got {pressure_mbar}")
    return write_register(REG_START, pressure_mbar)


def cmd_stop_continuous() -> bytes:
    return write_register(REG_STOP, 1)


def cmd_set_interval(seconds: int) -> bytes:
    """Measurement interval, 2..1800 s."""
    if not 2 <= seconds <= 1800:
        raise ValueError(f"SCD30 measurement interval must be 2..1800 s, got {seconds}")
    return write_register(REG_INTERVAL, seconds)


def cmd_asc(on: bool) -> bytes:
    """Automatic self-calibration on/off."""
    return write_register(REG_ASC, 1 if on else 0)


def technician_forced_recalibration(ppm: int) -> bytes:
    """TECHNICIAN ONLY: declare the current air to be ``ppm`` (400..2000) CO2."""
    if not 400 <= ppm <= 2000:
        raise ValueError(f"forced recalibration reference must be 400..2000 ppm, got {ppm}")
    return write_register(REG_FRC, ppm)


def cmd_soft_reset() -> bytes:
    return write_register(REG_SOFT_RESET, 1)


@dataclass(frozen=True, slots=True)
class Command:
    """A decoded Modbus request."""

    function: int
    register: int
    value: int  # register count for reads, value for writes


def parse_command(frame: bytes) -> Command | None:
    """Decode one 8-byte request (function 3 or 6); ``None`` if invalid."""
    if len(frame) != 8 or frame[0] != ADDRESS or frame[1] not in (FN_READ, FN_WRITE):
        return None
    if crc16_modbus(frame[:6]) != int.from_bytes(frame[6:8], "little"):
        return None
    return Command(frame[1], int.from_bytes(frame[2:4], "big"), int.from_bytes(frame[4:6], "big"))


def read_reply(payload: bytes) -> bytes:
    return with_crc(bytes([ADDRESS, FN_READ, len(payload)]) + payload)


def exception_reply(function: int, code: int) -> bytes:
    return with_crc(bytes([ADDRESS, function | 0x80, code]))


def data_frame(values: dict[str, float]) -> bytes:
    """Encode a measurement reply (empty dict: the all-zero warm-up reply)."""
    return read_reply(
        _MEAS.pack(
            values.get("co2", 0.0), values.get("temperature", 0.0), values.get("humidity", 0.0)
        )
    )


# Lifecycle (see edge.codec.SerialCommands):
# What a polling source sends: start continuous measurement once, then read every interval.
# Duty cycling: stop / restart continuous measurement (reads in between return the last value).
DESCRIPTOR = SensorDescriptor(
    name="scd30",
    model="SCD30",
    manufacturer="Sensirion",
    interface="serial",
    quantities=("co2", "temperature", "humidity"),
    decoder=Scd30Decoder,
    serial=SerialSettings(baudrate=19200),
    default_interval_s=2.0,
    warmup_s=10.0,  # first measurement after start; full accuracy needs longer (docs)
    probe=cmd_read_firmware(),  # read-only register read; the SCD30 never talks unprompted
    commands=SerialCommands(
        start=(cmd_start_continuous(0),),
        poll=cmd_read_measurement(),
        sleep=(cmd_stop_continuous(),),
        wake=(cmd_start_continuous(0),),
    ),
)
