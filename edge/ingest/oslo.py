"""Linked-data export of the twin store: JSON-LD in the Flemish OSLO terms, on SOSA/SSN.

What it follows (recorded in docs/twin.md, "OSLO export"):

- **OSLO SSN-SOSA-VL** (Informatievlaanderen/OSLOthema-SSNSOSA-VL, data examples at commit
  626793d8 — ``src/main/input/verkeersmetingen`` — and the analysis of OSLO Observaties en
  Metingen in the same repository): observations are ``sosa:Observation`` (SOSA/SSN 2023)
  with ``sosa:madeBySensor``, ``sosa:observedProperty`` (a ``sosa:Property``),
  ``sosa:hasFeatureOfInterest``, ``sosa:phenomenonTime`` (an OWL-Time instant or proper
  interval), ``sosa:resultTime`` and ``sosa:hasSimpleResult``; a Datastream is a
  ``sosa:ObservationCollection`` whose members share sensor, property and feature of interest;
  a gateway is a ``sosa:Platform`` hosting its sensors. The ISO 19156 IRIs of OSLO
  Observaties en Metingen (``def.isotc211.org``) were withdrawn and its own namespace is
  deprecated, so the export keeps the **OSLO Observaties en Metingen term names** (Dutch:
  ``geobserveerdObject``, ``geobserveerdKenmerk``, ``fenomeentijd``, ``resultaattijd``,
  ``resultaat``, ``uitgevoerdMetSensor``, ``gebruikteProcedure``…) in its ``@context`` and maps
  them to the SOSA/SSN 2023 IRIs the Flemish profile moves to.
- **OSLO Verkeersmetingen** (Informatievlaanderen/OSLOthema-verkeersmetingen, code lists at
  commit 2daf6f27): a traffic count is also a ``verkeer:Verkeersmeting``; its observed
  property is a ``verkeer:Verkeerskenmerk`` with ``verkeer:type`` from VkmVerkeersKenmerkType
  (``aantal``, ``V85``) and ``verkeer:voertuigType`` from VkmVoertuigType (``voetganger``,
  ``fietser``, ``auto``, ``vrachtwagen``). Which quantity maps to which concepts is the
  ``oslo`` column of :mod:`edge.quantities`.

The ``@context`` is inline (no network needed to read the document).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from urllib.parse import quote

from edge.ingest.store import StoredObservation
from edge.model import observation_id
from edge.quantities import QUANTITIES, Quantity
from edge.sensorthings import GeoPoint, iso_ms

DEFAULT_BASE = "https://w3id.org/duet-edge/twin/"
SOSA = "http://www.w3.org/ns/sosa/"
VERKEER = "https://data.vlaanderen.be/ns/verkeersmetingen#"

JsonObject = dict[str, object]

CONTEXT: JsonObject = {
    "sosa": SOSA,
    "ssn": "http://www.w3.org/ns/ssn/",
    "time": "http://www.w3.org/2006/time#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "dcterms": "http://purl.org/dc/terms/",
    "qudt": "http://qudt.org/schema/qudt/",
    "geo": "http://www.opengis.net/ont/geosparql#",
    "verkeer": VERKEER,
    "duet": "https://w3id.org/duet-edge/def/",
    # classes (OSLO names → SOSA/SSN 2023, OSLO Verkeersmetingen)
    "Observatie": "sosa:Observation",
    "Observatieverzameling": "sosa:ObservationCollection",
    "Sensor": "sosa:Sensor",
    "Platform": "sosa:Platform",
    "Kenmerk": "sosa:Property",
    "Object": "sosa:FeatureOfInterest",
    "Procedure": "sosa:Procedure",
    "Verkeersmeting": "verkeer:Verkeersmeting",
    "Verkeerskenmerk": "verkeer:Verkeerskenmerk",
    "Verkeersmeetpunt": "verkeer:Verkeersmeetpunt",
    "Tijdstip": "time:Instant",
    "Periode": "time:ProperInterval",
    "Geometrie": "geo:Geometry",
    # properties
    "geobserveerdObject": {"@id": "sosa:hasFeatureOfInterest", "@type": "@id"},
    "geobserveerdKenmerk": {"@id": "sosa:observedProperty", "@type": "@id"},
    "uitgevoerdMetSensor": {"@id": "sosa:madeBySensor", "@type": "@id"},
    "gebruikteProcedure": {"@id": "sosa:usedProcedure", "@type": "@id"},
    "fenomeentijd": {"@id": "sosa:phenomenonTime"},
    "resultaattijd": {"@id": "sosa:resultTime", "@type": "xsd:dateTime"},
    "resultaat": {"@id": "sosa:hasSimpleResult", "@type": "xsd:double"},
    "lid": {"@id": "sosa:hasMember", "@type": "@id"},
    "lidVan": {"@id": "sosa:isMemberOf", "@type": "@id"},
    "host": {"@id": "sosa:hosts", "@type": "@id"},
    "gehostDoor": {"@id": "sosa:isHostedBy", "@type": "@id"},
    "observeert": {"@id": "sosa:observes", "@type": "@id"},
    "tijdstip": {"@id": "time:inXSDDateTime", "@type": "xsd:dateTime"},
    "begin": {"@id": "time:hasBeginning"},
    "einde": {"@id": "time:hasEnd"},
    "naam": "rdfs:label",
    "identificator": "dcterms:identifier",
    "eenheid": "qudt:ucumCode",
    "kenmerktype": {"@id": "verkeer:type", "@type": "@id"},
    "voertuigType": {"@id": "verkeer:voertuigType", "@type": "@id"},
    "geometrie": {"@id": "geo:hasGeometry"},
    "wkt": {"@id": "geo:asWKT", "@type": "geo:wktLiteral"},
    "kwaliteitsvlag": {"@id": "duet:qartodFlag", "@type": "xsd:integer"},
    "ruweWaarde": {"@id": "duet:rawResult", "@type": "xsd:double"},
    "sensormodel": "duet:sensorModel",
    "serienummer": "duet:sensorSerial",
}


def _iri(base: str, *parts: str) -> str:
    return base + "/".join(quote(p, safe="") for p in parts)


def _is_traffic(q: Quantity | None) -> bool:
    return q is not None and bool(q.oslo)


def _time(start_ms: int, end_ms: int | None) -> JsonObject:
    if end_ms is None:
        return {"@type": "Tijdstip", "tijdstip": iso_ms(start_ms)}
    return {"@type": "Periode",
            "begin": {"@type": "Tijdstip", "tijdstip": iso_ms(start_ms)},
            "einde": {"@type": "Tijdstip", "tijdstip": iso_ms(end_ms)}}


def export(rows: Sequence[StoredObservation], locations: Mapping[str, GeoPoint] | None = None,
           base: str = DEFAULT_BASE) -> JsonObject:
    """A JSON-LD document (``@context`` + ``@graph``) for the given stored observations."""
    if not base.endswith(("/", "#")):
        base += "/"
    locations = locations or {}
    graph: dict[str, JsonObject] = {}
    members: dict[str, list[str]] = {}
    hosts: dict[str, list[str]] = {}
    observes: dict[str, list[str]] = {}

    def node(iri: str, body: JsonObject) -> JsonObject:
        existing = graph.get(iri)
        if existing is None:
            existing = graph[iri] = {"@id": iri, **body}
        return existing

    for row in rows:
        q = QUANTITIES.get(row.quantity)
        traffic = _is_traffic(q)
        platform = _iri(base, "gateway", row.gateway)
        sensor = _iri(base, "gateway", row.gateway, "sensor", row.sensor)
        feature = _iri(base, "gateway", row.gateway, "road" if traffic else "air")
        prop = q.uri if q is not None else _iri(base, "property", row.quantity)
        collection = _iri(base, "datastream", row.gateway, row.sensor, row.quantity)
        platform_node = node(platform, {"@type": "Platform", "naam": row.gateway})
        loc = locations.get(row.gateway)
        if loc is not None and "geometrie" not in platform_node:
            platform_node["geometrie"] = {"@type": "Geometrie",
                                          "wkt": f"POINT ({loc.lon} {loc.lat})"}
        sensor_node = node(sensor, {
            "@type": "Sensor", "naam": f"{row.gateway}/{row.sensor}", "gehostDoor": platform,
            "sensormodel": row.provenance.get("sensorModel", "")})
        if sensor not in hosts.setdefault(platform, []):
            hosts[platform].append(sensor)
        if prop not in observes.setdefault(sensor, []):
            observes[sensor].append(prop)
        serial = row.provenance.get("sensorSerial")
        if serial:
            sensor_node["serienummer"] = serial
        prop_node = node(prop, {"@type": ["Kenmerk", "Verkeerskenmerk"] if traffic
                                else "Kenmerk", "naam": q.label if q else row.quantity})
        if traffic and q is not None and "kenmerktype" not in prop_node:
            prop_node["kenmerktype"] = q.oslo[0]
            if len(q.oslo) > 1:
                prop_node["voertuigType"] = q.oslo[1]
        node(feature, {"@type": ["Object", "Verkeersmeetpunt"] if traffic else "Object",
                       "naam": f"{'Weg' if traffic else 'Lucht'} bij {row.gateway}"})
        node(collection, {"@type": "Observatieverzameling",
                          "naam": f"{row.gateway}/{row.sensor}/{row.quantity}",
                          "uitgevoerdMetSensor": sensor, "geobserveerdKenmerk": prop,
                          "geobserveerdObject": feature, "eenheid": row.unit})
        if not math.isfinite(row.result):
            continue  # RDF has no NaN result worth publishing; the store keeps it
        obs_iri = f"urn:uuid:{observation_id(row.gateway, row.seq)}"
        obs: JsonObject = {
            "@id": obs_iri,
            "@type": ["Observatie", "Verkeersmeting"] if traffic else "Observatie",
            "identificator": f"{row.gateway}/{row.seq}",
            "uitgevoerdMetSensor": sensor,
            "geobserveerdKenmerk": prop,
            "geobserveerdObject": feature,
            "fenomeentijd": _time(row.phenomenon_ms, row.phenomenon_end_ms),
            "resultaattijd": iso_ms(row.result_ms),
            "resultaat": row.result,
            "lidVan": collection,
        }
        calibration = row.provenance.get("calibrationId")
        if calibration:
            version = row.provenance.get("calibrationVersion", "")
            procedure = _iri(base, "procedure", "calibration", calibration, version or "-")
            node(procedure, {"@type": "Procedure",
                             "naam": f"calibration {calibration} {version}".strip()})
            obs["gebruikteProcedure"] = procedure
        if row.raw_result is not None and math.isfinite(row.raw_result):
            obs["ruweWaarde"] = row.raw_result
        if row.quality_flag is not None:
            obs["kwaliteitsvlag"] = row.quality_flag
        graph[obs_iri] = obs
        members.setdefault(collection, []).append(obs_iri)
    for collection, ids in members.items():
        graph[collection]["lid"] = ids
    for platform, sensors in hosts.items():
        graph[platform]["host"] = sensors
    for sensor, props in observes.items():
        graph[sensor]["observeert"] = props
    return {"@context": CONTEXT, "@graph": list(graph.values())}
