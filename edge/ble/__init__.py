"""BLE sensors: passive scanning for Ruuvi / Aranet4 advertisements and Aranet4 GATT polling.

Public API: :class:`BleScanner` (``async with`` / ``async for``), :class:`BleReading`,
:class:`BleSettings` (the ``[ble]`` config section). Decoders live in
:mod:`edge.sensors.ruuvi.codec` and :mod:`edge.sensors.aranet4.codec`. See docs/ble.md.
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
