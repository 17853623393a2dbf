"""Plantower PMS5003 / PMS7003 / PMSA003: codec (`codec.py`), emulator (`emulator.py`), vectors and README in this folder."""

from edge.plugins import Sensor
from edge.sensors.pms5003.codec import DESCRIPTOR

SENSOR = Sensor(DESCRIPTOR)
