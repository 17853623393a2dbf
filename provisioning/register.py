"""`provision register`: create the gateway's entities at the twin, idempotently.

For every configured source and every quantity its sensor yields, the SensorThings uplink's
own registry (:meth:`SensorThingsHttpUplink.ensure_datastreams`) finds or creates the
Thing (with its Location), Sensor, ObservedProperty and Datastream, and caches the ids in
the gateway's data dir where the uplink reads them. Because entities are found by name before
anything is created, running ``register`` twice — even with the cache deleted — creates
nothing new.

History is never corrupted by a sensor swap: ``register`` remembers what sensor each source
had (type, model, serial) in ``<data_dir>/registration.json``. If a source's sensor changed
under the same name, the old Sensor and its Datastreams are *retired* — renamed
``<key>~retired-<UTC time>`` (name and ``properties.duetKey``, nothing else touched, their
observations stay) — and new ones are created for the new sensor, which the uplink uses from
then on.

``--dry-run`` only looks up (HTTP GET) and reports what exists and what would be created.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from edge import plugins
from edge import sensorthings as sta
from edge.config import GatewayConfig
from edge.model import Datastream
from edge.sensorthings import EntityId, GeoPoint
from edge.sensorthings.client import build_http_client
from edge.sensorthings.settings import REGISTRY_FILE_NAME, SensorThingsHttpSettings
from edge.uplinks.mqtt_settings import MqttSettings
from edge.uplinks.sensorthings_http import SensorThingsHttpUplink
from provisioning.config_edit import ConfigEdit
from provisioning.node_records import NODE_SOURCE_TYPES, NodeRecord
from provisioning.secrets import write_public

MANIFEST_NAME = "registration.json"
Progress = Callable[[int], None]
"""Called with the number of entities (dry run) or Datastreams (register) just handled."""


class RegisterError(ValueError):
    """Registration refused; the message says what to do."""


@dataclass(frozen=True, slots=True)
class SourceFingerprint:
    type: str
    model: str
    serial_number: str

    def describe(self) -> str:
        serial = f" #{self.serial_number}" if self.serial_number else ""
        return f"{self.type} ({self.model}{serial})"


@dataclass
class Plan:
    """What registration needs: (stream, sensor model) pairs and the site location."""

    gateway_id: str
    settings: SensorThingsHttpSettings
    data_dir: Path
    location: GeoPoint | None
    pairs: list[tuple[Datastream, str]]
    fingerprints: dict[str, SourceFingerprint]
    changed: dict[str, tuple[SourceFingerprint, SourceFingerprint]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # warnings for the technician


@dataclass(frozen=True, slots=True)
class PlannedEntity:
    kind: str
    name: str
    existing_id: EntityId | None

    @property
    def action(self) -> str:
        return "exists" if self.existing_id is not None else "create"


def read_site(path: Path) -> GeoPoint:
    """A site file (TOML or JSON) with ``latitude``, ``longitude`` and optional ``altitude``."""
    text = Path(path).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    try:
        lat, lon = float(data["latitude"]), float(data["longitude"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RegisterError(f"{path}: needs numeric 'latitude' and 'longitude' ({exc})") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise RegisterError(f"{path}: latitude {lat} / longitude {lon} out of range")
    alt = data.get("altitude")
    return GeoPoint(lon=lon, lat=lat, alt=float(alt) if alt is not None else None)


def make_plan(config: GatewayConfig, location: GeoPoint | None = None,
              nodes: Mapping[str, list[NodeRecord]] | None = None) -> Plan:
    """What to register for ``config``; firmware-node sources need their ``nodes`` records
    (what ``provision node add`` stored: each node's sensors, from its hello)."""
    settings = config.settings(SensorThingsHttpSettings)
    if settings is None:
        raise RegisterError("the config has no [uplinks.sensorthings_http] section to register at")
    gw = config.gateway
    if location is None and gw.latitude is not None and gw.longitude is not None:
        location = GeoPoint(lon=gw.longitude, lat=gw.latitude)
    pairs: list[tuple[Datastream, str]] = []
    fingerprints: dict[str, SourceFingerprint] = {}
    notes: list[str] = []
    for source in config.sources:
        if source.type in NODE_SOURCE_TYPES:
            records = (nodes or {}).get(source.name, [])
            _check_node_records(source.name, source.type, source.port, records, notes)
            fingerprints[source.name] = SourceFingerprint(
                source.type, "; ".join(r.describe() for r in records),
                ",".join(r.node_id for r in records))
            for record in records:
                pairs += record.datastreams(gw.id)
            continue
        try:
            desc = plugins.sensor(source.type).descriptor
        except KeyError as exc:
            raise RegisterError(str(exc)) from None
        fingerprints[source.name] = SourceFingerprint(source.type, desc.model, source.serial_number)
        pairs += [(Datastream(gw.id, source.name, q), desc.model) for q in desc.quantities]
    plan = Plan(gw.id, settings, gw.data_dir, location, pairs, fingerprints, notes=notes)
    plan.changed = _changed_sources(plan)
    return plan


def _check_node_records(name: str, type_name: str, port: str | None,
                        records: list[NodeRecord], notes: list[str]) -> None:
    if type_name == "node_serial" and not records:
        raise RegisterError(
            f"source {name!r} is a node_serial source without a node record: run "
            f"`duet-edge provision node add {port or 'PORT'}` first (it asks the node which "
            "sensors it has)")
    if type_name == "node_ble" and not records:
        notes.append(
            f"source {name!r} (node_ble): no node recorded, nothing registered for it; "
            f"onboard each node with `duet-edge provision node add PORT --ble-source {name}`")
    for record in records:
        if not record.datastreams(""):
            notes.append(f"source {name!r}: {record.describe()} reports no known quantity")


def _manifest_path(plan: Plan) -> Path:
    return plan.data_dir / MANIFEST_NAME


def _changed_sources(plan: Plan) -> dict[str, tuple[SourceFingerprint, SourceFingerprint]]:
    path = _manifest_path(plan)
    if not path.exists():
        return {}
    old = json.loads(path.read_text(encoding="utf-8"))
    if old.get("server") != plan.settings.base_url:
        return {}
    changed = {}
    for name, fp in plan.fingerprints.items():
        if fp.type in NODE_SOURCE_TYPES:
            continue  # another node has other sensor ids: nothing to retire
        before = old.get("sources", {}).get(name)
        if before is not None:
            prev = SourceFingerprint(**before)
            if prev != fp:
                changed[name] = (prev, fp)
    return changed


async def dry_run(plan: Plan, transport: httpx.AsyncBaseTransport | None = None,
                  progress: Progress | None = None) -> list[PlannedEntity]:
    """Look up every entity registration would need; nothing is created."""
    out: list[PlannedEntity] = []
    seen: set[tuple[str, str]] = set()
    async with build_http_client(plan.settings, transport) as http:
        async def find(kind: str, set_name: str, field: str, value: str, key: str) -> None:
            if (kind, value) in seen:
                return
            seen.add((kind, value))
            url = f"{plan.settings.base_url}/{set_name}"
            params = {"$filter": f"{field} eq {sta.odata_string(value)}", "$top": "100"}
            response = await http.get(url, params=params)
            response.raise_for_status()
            found = None
            for entity in response.json().get("value", []):
                props = entity.get("properties") or {}
                if props.get("duetKey") == key or kind == "ObservedProperty":
                    found = entity.get("@iot.id")
                    break
            out.append(PlannedEntity(kind, value, found))
            if progress is not None:
                progress(1)

        await find("Thing", "Things", "name", plan.gateway_id, sta.thing_key(plan.gateway_id))
        for stream, _model in plan.pairs:
            await find("Sensor", "Sensors", "name", sta.sensor_key(stream), sta.sensor_key(stream))
            q = stream.quantity
            await find("ObservedProperty", "ObservedProperties", "definition", q.uri,
                       sta.observed_property_key(q))
            await find("Datastream", "Datastreams", "name", sta.datastream_key(stream),
                       sta.datastream_key(stream))
    return out


async def register(
    plan: Plan, transport: httpx.AsyncBaseTransport | None = None,
    progress: Progress | None = None,
) -> dict[str, EntityId]:
    """Create what is missing; return ``datastream key → id`` and store the manifest."""
    uplink = SensorThingsHttpUplink(plan.settings, plan.gateway_id, plan.data_dir,
                                    location=plan.location, transport=transport)
    ids: dict[Datastream, EntityId] = {}
    async with uplink:
        if plan.changed:
            await _retire(plan, uplink, transport)
        for pair in plan.pairs:
            ids.update(await uplink.ensure_datastreams([pair]))
            if progress is not None:
                progress(1)
    by_key = {stream.key: ds_id for stream, ds_id in ids.items()}
    _write_manifest(plan, by_key)
    return by_key


async def _retire(
    plan: Plan, uplink: SensorThingsHttpUplink, transport: httpx.AsyncBaseTransport | None
) -> list[str]:
    """Rename the swapped-out sensor's Sensor and Datastreams so new ones take their keys.

    Only ``name`` and ``properties.duetKey``/``retiredAt`` change (PATCH); the entities and
    every observation they hold stay, so the old history reads exactly as before.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    retired: list[str] = []
    base = plan.settings.base_url
    async with build_http_client(plan.settings, transport) as http:
        for stream, _model in plan.pairs:
            if stream.sensor_id not in plan.changed:
                continue
            for set_name, key in (
                ("Datastreams", sta.datastream_key(stream)),
                ("Sensors", sta.sensor_key(stream)),
            ):
                response = await http.get(
                    f"{base}/{set_name}",
                    params={"$filter": f"name eq {sta.odata_string(key)}", "$top": "100"},
                )
                response.raise_for_status()
                for entity in response.json().get("value", []):
                    props = dict(entity.get("properties") or {})
                    if props.get("duetKey") != key:
                        continue
                    new_key = f"{key}~retired-{stamp}"
                    props.update(duetKey=new_key, retiredAt=stamp)
                    patch = await http.patch(
                        f"{base}/{sta.entity_path(set_name, entity['@iot.id'])}",
                        json={"name": new_key, "properties": props},
                    )
                    if patch.status_code >= 400:
                        raise RegisterError(
                            f"could not retire {set_name} {key!r} after a sensor swap "
                            f"(HTTP {patch.status_code}); nothing new was created"
                        )
                    retired.append(f"{set_name}: {key} → {new_key}")
            uplink.sender.registry.forget(stream)
            uplink.sender.registry.forget_sensor(stream)
    return retired


def give_to_data_dir_owner(plan: Plan) -> list[Path]:
    """Run as root, hand the files register wrote in ``data_dir`` (manifest, id cache) to
    the directory's owner — the service user, who updates the id cache when uploading."""
    import os

    if os.geteuid() != 0 or not plan.data_dir.is_dir():
        return []
    owner = plan.data_dir.stat()
    files = [_manifest_path(plan), plan.settings.registry_file or plan.data_dir / REGISTRY_FILE_NAME]
    given = [f for f in files if f.exists() and f.parent == plan.data_dir]
    for path in given:
        os.chown(path, owner.st_uid, owner.st_gid)
    return given


def _write_manifest(plan: Plan, datastreams: dict[str, EntityId]) -> None:
    path = _manifest_path(plan)
    old: dict[str, Any] = {}
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("server") != plan.settings.base_url:
            old = {}
    sources = dict(old.get("sources", {}))
    sources.update({name: vars_fp(fp) for name, fp in plan.fingerprints.items()})
    manifest = {
        "server": plan.settings.base_url,
        "gateway_id": plan.gateway_id,
        "sources": sources,
        "datastreams": {**old.get("datastreams", {}), **datastreams},
        "id_cache": str(plan.settings.registry_file or plan.data_dir / REGISTRY_FILE_NAME),
    }
    write_public(path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


def vars_fp(fp: SourceFingerprint) -> dict[str, str]:
    return {"type": fp.type, "model": fp.model, "serial_number": fp.serial_number}


_IDS_TABLE = ("uplinks", "mqtt", "datastream_ids")


def write_mqtt_datastream_ids(config_path: Path, ids: dict[str, EntityId]) -> bool:
    """Store ids for the MQTT uplink's SensorThings mode in ``[uplinks.mqtt.datastream_ids]``.

    The file is edited in place with tomlkit (comments and layout kept; keys already in the
    table keep their place, new ones are added), validated with the gateway's schema, then
    replaced atomically. Returns False when the config has no MQTT uplink in ``sensorthings``
    mode.
    """
    from edge.config import load_config, parse_config

    config = load_config(config_path)
    mqtt = config.settings(MqttSettings)
    if mqtt is None or mqtt.mode != "sensorthings":
        return False
    edit = ConfigEdit(config_path)
    comment = "written by `duet-edge provision register`: '<source>/<quantity>' → Datastream id"
    edit.merge_table(_IDS_TABLE, dict(sorted(ids.items())), comment)
    edit.save(lambda text: parse_config(text, source=str(config_path)))
    return True
