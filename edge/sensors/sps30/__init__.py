"""Sensirion SPS30: codec (`codec.py`), emulator (`emulator.py`), vectors and README here."""

from pydantic import Field

from edge.plugins import Sensor, SerialOptions
from edge.sensors.sps30.codec import DESCRIPTOR


class Sps30Options(SerialOptions):
    """``options`` of an SPS30 source."""

    fan_cleaning_interval_s: float | None = Field(
        None,
        ge=0,
        description="Fan cleaning period in seconds (default weekly; 0 turns it off). The "
        "sensor's own auto-clean counter restarts at every power cycle, so the gateway runs it.",
    )


SENSOR = Sensor(DESCRIPTOR, options=Sps30Options)
