"""Nova Fitness SDS011 (PM2.5 / PM10 laser scattering sensor, UART 9600 8N1).

Wire format (Nova Fitness "Laser Dust Sensor Control Protocol V1.3"; vectors in
``edge/sensors/sds011/vectors.json``):

- data frame, 10 bytes: ``AA C0 PM25_L PM25_H PM10_L PM10_H ID1 ID2 CS AB``, PM in 0.1 µg/m³,
  little-endian; CS = sum(bytes 2..7) & 0xFF;
- reply frame, 10 bytes: ``AA C5 CMD d1 d2 d3 ID1 ID2 CS AB``, same checksum rule;
- command frame, 19 bytes: ``AA B4 CMD d1..d12 ID1 ID2 CS AB``, CS = sum(bytes 2..16) & 0xFF,
  ID ``FF FF`` addresses every sensor on the line.

The sensor has no "invalid" sentinel; during warm-up (after power-on or wake) both PM fields are
0, which is returned as a skipped frame, never as a zero reading.
"""

from __future__ import annotations

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

HEAD = 0xAA
TAIL = 0xAB
CMD_DATA = 0xC0  # measurement frame (active mode or reply to "query data")
CMD_REPLY = 0xC5  # reply to a command
CMD_HOST = 0xB4  # host -> sensor command frame
FRAME_LEN = 10
COMMAND_LEN = 19
BROADCAST = 0xFFFF

# command ids (byte 2 of command and reply frames)
REPORT_MODE = 0x02
QUERY_DATA = 0x04
SET_DEVICE_ID = 0x05
SLEEP_WORK = 0x06
FIRMWARE = 0x07
WORKING_PERIOD = 0x08

_REPLY_KIND = {
    REPORT_MODE: "report_mode",
    SET_DEVICE_ID: "device_id",
    SLEEP_WORK: "sleep_work",
    FIRMWARE: "version",
    WORKING_PERIOD: "working_period",
}

_DATA = struct.Struct("<HH")
_Q_PM25 = "pm2_5"
_Q_PM10 = "pm10"


def _checksum(data: bytes | bytearray | memoryview) -> int:
    return sum(data) & 0xFF


class Sds011Decoder(BufferedDecoder):
    """Incremental SDS011 decoder (data frames and command replies).

    Bad-frame reasons counted in ``stats.bad``: ``garbage`` (a run of bytes before a start
    marker), ``header`` (``AA`` not followed by ``C0``/``C5``), ``tail`` (no ``AB`` at byte 9:
    truncated or misaligned frame), ``checksum``, ``reply`` (unknown reply command).
    ``stats.frames_ok`` counts every well-formed frame returned; ``stats.frames_skipped`` the
    subset returned without readings because of a ``skip_reason``.
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
                self._discard(end - pos, "garbage")
                pos = end
                break
            if start > pos:
                self._discard(start - pos, "garbage")
                pos = start
            if end - pos < 2:
                break
            kind = buf[pos + 1]
            if kind != CMD_DATA and kind != CMD_REPLY:
                self._discard(1, "header")
                pos += 1
                continue
            if end - pos < FRAME_LEN:
                break
            if buf[pos + 9] != TAIL:
                pos += self._reject(buf, pos, "tail")
                continue
            if sum(buf[pos + 2 : pos + 8]) & 0xFF != buf[pos + 8]:
                pos += self._reject(buf, pos, "checksum")
                continue
            frame = self._decode(buf, pos, kind)
            pos += FRAME_LEN
            if frame is None:
                stats.bad["reply"] += 1
                stats.bytes_discarded += FRAME_LEN
                continue
            stats.frames_ok += 1
            self._in_garbage = False
            if frame.skip_reason is not None:
                stats.frames_skipped += 1
            out.append(frame)
        if pos:
            del buf[:pos]
        return out

    def _reject(self, buf: bytearray, pos: int, reason: str) -> int:
        """Drop a bad frame candidate up to the next start marker inside it; return its size.

        Never skipping past a start marker means a real frame that begins inside a truncated
        or corrupted one is still found.
        """
        nxt = buf.find(HEAD, pos + 1, pos + FRAME_LEN)
        n = nxt - pos if nxt > 0 else FRAME_LEN
        self._discard(n, reason)
        return n

    @staticmethod
    def _decode(buf: bytearray, pos: int, kind: int) -> Frame | None:
        device_id = f"{buf[pos + 6]:02X}{buf[pos + 7]:02X}"
        if kind == CMD_DATA:
            pm25, pm10 = _DATA.unpack_from(buf, pos + 2)
            if pm25 == 0 and pm10 == 0:
                return Frame("data", (), "warm-up", {"device_id": device_id})
            return Frame(
                "data",
                (Reading(_Q_PM25, pm25 / 10), Reading(_Q_PM10, pm10 / 10)),
                None,
                {"device_id": device_id},
            )
        return decode_reply(bytes(buf[pos : pos + FRAME_LEN]), device_id)


def decode_reply(frame: bytes, device_id: str) -> Frame | None:
    """Decode a checksum-valid ``AA C5`` reply frame into ``Frame(kind, info=...)``."""
    cmd, d1, d2, d3 = frame[2], frame[3], frame[4], frame[5]
    kind = _REPLY_KIND.get(cmd)
    if kind is None:
        return None
    info: dict[str, object] = {"device_id": device_id}
    if cmd == FIRMWARE:
        info["firmware"] = f"{2000 + d1:04d}-{d2:02d}-{d3:02d}"
    elif cmd == REPORT_MODE:
        info["set"] = bool(d1)
        info["mode"] = "query" if d2 else "active"
    elif cmd == SLEEP_WORK:
        info["set"] = bool(d1)
        info["working"] = bool(d2)
    elif cmd == WORKING_PERIOD:
        info["set"] = bool(d1)
        info["period_min"] = d2
    return Frame(kind, (), None, info)


# --- host -> sensor commands ------------------------------------------------------------------


def command(cmd: int, data: bytes = b"", device_id: int = BROADCAST) -> bytes:
    """Build a 19-byte command frame: ``cmd`` with up to 12 data bytes for ``device_id``."""
    if len(data) > 12:
        raise ValueError(f"SDS011 command data is at most 12 bytes, got {len(data)}")
    if not 0 <= device_id <= 0xFFFF:
        raise ValueError(f"device_id must be 0..0xFFFF, got {device_id:#x}")
    body = bytes([cmd]) + data.ljust(12, b"\x00") + device_id.to_bytes(2, "big")
    return bytes([HEAD, CMD_HOST]) + body + bytes([_checksum(body), TAIL])


def cmd_report_mode(query: bool, device_id: int = BROADCAST) -> bytes:
    """Set the report mode: ``query=False`` = active (unprompted ~1 Hz), ``True`` = query."""
    return command(REPORT_MODE, bytes([1, 1 if query else 0]), device_id)


def cmd_get_report_mode(device_id: int = BROADCAST) -> bytes:
    """Ask for the current report mode (read-only)."""
    return command(REPORT_MODE, bytes([0, 0]), device_id)


def cmd_query_data(device_id: int = BROADCAST) -> bytes:
    """Ask for one measurement (the reply is an ``AA C0`` data frame)."""
    return command(QUERY_DATA, b"", device_id)


def cmd_sleep(device_id: int = BROADCAST) -> bytes:
    """Stop fan and laser (extends the ~8000 h laser life)."""
    return command(SLEEP_WORK, bytes([1, 0]), device_id)


def cmd_wake(device_id: int = BROADCAST) -> bytes:
    """Restart fan and laser; readings are trustworthy after ~30 s."""
    return command(SLEEP_WORK, bytes([1, 1]), device_id)


def cmd_working_period(minutes: int, device_id: int = BROADCAST) -> bytes:
    """Set the working period: 0 = continuous, 1..30 = one reading every n minutes."""
    if not 0 <= minutes <= 30:
        raise ValueError(f"SDS011 working period must be 0..30 min, got {minutes}")
    return command(WORKING_PERIOD, bytes([1, minutes]), device_id)


def cmd_firmware_version(device_id: int = BROADCAST) -> bytes:
    """Ask for the firmware date (read-only; reply kind ``"version"``)."""
    return command(FIRMWARE, b"", device_id)


def cmd_set_device_id(new_id: int, device_id: int = BROADCAST) -> bytes:
    """Give the sensor addressed by ``device_id`` the new 16-bit id ``new_id``."""
    if not 0 <= new_id <= 0xFFFF:
        raise ValueError(f"new device id must be 0..0xFFFF, got {new_id:#x}")
    return command(SET_DEVICE_ID, bytes(10) + new_id.to_bytes(2, "big"), device_id)


@dataclass(frozen=True, slots=True)
class Command:
    """A decoded host -> sensor command (what an emulator or a sniffer sees)."""

    cmd: int
    data: bytes  # the 12 data bytes
    device_id: int

    @property
    def is_set(self) -> bool:
        return bool(self.data[0])


def parse_command(frame: bytes) -> Command | None:
    """Decode one 19-byte command frame; ``None`` if it is not a valid SDS011 command."""
    if (
        len(frame) != COMMAND_LEN
        or frame[0] != HEAD
        or frame[1] != CMD_HOST
        or frame[18] != TAIL
        or _checksum(frame[2:17]) != frame[17]
    ):
        return None
    return Command(frame[2], bytes(frame[3:15]), int.from_bytes(frame[15:17], "big"))


def data_frame(pm2_5: float, pm10: float, device_id: int = 0x58D9) -> bytes:
    """Encode a data frame (used by the emulator and tests); values clamp to 0..6553.5."""
    a = max(0, min(0xFFFF, round(pm2_5 * 10)))
    b = max(0, min(0xFFFF, round(pm10 * 10)))
    body = _DATA.pack(a, b) + device_id.to_bytes(2, "big")
    return bytes([HEAD, CMD_DATA]) + body + bytes([_checksum(body), TAIL])


def reply_frame(cmd: int, d1: int = 0, d2: int = 0, d3: int = 0, device_id: int = 0x58D9) -> bytes:
    """Encode an ``AA C5`` reply frame."""
    body = bytes([cmd, d1, d2, d3]) + device_id.to_bytes(2, "big")
    return bytes([HEAD, CMD_REPLY]) + body + bytes([_checksum(body), TAIL])


# Lifecycle (see edge.codec.SerialCommands):
# Active mode streams unprompted: a source sends nothing at start and never polls. (A source
# that wants query mode sends cmd_report_mode(query=True) and polls with cmd_query_data().)
# Duty cycling (spares the laser): what a source sends to sleep and to wake the sensor.
# Read-only queries a source sends once after opening the port: their replies carry the
# firmware date into provenance (the device id comes with every data frame).
DESCRIPTOR = SensorDescriptor(
    name="sds011",
    model="SDS011",
    manufacturer="Nova Fitness",
    interface="serial",
    quantities=("pm2_5", "pm10"),
    decoder=Sds011Decoder,
    serial=SerialSettings(baudrate=9600),
    default_interval_s=1.0,
    warmup_s=30.0,
    # Empty probe: from power-on the SDS011 is in active mode and sends a data frame about
    # every second, so `scan` just listens. Any command we could send (even the read-only
    # "get report mode") would be ignored by a sleeping sensor and, on some firmware,
    # answered with a frame that interleaves with the data stream; listening changes nothing.
    probe=b"",
    commands=SerialCommands(
        identify=(cmd_firmware_version(),),
        sleep=(cmd_sleep(),),
        wake=(cmd_wake(),),
    ),
)
