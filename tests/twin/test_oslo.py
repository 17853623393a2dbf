"""The OSLO / SOSA JSON-LD export, read back as RDF with rdflib."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from rdflib import RDF, XSD, Graph, Literal, Namespace, URIRef
from typer.testing import CliRunner

from edge.cli import app
from edge.ingest.store import open_store
from edge.model import observation_id
from edge.quantities import QUANTITIES
from tests.sta.helpers import T0_MS
from tests.twin.helpers import batch

SOSA = Namespace("http://www.w3.org/ns/sosa/")
TIME = Namespace("http://www.w3.org/2006/time#")
VERKEER = Namespace("https://data.vlaanderen.be/ns/verkeersmetingen#")
VKM = "https://data.vlaanderen.be/id/concept/"
BASE = "https://twin.example/id/"


async def fill(target: str) -> None:
    store = open_store(target)
    await store.open()
    try:
        await store.store_batches([
            batch("gw-air", [1, 2]),                                  # PM2.5, calibrated
            batch("gw-road", [7], sensor_id="telraam", quantity="bike", result=12.0,
                  interval_s=3600),
            batch("gw-road", [8], sensor_id="telraam", quantity="v85", result=41.5,
                  interval_s=3600),
        ], T0_MS)
    finally:
        await store.close()


def exported(target: str, tmp_path: Path, *extra: str) -> Graph:
    locations = tmp_path / "where.json"
    locations.write_text(json.dumps({"gw-road": [4.4, 51.2]}))
    out = tmp_path / "export.jsonld"
    res = CliRunner().invoke(app, ["oslo-export", "--store", target, "--base-iri", BASE,
                                   "--gateway-locations", str(locations), "--out", str(out),
                                   *extra])
    assert res.exit_code == 0, res.output
    g = Graph()
    g.parse(data=out.read_text(), format="json-ld")
    return g


def test_export_is_sosa_rdf_with_oslo_traffic_terms(store_target: str, tmp_path: Path) -> None:
    asyncio.run(fill(store_target))
    g = exported(store_target, tmp_path)
    observations = set(g.subjects(RDF.type, SOSA.Observation))
    assert len(observations) == 4
    obs = URIRef(f"urn:uuid:{observation_id('gw-air', 1)}")
    assert obs in observations
    assert g.value(obs, SOSA.hasSimpleResult) == Literal(12.5, datatype=XSD.double)
    assert g.value(obs, SOSA.observedProperty) == URIRef(QUANTITIES["pm2_5"].uri)
    sensor = g.value(obs, SOSA.madeBySensor)
    assert sensor == URIRef(BASE + "gateway/gw-air/sensor/sds011-1")
    assert (sensor, RDF.type, SOSA.Sensor) in g
    assert g.value(sensor, SOSA.isHostedBy) == URIRef(BASE + "gateway/gw-air")
    instant = g.value(obs, SOSA.phenomenonTime)
    assert (instant, RDF.type, TIME.Instant) in g
    assert str(g.value(instant, TIME.inXSDDateTime)).startswith("2025-11-25T10:01:00.123")
    assert g.value(obs, SOSA.usedProcedure) is not None  # the calibration
    # the datastream: a collection holding its observations
    collection = g.value(obs, SOSA.isMemberOf)
    assert (collection, RDF.type, SOSA.ObservationCollection) in g
    assert set(g.objects(collection, SOSA.hasMember)) == {
        obs, URIRef(f"urn:uuid:{observation_id('gw-air', 2)}")}
    # traffic: OSLO Verkeersmetingen
    bikes = URIRef(f"urn:uuid:{observation_id('gw-road', 7)}")
    assert (bikes, RDF.type, VERKEER.Verkeersmeting) in g
    prop = g.value(bikes, SOSA.observedProperty)
    assert (prop, RDF.type, VERKEER.Verkeerskenmerk) in g
    assert g.value(prop, VERKEER.type) == URIRef(VKM + "VkmVerkeersKenmerkType/aantal")
    assert g.value(prop, VERKEER.voertuigType) == URIRef(VKM + "VkmVoertuigType/fietser")
    interval = g.value(bikes, SOSA.phenomenonTime)
    assert (interval, RDF.type, TIME.ProperInterval) in g
    v85 = g.value(URIRef(f"urn:uuid:{observation_id('gw-road', 8)}"), SOSA.observedProperty)
    assert g.value(v85, VERKEER.type) == URIRef(VKM + "VkmVerkeersKenmerkType/V85")
    # the air observations are not traffic measurements
    assert (obs, RDF.type, VERKEER.Verkeersmeting) not in g
    geo = Namespace("http://www.opengis.net/ont/geosparql#")
    geometry = g.value(URIRef(BASE + "gateway/gw-road"), geo.hasGeometry)
    assert str(g.value(geometry, geo.asWKT)) == "POINT (4.4 51.2)"


def test_export_filters(store_target: str, tmp_path: Path) -> None:
    asyncio.run(fill(store_target))
    g = exported(store_target, tmp_path, "--gateway", "gw-road", "--since",
                 "2025-11-25T10:08:00Z")
    assert len(set(g.subjects(RDF.type, SOSA.Observation))) == 1


def test_bad_time_is_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["oslo-export", "--store", str(tmp_path / "x.db"), "--since",
                                   "yesterday"])
    assert res.exit_code == 2
    assert "--since 'yesterday': expected ISO 8601" in res.output
