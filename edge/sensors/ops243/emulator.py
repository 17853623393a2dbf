"""OmniPreSense OPS243-A radar emulator: per-object JSON reports (``ON``) at random times, from
a traffic mix of pedestrians, two-wheelers, cars and lorries; answers the two-letter commands.

The ground truth (true class, speed, direction of every object sent) is kept in ``truth`` so
tests can measure how well the speed-band heuristic of :mod:`edge.sensors.ops243.traffic` does.
"""

from __future__ import annotations

import json
import os
import time
from typing import Unpack

from edge.emulation.base import EmulatorOptions, SensorEmulator
from edge.sensors.ops243 import codec as codec

_UNIT_BY_COMMAND = {b"US": "mph", b"UK": "kmh", b"UM": "mps", b"UC": "cmps", b"UF": "fps"}
# class -> (share of traffic, mean km/h, sd km/h)
TRAFFIC_MIX = {
    "pedestrian": (0.10, 4.5, 1.0),
    "bike": (0.15, 18.0, 4.0),
    "car": (0.68, 45.0, 9.0),
    "heavy": (0.07, 40.0, 6.0),
}


class Ops243Emulator(SensorEmulator):
    """An OPS243-A on a pseudo-terminal.

    Objects arrive as a Poisson process with mean gap ``interval_s``; each is reported once
    (the real radar may repeat a report when it sees a higher speed: ``repeat_prob``).
    """

    descriptor = codec.DESCRIPTOR
    checksum_offset = -4  # no checksum on the wire: breaks the JSON (closing quote)

    def __init__(
        self,
        link_path: str | os.PathLike[str] | None = None,
        *,
        units: str = "kmh",
        repeat_prob: float = 0.0,
        **kwargs: Unpack[EmulatorOptions],
    ) -> None:
        kwargs.setdefault("interval_s", 2.0)
        super().__init__(link_path, **kwargs)
        self.units = units
        self.repeat_prob = repeat_prob
        self.json_output = True
        self.object_reports = True
        self.object_count = 0
        self.truth: list[tuple[str, float, str]] = []
        self._direction = "inbound"

    @property
    def streaming(self) -> bool:
        return self.object_reports

    def current_interval(self) -> float:
        return self.rng.expovariate(1.0 / self.interval_s)

    def sample(self, hour: float) -> dict[str, float]:
        (cls,) = self.rng.choices(list(TRAFFIC_MIX), [m[0] for m in TRAFFIC_MIX.values()])
        _, mean, sd = TRAFFIC_MIX[cls]
        speed = max(1.5, self.rng.gauss(mean, sd))
        self._direction = "inbound" if self.rng.random() < 0.5 else "outbound"
        self.truth.append((cls, speed, self._direction))
        self.object_count += 1
        return {"speed": speed}

    def make_frame(self, values: dict[str, float]) -> bytes:
        line = codec.object_report(values.get("speed", 0.0), self._direction,
                                   time.time(), self.units)
        if values and self.rng.random() < self.repeat_prob:  # a second, faster report
            line += codec.object_report(values["speed"] + 1.0, self._direction,
                                        time.time() + 0.2, self.units)
        return line

    def split_commands(self, buf: bytearray) -> list[bytes]:
        text = bytes(buf).replace(b"\r", b"").replace(b"\n", b"")
        buf.clear()
        n = len(text) - len(text) % 2
        buf += text[n:]
        return [text[i : i + 2] for i in range(0, n, 2)]

    def _line(self, obj: dict[str, object]) -> bytes:
        return json.dumps(obj).encode() + b"\r\n"

    def handle_command(self, raw: bytes) -> bytes:
        if raw in _UNIT_BY_COMMAND:
            self.units = _UNIT_BY_COMMAND[raw]
            return self._line({"Units": self.units})
        if raw in (b"OJ", b"Oj"):
            self.json_output = raw == b"OJ"  # reports stay JSON: see module docstring
            return b""
        if raw in (b"ON", b"On"):
            self.object_reports = raw == b"ON"
            return b""
        if raw == b"N?":
            return self._line({"DetectedObjectCount": self.object_count})
        if raw == b"N!":
            self.object_count = 0
            return b""
        if raw == b"??":
            return self._line({"Product": "OPS243-A", "Version": "1.2.3-emulated"})
        return b""


EMULATOR = Ops243Emulator
