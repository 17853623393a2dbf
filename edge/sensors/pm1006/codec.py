"""Cubic PM1006 (PM2.5, LED light scattering; the sensor inside the IKEA VINDRIKTNING), UART 9600 8N1.

Wire format (the request the VINDRIKTNING's microcontroller sends, documented at
revspace.nl/VINDRIKTNING, and published captures of the replies; vectors in
``edge/sensors/pm1006/vectors.json``):

- request (host → sensor): ``11 LEN CMD DATA… CS``; "read the particle measurement" is
  ``11 02 0B 01 E1``;
- reply (sensor → host), 20 bytes: ``16 11 0B DF1 … DF16 CS``, ``11`` = 17 bytes follow
  (the command echo and 16 data bytes);
- CS makes the byte sum of the whole frame 0 modulo 256 (request and reply alike).

PM2.5 in µg/m³ is ``DF3·256 + DF4`` (bytes 5–6, big-endian). The other data bytes are not
documented for the PM1006 (drivers that call DF7–8 "PM1" and DF11–12 "PM10" copy the PM1006K
layout; in captures DF7–8 reads ~800–1000 while PM2.5 is ~10, so it is not PM1): they are kept
in ``Frame.info["df"]`` as hex, never reported as readings.

The sensor only answers requests. Inside a VINDRIKTNING its microcontroller asks, and a tap on
the sensor's TX line sees replies arrive unprompted.
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

REQUEST = 0x11  # first byte of a host → sensor frame
REPLY = 0x16  # first byte of a sensor → host frame
CMD_READ_PM = 0x0B  # read the particle measurement
READ_PM_DATA = b"\x01"  # the argument the VINDRIKTNING sends with it
REPLY_LEN = 0x11  # command echo + 16 data bytes
FRAME_LEN = 3 + 16 + 1  # 20
REPLY_HEADER = bytes([REPLY, REPLY_LEN, CMD_READ_PM])
MAX_REQUEST_LEN = 16  # longest request body accepted by parse_command (bound for emulators)


def checksum(body: bytes | bytearray) -> int:
    """The byte that makes ``sum(body + [checksum]) % 256 == 0``."""
    return -sum(body) & 0xFF


class Pm1006Decoder(BufferedDecoder):
    """Incremental decoder of PM1006 measurement replies.

    Bad-frame reasons in ``stats.bad``: ``garbage`` (a run of bytes before a ``16``),
    ``header`` (``16`` not followed by ``11 0B``: another reply or a stray byte), ``checksum``
    (also what a truncated frame followed by the next one becomes). A candidate that fails
    its checksum is dropped only up to the next ``16`` inside it, so a real frame starting
    there is still found.
    """

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        out: list[Frame] = []
        pos = 0
        end = len(buf)
        while pos < end:
            start = buf.find(REPLY, pos)
            if start < 0:
                self._discard(end - pos, "garbage")
                pos = end
                break
            if start > pos:
                self._discard(start - pos, "garbage")
                pos = start
            have = min(end - pos, len(REPLY_HEADER))
            if buf[pos : pos + have] != REPLY_HEADER[:have]:
                self._discard(1, "header")
                pos += 1
                continue
            if end - pos < FRAME_LEN:
                break
            if sum(buf[pos : pos + FRAME_LEN]) & 0xFF:
                nxt = buf.find(REPLY, pos + 1, pos + FRAME_LEN)
                n = nxt - pos if nxt > 0 else FRAME_LEN
                self._discard(n, "checksum")
                pos += n
                continue
            out.append(_decode(buf, pos))
            self.stats.frames_ok += 1
            self._in_garbage = False
            pos += FRAME_LEN
        if pos:
            del buf[:pos]
        return out


def _decode(buf: bytearray, pos: int) -> Frame:
    pm2_5 = (buf[pos + 5] << 8) | buf[pos + 6]
    info: dict[str, object] = {"df": buf[pos + 3 : pos + 19].hex()}
    return Frame("data", (Reading("pm2_5", float(pm2_5)),), None, info)


# --- host → sensor ------------------------------------------------------------------------


def request(cmd: int, data: bytes = b"") -> bytes:
    """A request frame ``11 LEN CMD DATA… CS`` (LEN counts CMD and DATA)."""
    if len(data) + 1 > MAX_REQUEST_LEN:
        raise ValueError(f"PM1006 request body is at most {MAX_REQUEST_LEN} bytes")
    body = bytes([REQUEST, len(data) + 1, cmd]) + data
    return body + bytes([checksum(body)])


def cmd_read_pm() -> bytes:
    """Ask for one measurement (read-only): ``11 02 0B 01 E1``, as the VINDRIKTNING asks."""
    return request(CMD_READ_PM, READ_PM_DATA)


@dataclass(frozen=True, slots=True)
class Command:
    """A decoded host → sensor request (what an emulator or a sniffer sees)."""

    cmd: int
    data: bytes


def parse_command(frame: bytes) -> Command | None:
    """Decode one complete request; ``None`` if it is not a valid PM1006 request."""
    if len(frame) < 4 or frame[0] != REQUEST:
        return None
    length = frame[1]
    if not 1 <= length <= MAX_REQUEST_LEN or len(frame) != length + 3 or sum(frame) & 0xFF:
        return None
    return Command(frame[2], bytes(frame[3 : 2 + length]))


# --- sensor → host (emulator, tests) --------------------------------------------------------


def reply_frame(pm2_5: int, df: bytes = bytes(16)) -> bytes:
    """Encode a measurement reply: ``df`` (16 data bytes) with DF3–DF4 set to ``pm2_5``
    (clamped to 0…65535)."""
    if len(df) != 16:
        raise ValueError(f"PM1006 replies carry 16 data bytes, got {len(df)}")
    value = max(0, min(0xFFFF, pm2_5))
    data = df[:2] + value.to_bytes(2, "big") + df[4:]
    body = REPLY_HEADER + data
    return body + bytes([checksum(body)])


# Lifecycle (edge.codec.SerialCommands): the sensor only answers requests, so the generic
# serial source polls it; nothing to start, no identity to ask for (no documented command),
# no sleep. With options.polled_by = "vindriktning" the source sends nothing at all (see
# edge/sensors/pm1006/__init__.py).
DESCRIPTOR = SensorDescriptor(
    name="pm1006",
    model="PM1006",
    manufacturer="Cubic",
    interface="serial",
    quantities=("pm2_5",),
    decoder=Pm1006Decoder,
    serial=SerialSettings(baudrate=9600),
    # Our choice, not the sensor's: the IKEA firmware's own request rate is not documented;
    # 20 s matches the measurement pause of public VINDRIKTNING drivers and spares the LED.
    default_interval_s=20.0,
    # The IKEA firmware shows a start-up animation for ~10 s and public drivers run the fan
    # ~10 s before the first request: readings of the first 10 s are discarded.
    warmup_s=10.0,
    # The read request changes nothing; a directly wired PM1006 never talks unprompted.
    probe=cmd_read_pm(),
    commands=SerialCommands(poll=cmd_read_pm()),
)
