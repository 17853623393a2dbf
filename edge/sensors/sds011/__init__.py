"""Nova Fitness SDS011: codec (`codec.py`), emulator (`emulator.py`), vectors and README in this folder."""

from edge.plugins import Sensor
from edge.sensors.sds011.codec import DESCRIPTOR

SENSOR = Sensor(DESCRIPTOR)
