"""What each onboarded firmware node said about itself, for ``provision register``.

A node describes its sensors only in its hello (``[name, model, [quantity codes]]``), so
``provision node add`` keeps that description in ``<config stem>.nodes.json`` beside the
gateway config (``/etc/duet-edge/gateway.nodes.json``), keyed by the source the node was
assigned to. ``register`` turns each record into the Datastreams the gateway will fill:

* ``node_serial`` sources: ``<source>.<node id>.<sensor name>`` per quantity of each sensor,
  with the sensor's model (``edge.node.session``);
* ``node_ble`` sources: ``<source>.<last 8 hex digits of the node id>`` per quantity the
  advertisement can carry (``edge.node.ble``; ``nodeproto.BLE_IDS``).

The file sits beside the config rather than in ``data_dir`` because ``node add`` runs before
the gateway service has ever created its data directory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from edge.model import Datastream
from edge.quantities import QUANTITIES
from firmware import nodeproto
from provisioning.secrets import write_public

NODE_SOURCE_TYPES = ("node_serial", "node_ble")
BLE_SENSOR_MODEL = "duet-edge node (BLE)"  # as edge.node.ble.NodeBleSource's provenance
Transport = Literal["serial", "ble"]
SensorSpec = tuple[str, str, tuple[str, ...]]


class NodeRecordError(ValueError):
    """The records file cannot be used; the message names the file and the fix."""


@dataclass(frozen=True, slots=True)
class NodeRecord:
    source: str
    node_id: str
    firmware: str
    kind: str
    sensors: tuple[SensorSpec, ...]
    transport: Transport
    port: str = ""
    added_at: str = ""

    @property
    def short_id(self) -> str:
        """The node's id in BLE adverts: the low 32 bits of its id, 8 hex digits."""
        return self.node_id[-8:]

    def datastreams(self, gateway_id: str) -> list[tuple[Datastream, str]]:
        """(Datastream, sensor model) pairs the gateway will fill from this node."""
        if self.transport == "ble":
            codes = [q for _name, _model, quantities in self.sensors for q in quantities
                     if q in nodeproto.BLE_IDS and q in QUANTITIES]
            sensor_id = f"{self.source}.{self.short_id}"
            return [(Datastream(gateway_id, sensor_id, q), BLE_SENSOR_MODEL)
                    for q in dict.fromkeys(codes)]
        return [
            (Datastream(gateway_id, f"{self.source}.{self.node_id}.{name}", q), model)
            for name, model, quantities in self.sensors
            for q in quantities if q in QUANTITIES
        ]

    def describe(self) -> str:
        return f"node {self.node_id}: " + ", ".join(f"{s[0]} ({s[1]})" for s in self.sensors)


def records_path(config_path: Path) -> Path:
    config_path = Path(config_path)
    return config_path.with_name(f"{config_path.stem}.nodes.json")


def load(config_path: Path) -> dict[str, list[NodeRecord]]:
    """Records by source name (empty when no node was ever added)."""
    path = records_path(config_path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {source: [_record(source, entry) for entry in entries]
                for source, entries in raw["sources"].items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise NodeRecordError(f"{path} is unreadable ({type(exc).__name__}: {exc}); delete it "
                              "and run `duet-edge provision node add` again for each node") from None


def _record(source: str, entry: dict[str, object]) -> NodeRecord:
    sensors = entry["sensors"]
    if not isinstance(sensors, list):
        raise TypeError("sensors is not a list")
    transport = entry["transport"]
    if transport not in ("serial", "ble"):
        raise ValueError(f"transport {transport!r}")
    return NodeRecord(
        source=source, node_id=str(entry["node_id"]), firmware=str(entry["firmware"]),
        kind=str(entry.get("kind", "")),
        sensors=tuple((str(s[0]), str(s[1]), tuple(str(q) for q in s[2])) for s in sensors),
        transport="ble" if transport == "ble" else "serial",
        port=str(entry.get("port", "")), added_at=str(entry.get("added_at", "")),
    )


def save(config_path: Path, record: NodeRecord) -> Path:
    """Add or replace ``record``: a serial source holds one node, a BLE source one per id."""
    records = load(config_path)
    kept = [r for r in records.get(record.source, [])
            if record.transport == "ble" and r.node_id != record.node_id]
    stamped = NodeRecord(**{**asdict(record), "added_at": record.added_at or _now()})
    records[record.source] = [*kept, stamped]
    body = {"sources": {source: [_entry(r) for r in rs] for source, rs in sorted(records.items())}}
    path = records_path(config_path)
    write_public(path, (json.dumps(body, indent=2) + "\n").encode())
    return path


def _entry(record: NodeRecord) -> dict[str, object]:
    entry = asdict(record)
    del entry["source"]
    entry["sensors"] = [[name, model, list(qs)] for name, model, qs in record.sensors]
    return entry


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
