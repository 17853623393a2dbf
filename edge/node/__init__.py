"""Gateway side of the node protocol (docs/node-protocol.md).

The wire format itself lives in ``firmware/nodeproto.py``, shared with the MicroPython
firmware: this package only adds what a gateway needs around it (sessions, de-duplication
state, the serial and BLE sources).

The runtime registers the sources with::

    from edge.node import source_factories
    SOURCE_FACTORIES.update(source_factories())
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from firmware import nodeproto

__all__ = ["nodeproto", "source_factories"]


def _node_serial(settings: Any, gateway_id: str) -> Any:
    from edge.node.serial_source import build_node_serial

    return build_node_serial(settings, gateway_id)


def _node_ble(settings: Any, gateway_id: str) -> Any:
    from edge.node.ble import build_node_ble  # needs the ``ble`` extra (bleak)

    return build_node_ble(settings, gateway_id)


def source_factories() -> dict[str, Callable[[Any, str], Any]]:
    """Config ``type`` → factory ``(SourceSettings, gateway_id) -> Source`` (imports lazily)."""
    return {"node_serial": _node_serial, "node_ble": _node_ble}
