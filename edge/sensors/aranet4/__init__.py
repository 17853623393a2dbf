"""SAF Tehnika Aranet4 (BLE advertisements, read by the `ble` source): codec, vectors, README."""

from edge.plugins import Sensor
from edge.sensors.aranet4.codec import DESCRIPTOR

SENSOR = Sensor(DESCRIPTOR)
