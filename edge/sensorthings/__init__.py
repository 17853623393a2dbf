"""The one mapping between :mod:`edge.model` objects and OGC SensorThings API v1.1 JSON.

Everything that writes SensorThings JSON (the gateway's HTTP uplink, the twin receiver's
forwarder, provisioning's ``register``) builds it here, so the entity layout cannot drift.

Entity layout (see docs/upload-contract-sensorthings.md):

- one **Thing** per gateway, ``name = gateway_id``;
- one **Sensor** per (gateway, sensor_id), ``name = "<gateway>/<sensor_id>"``;
- one **ObservedProperty** per quantity code, shared by all gateways, ``definition`` = the
  quantity URI from :mod:`edge.quantities`;
- one **Datastream** per :class:`edge.model.Datastream`, ``name = "<gateway>/<sensor>/<qty>"``.

Every entity carries ``properties.duetKey``: the stable key used to find it again before
creating it (idempotent registration).

Observations carry the QARTOD flags in ``resultQuality`` and the deterministic observation id
(:func:`edge.model.observation_id`) in ``parameters.obsId`` so a receiver can de-duplicate
retried uploads.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from edge.model import QC_NOT_EVALUATED, Datastream, Observation, observation_id
from edge.quantities import Quantity

JsonObject = dict[str, Any]
EntityId = str | int

OM_MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
UCUM_UOM_PREFIX = "http://www.opengis.net/def/uom/UCUM/0/"
SENSOR_DOC_PREFIX = "https://w3id.org/duet-edge/def/sensor/"
GEOJSON = "application/geo+json"

# Columns of a CreateObservations dataArray, in this order.
DATA_ARRAY_COMPONENTS: tuple[str, ...] = (
    "phenomenonTime",
    "resultTime",
    "result",
    "resultQuality",
    "parameters",
)

IntervalMode = Literal["interval", "end_instant"]


# ---------------------------------------------------------------------------------------
# Times and ids


def iso_ms(epoch_ms: int) -> str:
    """``1764064800123`` → ``"2025-11-25T10:00:00.123Z"`` (UTC, millisecond precision)."""
    stamp = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def phenomenon_time(obs: Observation, mode: IntervalMode = "interval") -> str:
    """An instant, or ``"start/end"`` for an interval (``mode="end_instant"`` degrades to end)."""
    if obs.phenomenon_end_ms is None:
        return iso_ms(obs.phenomenon_ms)
    if mode == "end_instant":
        return iso_ms(obs.phenomenon_end_ms)
    return f"{iso_ms(obs.phenomenon_ms)}/{iso_ms(obs.phenomenon_end_ms)}"


def entity_path(set_name: str, entity_id: EntityId) -> str:
    """``Datastreams(5)`` for numeric ids, ``Datastreams('a-b')`` for string ids."""
    if isinstance(entity_id, int):
        return f"{set_name}({entity_id})"
    return f"{set_name}('{entity_id.replace(chr(39), chr(39) * 2)}')"


def id_from_link(link: str) -> EntityId:
    """The entity id at the end of a self link / ``Location`` header.

    ``.../Observations(42)`` → ``42``; ``.../Things('01a2-...')`` → ``"01a2-..."``.
    """
    link = link.strip()
    if link.endswith("')"):
        # Quoted id: the first "('" whose remainder is a well-formed quoted literal.
        start = link.find("('")
        while start >= 0:
            inner = link[start + 2 : -2]
            if "'" not in inner.replace("''", ""):
                return inner.replace("''", "'")
            start = link.find("('", start + 1)
    open_at = link.rfind("(")
    if open_at < 0 or not link.endswith(")"):
        raise ValueError(f"not a SensorThings entity link: {link!r}")
    inner = link[open_at + 1 : -1]
    try:
        return int(inner)
    except ValueError:
        return inner


def odata_string(value: str) -> str:
    """An OData string literal: ``it's`` → ``'it''s'``."""
    return "'" + value.replace("'", "''") + "'"


# ---------------------------------------------------------------------------------------
# Entity bodies


def thing_key(gateway_id: str) -> str:
    return gateway_id


def sensor_key(stream: Datastream) -> str:
    return f"{stream.gateway_id}/{stream.sensor_id}"


def observed_property_key(q: Quantity) -> str:
    return q.code


def datastream_key(stream: Datastream) -> str:
    return f"{stream.gateway_id}/{stream.key}"


def unit_of_measurement(q: Quantity) -> JsonObject:
    """SensorThings unitOfMeasurement: ``name`` is the UCUM code, ``definition`` its OGC URI."""
    return {
        "name": q.unit,
        "symbol": q.unit_symbol,
        "definition": UCUM_UOM_PREFIX + quote(q.unit, safe=""),
    }


@dataclass(frozen=True, slots=True)
class GeoPoint:
    """WGS84 position of a gateway (GeoJSON order is lon, lat)."""

    lon: float
    lat: float
    alt: float | None = None

    def geojson(self) -> JsonObject:
        coords = [self.lon, self.lat] if self.alt is None else [self.lon, self.lat, self.alt]
        return {"type": "Point", "coordinates": coords}


def thing_body(gateway_id: str, location: GeoPoint | None = None) -> JsonObject:
    """The Thing for one gateway, with its Location deep-inserted when it is known.

    Servers derive each Observation's FeatureOfInterest from the Thing's Location, so a Thing
    without one can only accept observations that name a FeatureOfInterest explicitly.
    """
    body: JsonObject = {
        "name": gateway_id,
        "description": f"duet-edge gateway {gateway_id}",
        "properties": {"duetKey": thing_key(gateway_id), "duetType": "gateway"},
    }
    if location is not None:
        body["Locations"] = [location_body(gateway_id, location)]
    return body


def location_body(gateway_id: str, location: GeoPoint) -> JsonObject:
    """The Location entity of a gateway's installed position."""
    return {
        "name": f"{gateway_id} location",
        "description": f"Installed position of gateway {gateway_id}",
        "encodingType": GEOJSON,
        "location": location.geojson(),
    }


def sensor_body(stream: Datastream, sensor_model: str = "") -> JsonObject:
    model = sensor_model or "unknown"
    return {
        "name": sensor_key(stream),
        "description": f"{model} sensor {stream.sensor_id} on gateway {stream.gateway_id}",
        "encodingType": "text/html",
        "metadata": SENSOR_DOC_PREFIX + quote(model.lower(), safe=""),
        "properties": {
            "duetKey": sensor_key(stream),
            "gatewayId": stream.gateway_id,
            "sensorId": stream.sensor_id,
            "sensorModel": model,
        },
    }


def observed_property_body(q: Quantity) -> JsonObject:
    return {
        "name": q.label,
        "definition": q.uri,
        "description": f"{q.label} ({q.unit_symbol})",
        "properties": {"duetKey": observed_property_key(q)},
    }


def datastream_body(
    stream: Datastream,
    thing_id: EntityId,
    sensor_id: EntityId,
    observed_property_id: EntityId,
) -> JsonObject:
    q = stream.quantity
    return {
        "name": datastream_key(stream),
        "description": f"{q.label} measured by sensor {stream.sensor_id} "
        f"on gateway {stream.gateway_id}",
        "observationType": OM_MEASUREMENT,
        "unitOfMeasurement": unit_of_measurement(q),
        "properties": {
            "duetKey": datastream_key(stream),
            "gatewayId": stream.gateway_id,
            "sensorId": stream.sensor_id,
            "quantity": q.code,
            "ucumCode": q.unit,
        },
        "Thing": {"@iot.id": thing_id},
        "Sensor": {"@iot.id": sensor_id},
        "ObservedProperty": {"@iot.id": observed_property_id},
    }


# ---------------------------------------------------------------------------------------
# Observations


def result_is_valid(obs: Observation) -> bool:
    """JSON has no NaN/Infinity: such results cannot be sent as SensorThings results."""
    return _finite(obs.result)


def _finite(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a double
        return False


def result_quality(obs: Observation) -> JsonObject:
    """QARTOD flags: ``{"agg": 1, "tests": {"gross_range": 1}, "scores": {...}}``."""
    if obs.quality is None:
        return {"agg": QC_NOT_EVALUATED}
    out = obs.quality.as_dict()
    scores = out.get("scores")
    if isinstance(scores, dict):  # JSON has no NaN/Infinity: such scores become null
        out["scores"] = {k: (v if _finite(v) else None) for k, v in scores.items()}
    return out


def parameters(obs: Observation, gateway_id: str, mode: IntervalMode = "interval") -> JsonObject:
    """``obsId`` (deterministic), ``seq``, ``rawResult`` and ``provenance``.

    When an interval is degraded to its end instant, the interval is kept here as
    ``phenomenonInterval`` so no information is lost.
    """
    if obs.sequence is None:
        raise ValueError("observation has no sequence: only committed observations are sent")
    params: JsonObject = {
        "obsId": str(observation_id(gateway_id, obs.sequence)),
        "seq": obs.sequence,
        "gatewayId": gateway_id,
    }
    if _finite(obs.raw_result):
        params["rawResult"] = obs.raw_result
    prov = obs.provenance.as_dict()
    if prov:
        params["provenance"] = prov
    if mode == "end_instant" and obs.phenomenon_end_ms is not None:
        params["phenomenonInterval"] = phenomenon_time(obs, "interval")
    return params


def observation_row(
    obs: Observation, gateway_id: str, mode: IntervalMode = "interval"
) -> list[Any]:
    """One dataArray row, in :data:`DATA_ARRAY_COMPONENTS` order."""
    return [
        phenomenon_time(obs, mode),
        iso_ms(obs.result_time_ms),
        obs.result,
        result_quality(obs),
        parameters(obs, gateway_id, mode),
    ]


def observation_body(
    obs: Observation,
    gateway_id: str,
    datastream_id: EntityId | None = None,
    mode: IntervalMode = "interval",
) -> JsonObject:
    """A plain Observation entity; with ``datastream_id`` it links its Datastream (for
    ``POST Observations``)."""
    body: JsonObject = dict(zip(DATA_ARRAY_COMPONENTS, observation_row(obs, gateway_id, mode),
                                strict=True))
    if datastream_id is not None:
        body["Datastream"] = {"@iot.id": datastream_id}
    return body


@dataclass(frozen=True, slots=True)
class DataArrayRequest:
    """A CreateObservations body and, for each response row, the observation it stands for.

    The response is one entry per dataArray row, in body order: ``rows[i]`` is the observation
    behind response entry ``i``.
    """

    body: list[JsonObject]
    rows: tuple[Observation, ...]


def create_observations_body(
    items: Iterable[tuple[Observation, EntityId]],
    gateway_id: str,
    mode: IntervalMode = "interval",
) -> DataArrayRequest:
    """Group (observation, Datastream id) pairs per Datastream into a dataArray body.

    Groups appear in order of first use; rows keep their order inside each group.
    """
    groups: dict[EntityId, list[Observation]] = {}
    for obs, ds_id in items:
        groups.setdefault(ds_id, []).append(obs)
    body: list[JsonObject] = []
    rows: list[Observation] = []
    for ds_id, observations in groups.items():
        data = [observation_row(o, gateway_id, mode) for o in observations]
        body.append(
            {
                "Datastream": {"@iot.id": ds_id},
                "components": list(DATA_ARRAY_COMPONENTS),
                "dataArray": data,
            }
        )
        rows.extend(observations)
    return DataArrayRequest(body=body, rows=tuple(rows))
