"""Winsen MH-Z19B emulator: answers "read CO2" (preheat zeros first), ABC on/off/status,
and records (but does not emulate the effect of) technician calibrations."""

from __future__ import annotations

import os
from typing import Unpack

from edge.emulation.base import EmulatorOptions, SensorEmulator, split_fixed
from edge.sensors.mhz19b import codec as codec


class Mhz19bEmulator(SensorEmulator):
    """An MH-Z19B on a pseudo-terminal; it never talks unprompted.

    Only "read CO2" and "ABC status" are answered: the datasheet documents no reply for the
    setting commands, so the emulator gives none (the codec still accepts one, as some
    firmware sends it).
    """

    descriptor = codec.DESCRIPTOR
    checksum_offset = -1

    def __init__(
        self,
        link_path: str | os.PathLike[str] | None = None,
        **kwargs: Unpack[EmulatorOptions],
    ) -> None:
        super().__init__(link_path, **kwargs)
        self.abc = True  # factory default
        self.calibrations: list[str] = []  # technician commands received, in order

    @property
    def streaming(self) -> bool:
        return False

    def sample(self, hour: float) -> dict[str, float]:
        return {"co2": self.series.co2(hour)}

    def make_frame(self, values: dict[str, float]) -> bytes:
        return codec.data_frame(values.get("co2", 0.0), temperature_c=22)

    def split_commands(self, buf: bytearray) -> list[bytes]:
        return split_fixed(buf, bytes([codec.START, codec.SENSOR_NO]), codec.FRAME_LEN)

    def handle_command(self, raw: bytes) -> bytes:
        cmd = codec.parse_command(raw)
        if cmd is None:
            return b""
        if cmd.cmd == codec.CMD_READ:
            self.emit_data()
        elif cmd.cmd == codec.CMD_ABC:
            self.abc = cmd.data[0] == 0xA0
        elif cmd.cmd == codec.CMD_ABC_STATUS:
            return codec.response(codec.CMD_ABC_STATUS, bytes([0, 0, 0, 0, 0, int(self.abc)]))
        elif cmd.cmd == codec.CMD_ZERO:
            self.calibrations.append("zero")
        elif cmd.cmd == codec.CMD_SPAN:
            self.calibrations.append(f"span {int.from_bytes(cmd.data[:2], 'big')}")
        return b""


EMULATOR = Mhz19bEmulator
