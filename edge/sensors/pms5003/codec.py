"""Plantower PMS5003 / PMS7003 / PMSA003 (PM1/PM2.5/PM10 + particle counts, UART 9600 8N1).

Wire format (Plantower PMS5003/PMS7003 datasheets; vectors in ``edge/sensors/pms5003/vectors.json``),
every field uint16 big-endian:

- data frame, 32 bytes: ``42 4D`` ``00 1C`` (length 28), PM1/PM2.5/PM10 "CF=1" (µg/m³),
  PM1/PM2.5/PM10 atmospheric (µg/m³), six particle counts >0.3/0.5/1/2.5/5/10 µm per 0.1 L,
  version byte, error byte, checksum = 16-bit sum of bytes 0..29;
- command ack, 8 bytes: ``42 4D 00 04 CMD DATA CS_H CS_L`` (same checksum rule);
- host command, 7 bytes: ``42 4D CMD DATAH DATAL CS_H CS_L``, CS = 16-bit sum of bytes 0..4.

The sensor starts in active mode (a frame every ~1 s, 200–800 ms in fast mode). An all-zero
payload means warm-up (fan spinning up); >0.3 µm count 0 with PM10 > 0 is physically
inconsistent. Both are returned as skipped frames, never as zero readings.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from edge.codec import (
    BufferedDecoder,
    Frame,
    Reading,
    SensorDescriptor,
    SerialCommands,
    SerialSettings,
)

HEAD = b"BM"  # 0x42 0x4D
DATA_LEN = 28
ACK_LEN = 4
FRAME_LEN = 4 + DATA_LEN  # 32
ACK_FRAME_LEN = 4 + ACK_LEN  # 8
COMMAND_LEN = 7

# command ids
CMD_MODE = 0xE1  # data 0 = passive, 1 = active
CMD_READ = 0xE2  # passive read
CMD_SLEEP = 0xE4  # data 0 = sleep, 1 = wake

_DATA = struct.Struct(">12HBBH")  # 12 values, version, error, checksum (from byte 4)
_QUANTITIES = (
    "pm1_cf1",
    "pm2_5_cf1",
    "pm10_cf1",
    "pm1",
    "pm2_5",
    "pm10",
    "nc0_3",
    "nc0_5",
    "nc1",
    "nc2_5",
    "nc5",
    "nc10",
)

_ACK_KIND = {CMD_MODE: "mode", CMD_SLEEP: "sleep_work", CMD_READ: "read"}


class Pms5003Decoder(BufferedDecoder):
    """Incremental PMS5003/7003 decoder (data frames and command acks).

    Bad-frame reasons counted in ``stats.bad``: ``garbage`` (bytes before a start marker),
    ``length`` (``42 4D`` followed by a length that is neither 28 nor 4), ``checksum``,
    ``ack`` (an ack for an unknown command). ``stats.frames_ok`` counts every well-formed frame
    returned, ``stats.frames_skipped`` the subset carrying a ``skip_reason``.
    """

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        out: list[Frame] = []
        pos = 0
        end = len(buf)
        stats = self.stats
        while pos < end:
            start = buf.find(HEAD, pos)
            if start < 0:
                # keep a trailing 0x42: it may be the first half of the next marker
                keep = 1 if buf[end - 1] == 0x42 else 0
                if end - keep > pos:
                    self._discard(end - keep - pos, "garbage")
                pos = end - keep
                break
            if start > pos:
                self._discard(start - pos, "garbage")
                pos = start
            if end - pos < 4:
                break
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            if length == DATA_LEN:
                size = FRAME_LEN
            elif length == ACK_LEN:
                size = ACK_FRAME_LEN
            else:
                self._discard(2, "length")
                pos += 2
                continue
            if end - pos < size:
                break
            body_end = pos + size - 2
            if sum(buf[pos:body_end]) & 0xFFFF != (buf[body_end] << 8) | buf[body_end + 1]:
                # drop up to the next start marker inside the candidate, never past it: a real
                # frame that begins inside a truncated or corrupted one is still found
                nxt = buf.find(HEAD, pos + 1, pos + size + 1)
                n = nxt - pos if nxt > 0 else size
                self._discard(n, "checksum")
                pos += n
                continue
            frame = _decode_data(buf, pos) if size == FRAME_LEN else _decode_ack(buf, pos)
            pos += size
            if frame is None:
                self._discard(size, "ack")
                continue
            stats.frames_ok += 1
            self._in_garbage = False
            if frame.skip_reason is not None:
                stats.frames_skipped += 1
            out.append(frame)
        if pos:
            del buf[:pos]
        return out


def _decode_data(buf: bytearray, pos: int) -> Frame:
    values = _DATA.unpack_from(buf, pos + 4)
    info: dict[str, object] = {"version": values[12], "error": values[13]}
    counts = values[:12]
    if not any(counts):
        return Frame("data", (), "warm-up", info)
    if counts[6] == 0 and counts[5] > 0:
        return Frame("data", (), "inconsistent", info)
    return Frame("data", tuple(map(_new_reading, _QUANTITIES, map(float, counts))), None, info)


def _reading_fast(quantity: str, value: float) -> Reading:
    """Build a Reading without the frozen-dataclass ``__init__``: about a third cheaper, and
    twelve of them per frame are most of the decode time. Only used while ``Reading`` has
    exactly these two slots (checked at import); otherwise the normal constructor is used."""
    r = _new(Reading)
    _set_quantity(r, quantity)
    _set_value(r, value)
    return r


_new = object.__new__
_new_reading: Callable[[str, float], Reading] = Reading
if getattr(Reading, "__slots__", None) == ("quantity", "value"):
    _set_quantity = vars(Reading)["quantity"].__set__
    _set_value = vars(Reading)["value"].__set__
    _new_reading = _reading_fast


def _decode_ack(buf: bytearray, pos: int) -> Frame | None:
    cmd, data = buf[pos + 4], buf[pos + 5]
    kind = _ACK_KIND.get(cmd)
    if kind is None:
        return None
    info: dict[str, object] = {"command": kind, "data": data}
    if cmd == CMD_MODE:
        info["mode"] = "active" if data else "passive"
    elif cmd == CMD_SLEEP:
        info["working"] = bool(data)
    return Frame("ack", (), None, info)


# --- host -> sensor commands ------------------------------------------------------------------


def command(cmd: int, data: int = 0) -> bytes:
    """Build a 7-byte command frame."""
    body = HEAD + bytes([cmd]) + data.to_bytes(2, "big")
    return body + (sum(body) & 0xFFFF).to_bytes(2, "big")


def cmd_passive_mode() -> bytes:
    """Switch to passive mode: the sensor only answers :func:`cmd_passive_read`."""
    return command(CMD_MODE, 0)


def cmd_active_mode() -> bytes:
    """Switch to active mode (the power-on default): a frame every ~1 s."""
    return command(CMD_MODE, 1)


def cmd_passive_read() -> bytes:
    """Request one data frame in passive mode."""
    return command(CMD_READ, 0)


def cmd_sleep() -> bytes:
    """Stop the fan (ack ``42 4D 00 04 E4 00 01 77``)."""
    return command(CMD_SLEEP, 0)


def cmd_wake() -> bytes:
    """Restart the fan (no ack; readings are trustworthy after ~30 s)."""
    return command(CMD_SLEEP, 1)


@dataclass(frozen=True, slots=True)
class Command:
    """A decoded host -> sensor command."""

    cmd: int
    data: int


def parse_command(frame: bytes) -> Command | None:
    """Decode one 7-byte command frame; ``None`` if it is not a valid PMS command."""
    if len(frame) != COMMAND_LEN or frame[:2] != HEAD:
        return None
    if sum(frame[:5]) & 0xFFFF != int.from_bytes(frame[5:7], "big"):
        return None
    return Command(frame[2], int.from_bytes(frame[3:5], "big"))


def data_frame(values: dict[str, float], version: int = 0x97, error: int = 0) -> bytes:
    """Encode a 32-byte data frame from quantity codes (missing ones are 0); for emulators."""
    fields = [max(0, min(0xFFFF, round(values.get(q, 0.0)))) for q in _QUANTITIES]
    body = HEAD + DATA_LEN.to_bytes(2, "big") + struct.pack(">12HBB", *fields, version, error)
    return body + (sum(body) & 0xFFFF).to_bytes(2, "big")


def ack_frame(cmd: int, data: int) -> bytes:
    """Encode an 8-byte command ack."""
    body = HEAD + ACK_LEN.to_bytes(2, "big") + bytes([cmd, data & 0xFF])
    return body + (sum(body) & 0xFFFF).to_bytes(2, "big")


# Lifecycle (see edge.codec.SerialCommands):
# Active mode (power-on default) streams unprompted: nothing to send at start, no polling.
# (Passive mode: send cmd_passive_mode() once, then poll with cmd_passive_read().)
# Duty cycling (spares the fan): what a source sends to sleep and to wake the sensor.
DESCRIPTOR = SensorDescriptor(
    name="pms5003",
    model="PMS5003 / PMS7003 / PMSA003",
    manufacturer="Plantower",
    interface="serial",
    quantities=_QUANTITIES,
    decoder=Pms5003Decoder,
    serial=SerialSettings(baudrate=9600),
    default_interval_s=1.0,
    warmup_s=30.0,
    # Empty probe: the sensor powers up in active mode and streams a frame every ~1 s, so
    # `scan` just listens. The only request that yields data, the passive read, is ignored
    # in active mode, and the mode command would change a setting.
    probe=b"",
    commands=SerialCommands(
        sleep=(cmd_sleep(),),
        wake=(cmd_wake(),),
    ),
)
