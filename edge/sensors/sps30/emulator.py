"""Sensirion SPS30 emulator (SHDLC): idle / measuring / sleep states, read with "no new data",
fan cleaning, serial number, version and status, as described in ``edge.sensors.sps30.codec``."""

from __future__ import annotations

import os
import time
from typing import Unpack

from edge.emulation.base import EmulatorOptions, SensorEmulator
from edge.sensors.sps30 import codec as codec

NOT_ALLOWED = 0x43
UNKNOWN_COMMAND = 0x02


class Sps30Emulator(SensorEmulator):
    """An SPS30 on a pseudo-terminal. Power-on state: idle (not measuring).

    A new measurement is available every ``interval_s`` while measuring; a read before that
    gets the "no new data" reply. Asleep, the UART is off: only the wake command is answered.
    """

    descriptor = codec.DESCRIPTOR
    checksum_offset = -2  # the CHK byte (or the second byte of its escape pair)

    def __init__(
        self,
        link_path: str | os.PathLike[str] | None = None,
        *,
        serial_number: str = "8A4C2F1E0D3B5A69",
        firmware: tuple[int, int] = (2, 2),
        **kwargs: Unpack[EmulatorOptions],
    ) -> None:
        super().__init__(link_path, **kwargs)
        self.serial_number = serial_number
        self.firmware = firmware
        self.state = "idle"
        self.fan_cleanings = 0
        self._sample_t = 0.0

    @property
    def streaming(self) -> bool:
        return False  # the SPS30 only answers requests

    def sample(self, hour: float) -> dict[str, float]:
        pm = self.series.pm(hour)
        pm4 = pm["pm2_5"] + 0.6 * (pm["pm10"] - pm["pm2_5"])
        ncm0_5 = pm["pm1"] * 5.0
        return {
            "pm1": pm["pm1"], "pm2_5": pm["pm2_5"], "pm4": pm4, "pm10": pm["pm10"],
            "ncm0_5": ncm0_5, "ncm1": ncm0_5 * 1.2, "ncm2_5": ncm0_5 * 1.25,
            "ncm4": ncm0_5 * 1.26, "ncm10": ncm0_5 * 1.262,
            "particle_size": 0.5 + 0.3 * self.rng.random(),
        }

    def make_frame(self, values: dict[str, float]) -> bytes:
        return codec.data_frame(values)

    def split_commands(self, buf: bytearray) -> list[bytes]:
        out: list[bytes] = []
        while True:
            start = buf.find(codec.FLAG)
            if start < 0:
                buf.clear()
                return out
            stop = buf.find(codec.FLAG, start + 1)
            if stop < 0:
                del buf[:start]
                return out
            if stop == start + 1:  # "7E 7E": the second flag opens the frame
                del buf[: start + 1]
                continue
            out.append(bytes(buf[start : stop + 1]))
            del buf[: stop + 1]

    def _reply(self, cmd: int, data: bytes = b"", state: int = 0) -> bytes:
        return codec.reply(cmd, data, state)

    def handle_command(self, raw: bytes) -> bytes:
        cmd = codec.parse_command(raw)
        if cmd is None or cmd.addr != codec.ADDR:
            return b""
        c = cmd.cmd
        if self.state == "sleep":
            if c == codec.CMD_WAKE:
                self.state = "idle"
                return self._reply(c)
            return b""
        if c == codec.CMD_START:
            if self.state == "measuring":
                return self._reply(c, state=NOT_ALLOWED)
            self.state = "measuring"
            self._warmup_left = self.warmup_frames
            self._sample_t = time.monotonic()
            return self._reply(c)
        if c == codec.CMD_STOP:
            self.state = "idle"
            return self._reply(c)
        if c == codec.CMD_READ:
            return self._read()
        if c == codec.CMD_SLEEP:
            if self.state != "idle":
                return self._reply(c, state=NOT_ALLOWED)
            self.state = "sleep"
            return self._reply(c)
        if c == codec.CMD_WAKE:
            return self._reply(c)
        if c == codec.CMD_FAN_CLEAN:
            if self.state != "measuring":
                return self._reply(c, state=NOT_ALLOWED)
            self.fan_cleanings += 1
            return self._reply(c)
        if c == codec.CMD_AUTO_CLEAN:
            return self._reply(c, (604800).to_bytes(4, "big"))
        if c == codec.CMD_DEVICE_INFO:
            text = self.serial_number if cmd.data[:1] == b"\x03" else "00080000"
            return self._reply(c, text.encode() + b"\x00")
        if c == codec.CMD_VERSION:
            major, minor = self.firmware
            return self._reply(c, bytes([major, minor, 0, 7, 0, 2, 0]))
        if c == codec.CMD_STATUS:
            return self._reply(c, bytes(5))
        if c == codec.CMD_RESET:
            self.state = "idle"
            return self._reply(c)
        return self._reply(c, state=UNKNOWN_COMMAND)

    def _read(self) -> bytes:
        if self.state != "measuring":
            return self._reply(codec.CMD_READ, state=NOT_ALLOWED)
        now = time.monotonic()
        if now - self._sample_t < self.interval_s:
            return self._reply(codec.CMD_READ)  # LEN 0: no new data
        self._sample_t = now
        self.emit_data()
        return b""


EMULATOR = Sps30Emulator
