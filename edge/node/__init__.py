"""Gateway side of the node protocol (docs/node-protocol.md).

The wire format itself lives in ``firmware/nodeproto.py``, shared with the MicroPython
firmware: this package only adds what a gateway needs around it (sessions, de-duplication
state, the serial and BLE sources).
"""

from firmware import nodeproto

__all__ = ["nodeproto"]
