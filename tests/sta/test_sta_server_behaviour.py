"""What the test server (django-ogc-sensorthings 1.2) does at the edges of the standard.

These facts shape the uplink (docs/upload-contract-sensorthings.md, "Server differences");
if the server changes, these tests say which assumption moved.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from edge import sensorthings as sta
from edge.model import Datastream
from edge.sensorthings.settings import SensorThingsHttpSettings
from edge.uplinks.sensorthings_http import SensorThingsHttpUplink

HERE = sta.GeoPoint(3.72, 51.05)


async def a_datastream(base: str, tmp_path: Path) -> tuple[str, object]:
    gw = "beh-" + uuid.uuid4().hex[:8]
    stream = Datastream(gw, "s1", "pm2_5")
    async with SensorThingsHttpUplink(SensorThingsHttpSettings(base_url=base), gw, tmp_path,
                                      HERE) as up:
        ids = await up.ensure_datastreams([(stream, "SDS011")])
    return gw, ids[stream]


def obs(ds_id: object, when: str, result: float = 1.0) -> dict[str, object]:
    return {"phenomenonTime": when, "result": result, "Datastream": {"@iot.id": ds_id}}


async def test_server_gaps(sta_server: str, tmp_path: Path) -> None:
    gw, ds_id = await a_datastream(sta_server, tmp_path)
    with httpx.Client(base_url=sta_server + "/") as http:
        # Interval phenomenonTime: refused, with a 500 on a single POST...
        interval = "2025-11-25T10:00:00Z/2025-11-25T10:15:00Z"
        assert http.post("Observations", json=obs(ds_id, interval)).status_code == 500
        # ... and "error" rows in CreateObservations (the whole Datastream group fails).
        rows = http.post("CreateObservations", json=[{
            "Datastream": {"@iot.id": ds_id}, "components": ["phenomenonTime", "result"],
            "dataArray": [["2025-11-25T10:00:00Z", 1.0], [interval, 2.0]],
        }]).json()
        assert rows == ["error", "error"]
        # Nested POST on a Datastream's Observations is not routed.
        nested = f"{sta.entity_path('Datastreams', ds_id)}/Observations"  # type: ignore[arg-type]
        assert http.post(nested, json={"phenomenonTime": "2025-11-25T10:00:00Z",
                                       "result": 1.0}).status_code == 405
        # Duplicates are stored again (no 409), and times keep whole seconds only.
        body = obs(ds_id, "2025-11-25T10:00:00.789Z", 5.0)
        assert [http.post("Observations", json=body).status_code for _ in range(2)] == [201, 201]
        stored = http.get(nested, params={"$filter": "result eq 5"}).json()["value"]
        assert len(stored) == 2
        assert stored[0]["phenomenonTime"] == "2025-11-25T10:00:00+00:00"
        # $filter on properties/... silently matches nothing: look entities up by name.
        by_props = http.get("Things", params={"$filter": f"properties/duetKey eq '{gw}'"})
        assert by_props.json()["value"] == []
        assert len(http.get("Things", params={"$filter": f"name eq '{gw}'"}).json()["value"]) == 1
        # An unknown Datastream id is a 500, not a 4xx; GET on it is a 404.
        ghost = str(uuid.uuid4())
        assert http.post("Observations", json=obs(ghost, "2025-11-25T10:00:00Z")).status_code \
            == 500
        assert http.get(sta.entity_path("Datastreams", ghost)).status_code == 404
