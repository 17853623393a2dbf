"""Sensirion SCD30: codec (`codec.py`), emulator (`emulator.py`), vectors and README in this folder."""

from edge.plugins import Sensor
from edge.sensors.scd30.codec import DESCRIPTOR

SENSOR = Sensor(DESCRIPTOR)
