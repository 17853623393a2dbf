"""The twin receiver's SensorThings forwarder: real server, and the lead's receiver path."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import httpx
import pytest

from edge import sensorthings as sta
from edge.contract import decode_batch, encode_batch
from edge.ingest.sta_forward import StaForwarder, load_locations
from edge.model import Batch, observation_id
from edge.sensorthings.client import SensorThingsUnavailable
from edge.sensorthings.settings import SensorThingsHttpSettings
from tests.sta.helpers import make_obs

HERE = sta.GeoPoint(4.40, 51.22)


def stored_obs_ids(base: str, gw: str, quantity: str = "pm2_5") -> list[str]:
    name = f"{gw}/sds011-1/{quantity}"
    ds = httpx.get(f"{base}/Datastreams", params={"$filter": f"name eq '{name}'"}).json()["value"]
    if not ds:
        return []
    url = f"{base}/{sta.entity_path('Datastreams', ds[0]['@iot.id'])}/Observations"
    page = httpx.get(url, params={"$top": "100"}).json()
    return [o["parameters"]["obsId"] for o in page["value"]]


async def test_forwards_a_decoded_batch(sta_server: str, tmp_path: Path) -> None:
    gw = "rx-" + uuid.uuid4().hex[:8]
    decoded = decode_batch(encode_batch(Batch(gw, tuple(
        make_obs(gw, s, interval_s=60 if s % 2 else None) for s in range(10, 16)))))
    async with StaForwarder(SensorThingsHttpSettings(base_url=sta_server), tmp_path,
                            {gw: HERE}) as fwd:
        delivery = await fwd.forward(decoded)
        assert sorted(delivery.confirmed) == list(range(10, 16))
        assert fwd.counters.forwarded == 6
        # The same observations again (e.g. a redelivered message): nothing is re-sent.
        assert sorted((await fwd.forward(decoded)).confirmed) == list(range(10, 16))
        assert fwd.counters.skipped_already_forwarded == 6
        assert fwd.counters.forwarded == 6
    assert sorted(stored_obs_ids(sta_server, gw)) == sorted(decoded.ids)


async def test_receiver_forwards_only_new_observations(sta_server: str, tmp_path: Path) -> None:
    """Stored first, queued in the same transaction, forwarded from the queue: a redelivered
    message is a duplicate in the store and is not queued (nor forwarded) again."""
    from edge.ingest.forwarding import ForwardLoop
    from edge.ingest.receiver import Receiver, ReceiverSettings

    gw = "rx-" + uuid.uuid4().hex[:8]
    payload = encode_batch(Batch(gw, tuple(make_obs(gw, s) for s in range(1, 5))))
    locations = tmp_path / "locations.json"
    locations.write_text(json.dumps({gw: [HERE.lon, HERE.lat]}))
    fwd = StaForwarder.from_url(sta_server, tmp_path, locations)
    receiver = Receiver(ReceiverSettings(store_path=tmp_path / "twin.db", forward=True))
    try:
        await receiver.handle(f"duet/v1/{gw}/obs", payload)
        await receiver.handle(f"duet/v1/{gw}/obs", payload)  # redelivered: already stored
        async with fwd:
            loop = ForwardLoop(receiver.store, fwd)
            assert await loop.step() == 1
            assert await loop.step() == 0
    finally:
        await fwd.aclose()
        await receiver.close()
    assert sorted(stored_obs_ids(sta_server, gw)) == sorted(
        str(observation_id(gw, s)) for s in range(1, 5))
    assert fwd.counters.batches == 1
    assert receiver.counters.duplicates == 4


async def test_partial_failure_raises_and_the_retry_sends_only_the_rest(tmp_path: Path) -> None:
    base = "http://sta.test/v1.1"
    posted: list[int] = []
    state = {"down": True, "next": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/v1.1/")
        if request.method == "GET":
            return httpx.Response(200, json={"value": []} if "(" not in path else {})
        state["next"] += 1
        created = httpx.Response(201, headers={"Location": f"{base}/X({state['next']})"})
        if path == "CreateObservations":
            return httpx.Response(201, json=[f"{base}/Observations(1)", "error"])
        if path == "Observations":
            posted.append(json.loads(request.content)["parameters"]["seq"])
            return httpx.Response(503) if state["down"] else created
        return created

    gw = "rx-partial"
    decoded = decode_batch(encode_batch(Batch(gw, (make_obs(gw, 1), make_obs(gw, 2)))))
    fwd = StaForwarder(SensorThingsHttpSettings(base_url=base), tmp_path,
                       transport=httpx.MockTransport(handler))
    async with fwd:
        with pytest.raises(SensorThingsUnavailable, match="1 of 2 observations"):
            await fwd.forward(decoded)
        state["down"] = False
        fwd.sender.use_data_array = False
        delivery = await fwd.forward(decoded)
    assert sorted(delivery.confirmed) == [1, 2]  # 1 from the first attempt, not re-sent
    assert posted == [2, 2]  # seq 1 was confirmed the first time and is not sent again
    assert fwd.counters.failures == 1


def test_load_locations(tmp_path: Path) -> None:
    good = tmp_path / "l.json"
    good.write_text('{"gw-1": [3.7, 51.0], "gw-2": [4.4, 51.2, 12]}')
    assert load_locations(good)["gw-2"] == sta.GeoPoint(4.4, 51.2, 12.0)
    bad = tmp_path / "b.json"
    bad.write_text('{"gw-1": [3.7]}')
    with pytest.raises(ValueError, match=re.escape("'gw-1' = [3.7]")):
        load_locations(bad)
