"""Nova Fitness SDS011 emulator: active/query report mode, sleep/wake, working period,
firmware version and device id, as described in ``edge.sensors.sds011.codec``."""

from __future__ import annotations

import os
from typing import Unpack

from edge.emulation.base import EmulatorOptions, SensorEmulator, split_fixed
from edge.sensors.sds011 import codec as codec


class Sds011Emulator(SensorEmulator):
    """An SDS011 on a pseudo-terminal.

    Sleeping, it only answers the sleep/work command (common drivers wake the sensor before
    any other command, so nothing relies on more). In query mode it sends a data frame only
    when asked. A working period of n minutes sends one frame every ``n * minute_s`` seconds.
    """

    descriptor = codec.DESCRIPTOR
    checksum_offset = -2  # AA C0 ... CS AB

    def __init__(
        self,
        link_path: str | os.PathLike[str] | None = None,
        *,
        device_id: int = 0x58D9,
        firmware: tuple[int, int, int] = (18, 11, 16),
        **kwargs: Unpack[EmulatorOptions],
    ) -> None:
        super().__init__(link_path, **kwargs)
        self.device_id = device_id
        self.firmware = firmware
        self.query_mode = False
        self.working_period = 0

    @property
    def streaming(self) -> bool:
        return not self.sleeping and not self.query_mode

    def current_interval(self) -> float:
        if self.working_period:
            return self.working_period * self.minute_s
        return self.interval_s

    def sample(self, hour: float) -> dict[str, float]:
        pm = self.series.pm(hour)
        return {"pm2_5": pm["pm2_5"], "pm10": pm["pm10"]}

    def make_frame(self, values: dict[str, float]) -> bytes:
        return codec.data_frame(values.get("pm2_5", 0.0), values.get("pm10", 0.0), self.device_id)

    def split_commands(self, buf: bytearray) -> list[bytes]:
        return split_fixed(buf, bytes([codec.HEAD, codec.CMD_HOST]), codec.COMMAND_LEN)

    def _reply(self, cmd: int, d1: int = 0, d2: int = 0, d3: int = 0) -> bytes:
        return codec.reply_frame(cmd, d1, d2, d3, self.device_id)

    def handle_command(self, raw: bytes) -> bytes:
        cmd = codec.parse_command(raw)
        if cmd is None or cmd.device_id not in (codec.BROADCAST, self.device_id):
            return b""
        if self.sleeping and cmd.cmd != codec.SLEEP_WORK:
            return b""
        d = cmd.data
        if cmd.cmd == codec.REPORT_MODE:
            if cmd.is_set:
                self.query_mode = bool(d[1])
            return self._reply(codec.REPORT_MODE, d[0], int(self.query_mode))
        if cmd.cmd == codec.QUERY_DATA:
            self.emit_data()
            return b""
        if cmd.cmd == codec.SLEEP_WORK:
            if cmd.is_set:
                if d[1] and self.sleeping:
                    self.wake()
                elif not d[1]:
                    self.sleeping = True
            return self._reply(codec.SLEEP_WORK, d[0], int(not self.sleeping))
        if cmd.cmd == codec.WORKING_PERIOD:
            if cmd.is_set and d[1] <= 30:
                self.working_period = d[1]
            return self._reply(codec.WORKING_PERIOD, d[0], self.working_period)
        if cmd.cmd == codec.FIRMWARE:
            return self._reply(codec.FIRMWARE, *self.firmware)
        if cmd.cmd == codec.SET_DEVICE_ID:
            self.device_id = int.from_bytes(d[10:12], "big")
            return self._reply(codec.SET_DEVICE_ID)
        return b""


EMULATOR = Sds011Emulator
