"""OmniPreSense OPS243 radar as a traffic counter: codec, Telraam-style aggregation
(`traffic.py`), its own source (`source.py`), emulator, vectors and README in this folder."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.plugins import Sensor, SerialOptions
from edge.seams import Source
from edge.sensors.ops243.codec import DESCRIPTOR
from edge.sensors.ops243.traffic import TrafficSettings

if TYPE_CHECKING:
    from edge.config import SourceSettings


class Ops243Options(SerialOptions, TrafficSettings):
    """``options`` of an OPS243 source: serial options plus how detections become counts."""


def _source(settings: SourceSettings, gateway_id: str) -> Source:
    from edge.sensors.ops243.source import RadarTrafficSource

    return RadarTrafficSource(settings, gateway_id)


SENSOR = Sensor(DESCRIPTOR, options=Ops243Options, source=_source)
