"""Gateway side of the node protocol (docs/node-protocol.md).

The wire format itself lives in ``firmware/nodeproto.py``, shared with the MicroPython
firmware: this package only adds what a gateway needs around it (sessions, de-duplication
state, the serial and BLE sources), registered as the source kinds ``node_serial`` and
``node_ble``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.node.settings import NodeBleOptions, NodeSerialOptions
from edge.plugins import SourceKind
from edge.seams import Source
from firmware import nodeproto

if TYPE_CHECKING:
    from edge.config import SourceSettings

__all__ = ["NODE_BLE", "NODE_SERIAL", "nodeproto"]


def _node_serial(settings: SourceSettings, gateway_id: str) -> Source:
    from edge.node.serial_source import build_node_serial

    return build_node_serial(settings, gateway_id)


def _node_ble(settings: SourceSettings, gateway_id: str) -> Source:
    from edge.node.ble import build_node_ble  # needs the ``ble`` extra (bleak)

    return build_node_ble(settings, gateway_id)


NODE_SERIAL = SourceKind(
    name="node_serial",
    summary="duet-edge firmware node on a serial link (node protocol v1)",
    options=NodeSerialOptions,
    factory=_node_serial,
    needs_port=True,
)
NODE_BLE = SourceKind(
    name="node_ble",
    summary="duet-edge firmware nodes advertising over BLE",
    options=NodeBleOptions,
    factory=_node_ble,
    requires=("bleak",),
    extra="ble",
)
