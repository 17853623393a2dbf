"""Winsen MH-Z19B: codec (`codec.py`), emulator (`emulator.py`), vectors and README in this folder."""

from edge.plugins import Sensor
from edge.sensors.mhz19b.codec import DESCRIPTOR

SENSOR = Sensor(DESCRIPTOR)
