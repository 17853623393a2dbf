"""Sensirion SCD30 emulator (Modbus RTU slave 0x61): continuous measurement with pressure
compensation, data-ready flag, interval, ASC, firmware version; exceptions for the rest."""

from __future__ import annotations

import os
import time
from typing import Unpack

from edge.emulation.base import EmulatorOptions, SensorEmulator, split_fixed
from edge.sensors.scd30 import codec as codec

ILLEGAL_ADDRESS = 0x02


class Scd30Emulator(SensorEmulator):
    """An SCD30 on a pseudo-terminal; it answers Modbus requests and never talks unprompted.

    Before "start continuous measurement" a measurement read returns zeros (recorded as a
    warm-up frame); afterwards a new value is ready every ``interval_s`` seconds.
    """

    descriptor = codec.DESCRIPTOR
    checksum_offset = -1  # high byte of the CRC

    def __init__(
        self,
        link_path: str | os.PathLike[str] | None = None,
        *,
        firmware: tuple[int, int] = (3, 66),
        **kwargs: Unpack[EmulatorOptions],
    ) -> None:
        super().__init__(link_path, **kwargs)
        self.firmware = firmware
        self.measuring = False
        self.pressure_mbar = 0
        self.asc = False
        self.writes: list[tuple[int, int]] = []
        self._sample_t = 0.0
        self._last: dict[str, float] = {}

    @property
    def streaming(self) -> bool:
        return False

    def sample(self, hour: float) -> dict[str, float]:
        return {
            "co2": self.series.co2(hour),
            "temperature": self.series.temperature(hour),
            "humidity": self.series.humidity(hour),
        }

    def make_frame(self, values: dict[str, float]) -> bytes:
        return codec.data_frame(values)

    def split_commands(self, buf: bytearray) -> list[bytes]:
        return split_fixed(buf, bytes([codec.ADDRESS]), 8)

    def handle_command(self, raw: bytes) -> bytes:
        cmd = codec.parse_command(raw)
        if cmd is None:
            return b""  # a Modbus slave stays silent on a bad CRC
        if cmd.function == codec.FN_WRITE:
            return self._write(cmd.register, cmd.value, raw)
        return self._read(cmd.register, cmd.value)

    def _write(self, reg: int, value: int, raw: bytes) -> bytes:
        self.writes.append((reg, value))
        if reg == codec.REG_START:
            self.measuring, self.pressure_mbar = True, value
            self._sample_t = time.monotonic()
        elif reg == codec.REG_STOP:
            self.measuring = False
        elif reg == codec.REG_INTERVAL:
            self.interval_s = float(value)
        elif reg == codec.REG_ASC:
            self.asc = bool(value)
        elif reg == codec.REG_SOFT_RESET:
            self.measuring = False
        elif reg not in (codec.REG_ALTITUDE, codec.REG_FRC, codec.REG_TEMP_OFFSET):
            return codec.exception_reply(codec.FN_WRITE, ILLEGAL_ADDRESS)
        return raw  # a write is acknowledged by echoing it

    def _ready(self) -> bool:
        return self.measuring and time.monotonic() - self._sample_t >= self.interval_s

    def _read(self, reg: int, count: int) -> bytes:
        if reg == codec.REG_MEASUREMENT and count == 6:
            if self._ready():
                self._sample_t = time.monotonic()
                self._last = self.emit_data()
            elif self._last:
                self.emit_data(self._last)  # no new value yet: the last one again
            else:
                self._warmup_left = max(self._warmup_left, 1)  # zeros before the first value
                self.emit_data()
            return b""
        if count != 1:
            return codec.exception_reply(codec.FN_READ, ILLEGAL_ADDRESS)
        if reg == codec.REG_FIRMWARE:
            major, minor = self.firmware
            return codec.read_reply(bytes([major, minor]))
        if reg == codec.REG_DATA_READY:
            return codec.read_reply(int(self._ready()).to_bytes(2, "big"))
        if reg == codec.REG_INTERVAL:
            return codec.read_reply(int(self.interval_s).to_bytes(2, "big"))
        if reg == codec.REG_ASC:
            return codec.read_reply(int(self.asc).to_bytes(2, "big"))
        return codec.exception_reply(codec.FN_READ, ILLEGAL_ADDRESS)


EMULATOR = Scd30Emulator
