"""Ruuvi Innovations RuuviTag (formats 3, 5) / Ruuvi Air (formats 6, E1) (BLE advertisements, read by the `ble` source): codec, vectors, README."""

from edge.plugins import Sensor
from edge.sensors.ruuvi.codec import DESCRIPTOR

SENSOR = Sensor(DESCRIPTOR)
