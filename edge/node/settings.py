"""Settings of the node sources, read from a source's ``options`` table in the gateway config.

    [[sources]]
    name = "air-node-1"
    type = "node_serial"
    port = "/dev/ttyUSB1"
    baudrate = 115200
    options = { state_path = "/var/lib/duet-edge/nodes.db", keepalive_s = 60 }

    [[sources]]
    name = "ble-nodes"
    type = "node_ble"
    options = { dedupe_window_s = 120 }
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_STATE_PATH = Path("/var/lib/duet-edge/nodes.db")


class NodeSerialOptions(BaseModel):
    """``options`` of a ``type = "node_serial"`` source."""

    model_config = ConfigDict(extra="forbid")

    state_path: Path = Field(
        DEFAULT_STATE_PATH,
        description="Marks file of versions before 0.9, migrated once into the outbox (which "
        "now keeps each node's last committed batch) and renamed <name>.migrated.",
    )
    keepalive_s: float = Field(
        60.0, gt=0, le=3600,
        description="After this long without a frame, ask the node for a hello (sync frame).",
    )
    commit_wait_s: float = Field(
        10.0, gt=0, le=120,
        description="How long to wait for the outbox to commit a batch before acking it anyway.",
    )
    baudrate: int = Field(115200, gt=0, description="Link speed if the source has no 'baudrate'.")


class NodeBleOptions(BaseModel):
    """``options`` of a ``type = "node_ble"`` source (broadcast-only nodes)."""

    model_config = ConfigDict(extra="forbid")

    dedupe_window_s: float = Field(
        120.0, gt=0, le=3600,
        description="An advert with the same (node, sequence byte) within this window is a repeat.",
    )
    stall_timeout_s: float = Field(
        600.0, gt=0, le=86400,
        description="No advertisement at all for this long: restart the scan (adapter gone).",
    )
    adapter: str | None = Field(
        None, description="Bluetooth adapter, e.g. hci0 (default: the system's)."
    )
