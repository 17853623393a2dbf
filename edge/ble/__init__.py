"""BLE sensors: passive scanning for advertisements, and GATT polling, for every sensor folder
whose descriptor has a BLE part (:class:`edge.codec.BleCodec`); this package names none.

Public API: :class:`BleScanner` (``async with`` / ``async for``), :class:`BleReading`,
:class:`BleSettings` (the ``[ble]`` config section). Decoders live in the sensor folders
(``edge/sensors/<name>/codec.py``). See docs/ble.md.
"""

from edge.ble.scanner import BleReading, BleScanner, DeviceState, ScannerStats, discover
from edge.ble.settings import BleSettings, GattPollDevice

__all__ = [
    "BleReading",
    "BleScanner",
    "BleSettings",
    "DeviceState",
    "GattPollDevice",
    "ScannerStats",
    "discover",
]
