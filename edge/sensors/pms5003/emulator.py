"""Plantower PMS5003/7003 emulator: active/passive mode, passive read, sleep/wake with acks,
as described in ``edge.sensors.pms5003.codec``."""

from __future__ import annotations

from edge.emulation.base import SensorEmulator, split_fixed
from edge.sensors.pms5003 import codec as codec


class Pms5003Emulator(SensorEmulator):
    """A PMS5003 on a pseudo-terminal (power-on state: active mode, awake)."""

    descriptor = codec.DESCRIPTOR
    checksum_offset = -1

    passive = False

    @property
    def streaming(self) -> bool:
        return not self.sleeping and not self.passive

    def sample(self, hour: float) -> dict[str, float]:
        v = self.series.pm(hour)
        # indoor-calibrated "CF=1" values read higher than atmospheric ones above ~30 µg/m³;
        # below that the two coincide on real sensors
        for q in ("pm1", "pm2_5", "pm10"):
            v[f"{q}_cf1"] = v[q] if v[q] < 30 else 30 + (v[q] - 30) * 1.5
        return v

    def make_frame(self, values: dict[str, float]) -> bytes:
        return codec.data_frame(values)

    def split_commands(self, buf: bytearray) -> list[bytes]:
        return split_fixed(buf, codec.HEAD, codec.COMMAND_LEN)

    def handle_command(self, raw: bytes) -> bytes:
        cmd = codec.parse_command(raw)
        if cmd is None:
            return b""
        if cmd.cmd == codec.CMD_SLEEP:
            if cmd.data:
                if self.sleeping:
                    self.wake()
                return b""  # wake has no ack
            self.sleeping = True
            return codec.ack_frame(codec.CMD_SLEEP, 0)
        if self.sleeping:
            return b""
        if cmd.cmd == codec.CMD_MODE:
            self.passive = cmd.data == 0
            return codec.ack_frame(codec.CMD_MODE, cmd.data)
        if cmd.cmd == codec.CMD_READ and self.passive:
            self.emit_data()
        return b""


EMULATOR = Pms5003Emulator
