"""Forwarding from the twin store to a real SensorThings server (django-ogc-sensorthings)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest

from edge import sensorthings as sta
from edge.contract import encode_batch
from edge.ingest.forwarding import ForwardLoop
from edge.ingest.receiver import Receiver, ReceiverSettings
from edge.ingest.sta_forward import StaForwarder
from edge.model import Batch, observation_id
from edge.sensorthings.settings import SensorThingsHttpSettings
from tests.sta.helpers import make_obs

pytestmark = pytest.mark.timeout(90)
HERE = sta.GeoPoint(4.40, 51.22)


def server_obs_ids(base: str, gw: str) -> list[str]:
    ds = httpx.get(f"{base}/Datastreams",
                   params={"$filter": f"name eq '{gw}/sds011-1/pm2_5'"}).json()["value"]
    if not ds:
        return []
    url = f"{base}/{sta.entity_path('Datastreams', ds[0]['@iot.id'])}/Observations"
    page = httpx.get(url, params={"$top": "100"}).json()
    assert "value" in page, page
    return [o["parameters"]["obsId"] for o in page["value"]]


def payload(gw: str, seqs: range) -> bytes:
    return encode_batch(Batch(gw, tuple(make_obs(gw, s) for s in seqs)))


async def test_one_refused_gateway_is_parked_and_the_others_flow(sta_server: str,
                                                                 tmp_path: Path) -> None:
    """The test server refuses (HTTP 500) observations of a Thing without a Location: before,
    that stopped the whole twin. Now every row is stored, the other gateway is forwarded, and
    the refused one waits, parked; once its location is known its Thing gets a Location and
    its rows follow."""
    good, bad = "ok-" + uuid.uuid4().hex[:6], "nl-" + uuid.uuid4().hex[:6]
    receiver = Receiver(ReceiverSettings(store_path=tmp_path / "twin.db", forward=True))
    settings = SensorThingsHttpSettings(base_url=sta_server)
    try:
        for seqs in (range(1, 4), range(4, 7)):
            await receiver.handle_group([(f"duet/v1/{bad}/obs", payload(bad, seqs)),
                                            (f"duet/v1/{good}/obs", payload(good, seqs))])
        assert receiver.counters.observations_new == 12  # stored, whatever the server says
        async with StaForwarder(settings, tmp_path, {good: HERE}) as fwd:
            loop = ForwardLoop(receiver.store, fwd)
            for _ in range(4):
                await loop.step()
        assert sorted(server_obs_ids(sta_server, good)) == sorted(
            str(observation_id(good, s)) for s in range(1, 7))
        assert server_obs_ids(sta_server, bad) == []
        fleet = {g.gateway: g for g in await receiver.store.fleet(0)}
        assert fleet[bad].forward_parked_until_ms is not None
        assert fleet[good].forward_parked_until_ms is None
        assert (await receiver.store.totals()).forward_queued == 2  # bad's two batches wait
        # The operator adds the location; after the backoff the Thing gets its Location.
        async with StaForwarder(settings, tmp_path, {good: HERE, bad: HERE}) as fwd:
            loop = ForwardLoop(receiver.store, fwd)
            await receiver.store.forward_park(bad, 0, "")  # backoff over
            for _ in range(3):
                await loop.step()
        assert sorted(server_obs_ids(sta_server, bad)) == sorted(
            str(observation_id(bad, s)) for s in range(1, 7))
        assert (await receiver.store.totals()).forward_queued == 0
    finally:
        await receiver.close()


class IstSos4Duplicates(httpx.AsyncBaseTransport):
    """The real server behind a wrapper that answers 409 as istSOS4 does: a POST of an
    Observation whose Datastream already holds one at the same phenomenonTime."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.conflicts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/Observations"):
            body = json.loads(request.content)
            ds = body["Datastream"]["@iot.id"]
            base = str(request.url).rsplit("/Observations", 1)[0]
            url = f"{base}/{sta.entity_path('Datastreams', ds)}/Observations"
            t = body["phenomenonTime"].split("/")[0].replace(".123", "")
            async with httpx.AsyncClient() as http:
                found = (await http.get(url, params={"$filter": f"phenomenonTime eq {t}"})
                         ).json()["value"]
            if found:
                self.conflicts += 1
                return httpx.Response(409, text="Observation already exists", request=request)
        return await self.inner.handle_async_request(request)


async def test_409_is_verified_by_observation_id(sta_server: str, tmp_path: Path) -> None:
    gw = "dup-" + uuid.uuid4().hex[:6]
    transport = IstSos4Duplicates()
    settings = SensorThingsHttpSettings(base_url=sta_server, create_observations=False)
    first = make_obs(gw, 1, t_ms=1_764_064_800_123)
    same_again = make_obs(gw, 1, t_ms=1_764_064_800_123)  # a true retransmission
    other = make_obs(gw, 2, t_ms=1_764_064_800_123)  # a different observation, same time
    async with StaForwarder(settings, tmp_path, {gw: HERE}, transport=transport) as fwd:
        assert (await fwd.forward_observations(gw, [first])).confirmed == [1]
    async with StaForwarder(settings, tmp_path / "fresh", {gw: HERE},
                            transport=transport) as fwd:  # nothing remembered in memory
        again = await fwd.forward_observations(gw, [same_again])
        clash = await fwd.forward_observations(gw, [other])
    assert again.confirmed == [1]  # the server holds ours: delivered
    assert clash.confirmed == [] and 2 in clash.rejected
    assert "different observation" in clash.rejected[2]
    assert transport.conflicts == 2
    assert server_obs_ids(sta_server, gw) == [str(observation_id(gw, 1))]
