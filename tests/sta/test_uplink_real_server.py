"""The SensorThings HTTP uplink against a real SensorThings server (django-ogc-sensorthings).

Every test uses its own gateway id: the server is shared by the whole session.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge import sensorthings as sta
from edge.model import Batch, Datastream, observation_id
from edge.sensorthings.client import SensorThingsUnavailable
from edge.sensorthings.settings import REGISTRY_FILE_NAME, SensorThingsHttpSettings
from edge.uplinks.sensorthings_http import SensorThingsHttpUplink
from tests.sta.helpers import make_obs

HERE = sta.GeoPoint(3.7250, 51.0543)


def settings(base: str, **kw: Any) -> SensorThingsHttpSettings:
    return SensorThingsHttpSettings(base_url=base, **kw)


def gateway() -> str:
    return "gw-" + uuid.uuid4().hex[:10]


def server_observations(base: str, ds_id: object) -> list[dict[str, Any]]:
    url = f"{base}/{sta.entity_path('Datastreams', ds_id)}/Observations"  # type: ignore[arg-type]
    out: list[dict[str, Any]] = []
    params: dict[str, str] | None = {"$top": "100"}
    next_url: str | None = url
    while next_url:  # bounded by the number of pages the server reports
        page = httpx.get(next_url, params=params).json()
        out.extend(page["value"])
        next_url, params = page.get("@iot.nextLink"), None
    return out


def by_name(base: str, set_name: str, name: str) -> list[dict[str, Any]]:
    params = {"$filter": f"name eq {sta.odata_string(name)}"}
    return httpx.get(f"{base}/{set_name}", params=params).json()["value"]  # type: ignore[no-any-return]


async def test_batch_is_confirmed_and_entities_registered(sta_server: str, tmp_path: Path) -> None:
    gw = gateway()
    obs = [make_obs(gw, s, quantity="pm2_5" if s % 2 else "pm10") for s in range(1, 7)]
    async with SensorThingsHttpUplink(settings(sta_server), gw, tmp_path, HERE) as up:
        delivery = await up.send(Batch(gw, tuple(obs)))
    assert sorted(delivery.confirmed) == [1, 2, 3, 4, 5, 6]
    assert delivery.rejected == {}
    assert up.sender.stats["row_retries"] == 0  # all went in one CreateObservations
    things = by_name(sta_server, "Things", gw)
    assert len(things) == 1 and things[0]["properties"]["duetKey"] == gw
    cache = json.loads((tmp_path / REGISTRY_FILE_NAME).read_text())
    assert cache["server"] == sta_server
    ds_id = cache["datastreams"][f"{gw}/sds011-1/pm2_5"]
    ds = httpx.get(f"{sta_server}/{sta.entity_path('Datastreams', ds_id)}").json()
    assert ds["unitOfMeasurement"]["name"] == "ug/m3"
    assert ds["observationType"] == sta.OM_MEASUREMENT
    stored = server_observations(sta_server, ds_id)
    assert sorted(o["parameters"]["seq"] for o in stored) == [1, 3, 5]
    one = next(o for o in stored if o["parameters"]["seq"] == 3)
    assert one["parameters"]["obsId"] == str(observation_id(gw, 3))
    assert one["parameters"]["provenance"]["sensorModel"] == "SDS011"
    assert one["resultQuality"] == {"agg": 1, "tests": {"gross_range": 1, "spike": 1}}
    assert one["result"] == pytest.approx(12.5)
    # The server keeps whole seconds only (documented in the contract).
    assert one["phenomenonTime"].startswith(sta.iso_ms(obs[2].phenomenon_ms)[:19])


async def test_registration_is_idempotent_without_cache(sta_server: str, tmp_path: Path) -> None:
    gw = gateway()
    streams = [(Datastream(gw, "sps30-1", q), "SPS30") for q in ("pm1", "pm2_5", "nc0_5")]
    async with SensorThingsHttpUplink(settings(sta_server), gw, tmp_path / "a", HERE) as up:
        first = await up.ensure_datastreams(streams)
    # A second gateway install that lost its cache finds the same entities by name + duetKey.
    async with SensorThingsHttpUplink(settings(sta_server), gw, tmp_path / "b", HERE) as up:
        second = await up.ensure_datastreams(streams)
        assert up.sender.registry.ids["things"][gw] == by_name(sta_server, "Things", gw)[0][
            "@iot.id"]
    assert first == second
    assert len(by_name(sta_server, "Things", gw)) == 1
    assert len(by_name(sta_server, "Sensors", f"{gw}/sps30-1")) == 1
    for stream, _ in streams:
        assert len(by_name(sta_server, "Datastreams", sta.datastream_key(stream))) == 1
    # ObservedProperties are shared between gateways: one per definition.
    props = httpx.get(f"{sta_server}/ObservedProperties", params={
        "$filter": "definition eq 'http://dd.eionet.europa.eu/vocabulary/aq/pollutant/6001'"
    }).json()["value"]
    assert len(props) == 1


async def test_interval_auto_degrades_to_end_instant(sta_server: str, tmp_path: Path) -> None:
    """This server refuses interval phenomenonTime; 'auto' detects it and degrades."""
    gw = gateway()
    obs = [make_obs(gw, s, interval_s=900) for s in range(1, 5)]
    async with SensorThingsHttpUplink(settings(sta_server), gw, tmp_path, HERE) as up:
        delivery = await up.send(Batch(gw, tuple(obs)))
        assert up.sender.degrade_intervals
        ds_id = up.sender.registry.cached(obs[0].stream)
        # Later batches go straight in as end instants, in one request.
        retries = up.sender.stats["row_retries"]
        later = [make_obs(gw, s, interval_s=900) for s in range(5, 8)]
        assert sorted((await up.send(Batch(gw, tuple(later)))).confirmed) == [5, 6, 7]
        assert up.sender.stats["row_retries"] == retries
    assert sorted(delivery.confirmed) == [1, 2, 3, 4]
    stored = {o["parameters"]["seq"]: o for o in server_observations(sta_server, ds_id)}
    assert set(stored) == {1, 2, 3, 4, 5, 6, 7}
    first = stored[1]
    assert first["phenomenonTime"].startswith(sta.iso_ms(obs[0].phenomenon_end_ms or 0)[:19])
    assert first["parameters"]["phenomenonInterval"] == sta.phenomenon_time(obs[0])


async def test_interval_mode_interval_keeps_rows_pending(sta_server: str, tmp_path: Path) -> None:
    """With phenomenon_interval='interval' this server's 500s are transient: nothing settles."""
    gw = gateway()
    obs = [make_obs(gw, 1, interval_s=60)]
    up = SensorThingsHttpUplink(settings(sta_server, phenomenon_interval="interval"), gw,
                                tmp_path, HERE)
    async with up:
        with pytest.raises(SensorThingsUnavailable, match="HTTP 500"):
            await up.send(Batch(gw, tuple(obs)))


async def test_end_instant_mode_needs_no_retries(sta_server: str, tmp_path: Path) -> None:
    gw = gateway()
    obs = [make_obs(gw, s, interval_s=60) for s in range(1, 4)]
    up = SensorThingsHttpUplink(settings(sta_server, phenomenon_interval="end_instant"), gw,
                                tmp_path, HERE)
    async with up:
        delivery = await up.send(Batch(gw, tuple(obs)))
    assert sorted(delivery.confirmed) == [1, 2, 3]
    assert up.sender.stats["row_retries"] == 0


def seed_cache(data_dir: Path, base: str, stream: Datastream, ds_id: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / REGISTRY_FILE_NAME).write_text(json.dumps({
        "server": base, "things": {}, "sensors": {}, "observedProperties": {},
        "datastreams": {sta.datastream_key(stream): ds_id},
    }))


async def test_error_rows_for_a_vanished_datastream(sta_server: str, tmp_path: Path) -> None:
    """A cached Datastream id the server doesn't know: its rows come back "error"; the good
    group is confirmed; the id is forgotten and the next attempt registers it again."""
    gw = gateway()
    bad_stream = Datastream(gw, "sds011-1", "pm10")
    seed_cache(tmp_path, sta_server, bad_stream, str(uuid.uuid4()))
    batch = Batch(gw, (make_obs(gw, 1), make_obs(gw, 2, quantity="pm10"), make_obs(gw, 3)))
    async with SensorThingsHttpUplink(settings(sta_server), gw, tmp_path, HERE) as up:
        first = await up.send(batch)
        assert sorted(first.confirmed) == [1, 3]
        assert first.rejected == {}  # seq 2 stays pending, it is not lost
        assert up.sender.stats["row_retries"] == 1
        assert up.sender.registry.cached(bad_stream) is None
        second = await up.send(Batch(gw, (batch.observations[1],)))
    assert second.confirmed == [2]
    assert len(by_name(sta_server, "Datastreams", sta.datastream_key(bad_stream))) == 1


async def test_invalid_rows_are_rejected_with_the_server_reason(
    sta_server: str, tmp_path: Path
) -> None:
    """A Datastream id the server finds invalid makes it refuse the whole CreateObservations
    (422); the uplink isolates the rows, confirms the good ones and rejects the bad one."""
    gw = gateway()
    bad_stream = Datastream(gw, "sds011-1", "pm10")
    seed_cache(tmp_path, sta_server, bad_stream, "not-a-uuid")
    batch = Batch(gw, (make_obs(gw, 1), make_obs(gw, 2, quantity="pm10"),
                       make_obs(gw, 3, result=math.nan)))
    async with SensorThingsHttpUplink(settings(sta_server), gw, tmp_path, HERE) as up:
        delivery = await up.send(batch)
    assert delivery.confirmed == [1]
    assert set(delivery.rejected) == {2, 3}
    assert delivery.rejected[2].startswith("HTTP 422")
    assert "UUID" in delivery.rejected[2]
    assert "not a finite number" in delivery.rejected[3]


async def test_duplicates_are_stored_twice_and_deduplicated_by_obs_id(
    sta_server: str, tmp_path: Path
) -> None:
    """This server never answers 409: a re-sent batch is stored again. The deterministic
    parameters.obsId identifies the copies."""
    gw = gateway()
    batch = Batch(gw, tuple(make_obs(gw, s) for s in range(1, 4)))
    async with SensorThingsHttpUplink(settings(sta_server), gw, tmp_path, HERE) as up:
        assert sorted((await up.send(batch)).confirmed) == [1, 2, 3]
        assert sorted((await up.send(batch)).confirmed) == [1, 2, 3]
        ds_id = up.sender.registry.cached(batch.observations[0].stream)
    stored = server_observations(sta_server, ds_id)
    assert len(stored) == 6
    ids = {o["parameters"]["obsId"] for o in stored}
    assert ids == {str(observation_id(gw, s)) for s in range(1, 4)}


async def test_batches_larger_than_batch_size_are_split(sta_server: str, tmp_path: Path) -> None:
    gw = gateway()
    batch = Batch(gw, tuple(make_obs(gw, s) for s in range(1, 26)))
    async with SensorThingsHttpUplink(settings(sta_server, batch_size=10), gw, tmp_path,
                                      HERE) as up:
        delivery = await up.send(batch)
        assert up.sender.stats["requests"] == 3
    assert sorted(delivery.confirmed) == list(range(1, 26))


async def test_one_by_one_mode(sta_server: str, tmp_path: Path) -> None:
    gw = gateway()
    batch = Batch(gw, tuple(make_obs(gw, s) for s in range(1, 4)))
    up = SensorThingsHttpUplink(settings(sta_server, create_observations=False), gw, tmp_path,
                                HERE)
    async with up:
        delivery = await up.send(batch)
    assert sorted(delivery.confirmed) == [1, 2, 3]
    assert up.sender.stats["row_retries"] == 3


async def test_server_down_raises_for_backoff(tmp_path: Path) -> None:
    from tests.plugins.sta_server import free_port

    base = f"http://127.0.0.1:{free_port()}/v1.1"
    gw = gateway()
    async with SensorThingsHttpUplink(settings(base, connect_timeout_s=1), gw, tmp_path) as up:
        with pytest.raises(SensorThingsUnavailable, match="ConnectError"):
            await up.send(Batch(gw, (make_obs(gw, 1),)))
