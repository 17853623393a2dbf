"""Cubic PM1006, the PM2.5 sensor of the IKEA VINDRIKTNING: codec (`codec.py`), options and
source set-up (here), emulator (`emulator.py`), vectors and README in this folder."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from edge.codec import SerialCommands
from edge.plugins import Sensor, SerialOptions
from edge.seams import Source
from edge.sensors.pm1006.codec import DESCRIPTOR

if TYPE_CHECKING:
    from edge.config import SourceSettings

# What the source sends when the VINDRIKTNING's own microcontroller does the asking.
LISTEN_ONLY = SerialCommands()


class Pm1006Options(SerialOptions):
    """``options`` of a PM1006 source."""

    polled_by: Literal["gateway", "vindriktning"] = Field(
        "gateway",
        description="Who asks the sensor for readings: 'gateway' (wired to the sensor's RX "
        "and TX: the gateway polls) or 'vindriktning' (tapped on the sensor's TX inside an "
        "IKEA VINDRIKTNING whose microcontroller polls: the gateway never transmits).",
    )


def _source(settings: SourceSettings, gateway_id: str) -> Source:
    """The generic serial source; listen-only when the VINDRIKTNING polls the sensor."""
    from edge.sources.serial import SerialSource

    source = SerialSource(settings, gateway_id)
    if Pm1006Options.model_validate(settings.options).polled_by == "vindriktning":
        source.commands = LISTEN_ONLY
    return source


SENSOR = Sensor(DESCRIPTOR, options=Pm1006Options, source=_source)
