"""``type = "ble"``: one BLE scanner for every advertising sensor, as a source kind."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.ble.settings import BleSourceOptions
from edge.plugins import SourceKind
from edge.seams import Source

if TYPE_CHECKING:
    from edge.config import SourceSettings


def _build(settings: SourceSettings, gateway_id: str) -> Source:
    from edge.ble.source import BleSource  # needs the ``ble`` extra (bleak)

    return BleSource(settings, gateway_id)


KIND = SourceKind(
    name="ble",
    summary="BLE advertising sensors (RuuviTag, Ruuvi Air, Aranet4) through one scanner",
    options=BleSourceOptions,
    factory=_build,
    requires=("bleak",),
    extra="ble",
)
