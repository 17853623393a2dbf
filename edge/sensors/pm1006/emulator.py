"""Cubic PM1006 emulator: answers "read the particle measurement", either to the gateway or,
as inside an IKEA VINDRIKTNING, to the VINDRIKTNING's own microcontroller (then a tap on the
sensor's TX line sees a reply every ``interval_s`` without asking)."""

from __future__ import annotations

import os
from typing import Literal, Unpack

from edge.emulation.base import EmulatorOptions, SensorEmulator
from edge.sensors.pm1006 import codec as codec

# DF1…DF16 of a reply apart from PM2.5 (DF3–DF4): the undocumented bytes of a published
# capture (vectors.json, "tasmota"), so emulated frames look like real ones.
_CAPTURED_DF = bytes.fromhex("0000000c000003cb0000000c01000000")


class Pm1006Emulator(SensorEmulator):
    """A PM1006 on a pseudo-terminal.

    ``polled_by="gateway"`` (default): the sensor as sold, silent until asked; each valid
    read request gets one reply, other requests none (their replies are undocumented).
    ``polled_by="vindriktning"``: the VINDRIKTNING's microcontroller asks every
    ``interval_s``; the gateway only listens on the sensor's TX, so what it writes reaches
    nothing (it is recorded in ``commands_seen``, never answered).
    """

    descriptor = codec.DESCRIPTOR
    checksum_offset = -1

    def __init__(
        self,
        link_path: str | os.PathLike[str] | None = None,
        *,
        polled_by: Literal["gateway", "vindriktning"] = "gateway",
        **kwargs: Unpack[EmulatorOptions],
    ) -> None:
        super().__init__(link_path, **kwargs)
        self.polled_by = polled_by

    @property
    def streaming(self) -> bool:
        return self.polled_by == "vindriktning"

    def sample(self, hour: float) -> dict[str, float]:
        return {"pm2_5": float(round(self.series.pm(hour)["pm2_5"]))}  # whole µg/m³

    def make_frame(self, values: dict[str, float]) -> bytes:
        return codec.reply_frame(round(values.get("pm2_5", 0.0)), _CAPTURED_DF)

    def split_commands(self, buf: bytearray) -> list[bytes]:
        """Cut valid ``11 LEN … CS`` requests out of ``buf``; anything else is dropped."""
        out: list[bytes] = []
        while True:
            start = buf.find(codec.REQUEST)
            if start < 0:
                buf.clear()
                return out
            del buf[:start]
            if len(buf) < 2:
                return out
            length = buf[1]
            if not 1 <= length <= codec.MAX_REQUEST_LEN:
                del buf[:1]
                continue
            if len(buf) < length + 3:
                return out
            candidate = bytes(buf[: length + 3])
            if codec.parse_command(candidate) is None:  # a stray 11: resync one byte on
                del buf[:1]
                continue
            out.append(candidate)
            del buf[: length + 3]

    def handle_command(self, raw: bytes) -> bytes:
        if self.polled_by == "vindriktning":
            return b""  # the gateway's TX is not wired to the sensor
        cmd = codec.parse_command(raw)
        if cmd is not None and cmd.cmd == codec.CMD_READ_PM:
            self.emit_data()
        return b""


EMULATOR = Pm1006Emulator
