"""The edge.model → SensorThings JSON mapping (pure functions)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge import sensorthings as sta
from edge.model import Datastream, observation_id
from edge.quantities import quantity
from tests.sta.helpers import T0_MS, make_obs


def test_iso_ms_is_utc_with_milliseconds() -> None:
    assert sta.iso_ms(T0_MS) == "2025-11-25T10:00:00.123Z"
    assert sta.iso_ms(0) == "1970-01-01T00:00:00.000Z"


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_iso_ms_round_trips(ms: int) -> None:
    from datetime import datetime

    parsed = datetime.fromisoformat(sta.iso_ms(ms).replace("Z", "+00:00"))
    assert round(parsed.timestamp() * 1000) == ms


def test_phenomenon_time_instant_interval_and_degraded() -> None:
    inst = make_obs("gw", 0, t_ms=T0_MS)
    ivl = make_obs("gw", 1, t_ms=T0_MS, interval_s=900)
    assert sta.phenomenon_time(inst) == "2025-11-25T10:00:00.123Z"
    assert sta.phenomenon_time(ivl) == "2025-11-25T10:00:00.123Z/2025-11-25T10:15:00.123Z"
    assert sta.phenomenon_time(ivl, "end_instant") == "2025-11-25T10:15:00.123Z"


def test_observation_body_carries_quality_and_parameters() -> None:
    obs = make_obs("gw-a", 7, result=150.0, interval_s=60)
    body = sta.observation_body(obs, "gw-a", datastream_id=5)
    assert body["result"] == 150.0
    assert body["resultTime"] == sta.iso_ms(obs.phenomenon_end_ms or 0)
    assert body["resultQuality"] == {"agg": 3, "tests": {"gross_range": 1, "spike": 3}}
    params = body["parameters"]
    assert params["obsId"] == str(observation_id("gw-a", 7))
    assert params["seq"] == 7
    assert params["rawResult"] == pytest.approx(165.0)
    assert params["provenance"] == {
        "sensorModel": "SDS011", "sensorSerial": "A1B2", "calibrationId": "cal-7"}
    assert "phenomenonInterval" not in params
    assert body["Datastream"] == {"@iot.id": 5}
    json.dumps(body, allow_nan=False)  # valid strict JSON


def test_degraded_interval_is_kept_in_parameters() -> None:
    obs = make_obs("gw", 1, interval_s=900)
    body = sta.observation_body(obs, "gw", mode="end_instant")
    assert "/" not in body["phenomenonTime"]
    assert body["parameters"]["phenomenonInterval"] == sta.phenomenon_time(obs)


def test_unsequenced_observation_is_refused() -> None:
    obs = make_obs("gw", 1)
    obs.sequence = None
    with pytest.raises(ValueError, match="sequence"):
        sta.observation_body(obs, "gw")


def test_non_finite_results_are_detected() -> None:
    assert sta.result_is_valid(make_obs("gw", 1))
    assert not sta.result_is_valid(make_obs("gw", 1, result=math.nan))
    assert not sta.result_is_valid(make_obs("gw", 1, result=math.inf))


def test_create_observations_groups_per_datastream_in_order() -> None:
    a1, b1, a2 = make_obs("gw", 1), make_obs("gw", 2, quantity="pm10"), make_obs("gw", 3)
    req = sta.create_observations_body([(a1, "A"), (b1, "B"), (a2, "A")], "gw")
    assert [g["Datastream"] for g in req.body] == [{"@iot.id": "A"}, {"@iot.id": "B"}]
    assert req.body[0]["components"] == list(sta.DATA_ARRAY_COMPONENTS)
    assert [row[4]["seq"] for row in req.body[0]["dataArray"]] == [1, 3]
    assert [o.sequence for o in req.rows] == [1, 3, 2]  # response order = body row order


def test_entity_bodies() -> None:
    stream = Datastream("gw-a", "sds011-1", "pm2_5")
    q = quantity("pm2_5")
    uom = sta.unit_of_measurement(q)
    assert uom == {"name": "ug/m3", "symbol": "µg/m³",
                   "definition": "http://www.opengis.net/def/uom/UCUM/0/ug%2Fm3"}
    ds = sta.datastream_body(stream, "T", 2, "O")
    assert ds["observationType"] == sta.OM_MEASUREMENT
    assert ds["properties"]["duetKey"] == "gw-a/sds011-1/pm2_5"
    assert ds["Thing"] == {"@iot.id": "T"} and ds["Sensor"] == {"@iot.id": 2}
    op = sta.observed_property_body(q)
    assert op["definition"] == "http://dd.eionet.europa.eu/vocabulary/aq/pollutant/6001"
    thing = sta.thing_body("gw-a", sta.GeoPoint(3.72, 51.05))
    assert thing["Locations"][0]["location"] == {"type": "Point", "coordinates": [3.72, 51.05]}
    assert "Locations" not in sta.thing_body("gw-a")
    assert sta.sensor_body(stream, "SDS011")["properties"]["duetKey"] == "gw-a/sds011-1"


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("http://x/v1.1/Observations(42)", 42),
        ("http://x/v1.1/Things('01a2-b')", "01a2-b"),
        ("http://x/v1.1/Things('it''s')", "it's"),
        ("http://x/v1.1/Things(abc)", "abc"),
    ],
)
def test_id_from_link(link: str, expected: object) -> None:
    assert sta.id_from_link(link) == expected


@given(st.one_of(st.integers(min_value=0), st.text(min_size=1).filter(lambda s: not s.isdigit())))
def test_entity_path_and_id_from_link_round_trip(entity_id: int | str) -> None:
    assert sta.id_from_link("http://h/v1.1/" + sta.entity_path("Things", entity_id)) == entity_id


def test_id_from_link_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        sta.id_from_link("error")


@given(st.lists(st.sampled_from(["A", "B", 7]), min_size=1, max_size=30))
def test_data_array_rows_line_up_with_the_body(assignment: list[str | int]) -> None:
    items = [(make_obs("gw", seq), ds) for seq, ds in enumerate(assignment, start=1)]
    req = sta.create_observations_body(items, "gw")
    flat = [(g["Datastream"]["@iot.id"], row) for g in req.body for row in g["dataArray"]]
    assert len(flat) == len(req.rows) == len(items)
    owner = dict((o.sequence, ds) for o, ds in items)
    for (ds, row), obs in zip(flat, req.rows, strict=True):
        assert row[4]["seq"] == obs.sequence and owner[obs.sequence] == ds
    # rows keep batch order inside each Datastream group
    for group in req.body:
        seqs = [row[4]["seq"] for row in group["dataArray"]]
        assert seqs == sorted(seqs)
    assert len(req.body) == len(set(assignment))


def test_non_finite_quality_scores_become_null() -> None:
    obs = make_obs("gw", 1)
    assert obs.quality is not None
    obs.quality.scores.update({"ml_anomaly": math.nan, "z": 1.5})
    body = sta.observation_body(obs, "gw")
    assert body["resultQuality"]["scores"] == {"ml_anomaly": None, "z": 1.5}
    json.dumps(body, allow_nan=False)
