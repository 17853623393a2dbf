"""Response shapes the real test server never produces (409, 404 on CreateObservations,
throttling, short answers...), served by httpx's in-process MockTransport: the uplink's
real client code runs, only the network is replaced by a small SensorThings-like handler."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.model import Batch, observation_id
from edge.sensorthings.client import SensorThingsConfigError, SensorThingsUnavailable
from edge.sensorthings.settings import SensorThingsHttpSettings
from edge.uplinks.sensorthings_http import SensorThingsHttpUplink
from tests.sta.helpers import make_obs

BASE = "https://sta.test/v1.1"
GW = "gw-mock"
Handler = Callable[[httpx.Request], httpx.Response]


class FakeSta:
    """Entity creation with integer ids; observation endpoints answer per ``on_*`` hooks."""

    def __init__(self) -> None:
        self.next_id = 100
        self.requests: list[httpx.Request] = []
        self.on_create_observations: Handler = self.all_created
        self.on_observation: Handler = lambda req: self.created(req, "Observations")
        self.held: list[dict[str, Any]] = []  # what GET Datastreams(id)/Observations finds

    def created(self, request: httpx.Request, set_name: str) -> httpx.Response:
        self.next_id += 1
        return httpx.Response(201, headers={"Location": f"{BASE}/{set_name}({self.next_id})"})

    def all_created(self, request: httpx.Request) -> httpx.Response:
        rows = sum(len(g["dataArray"]) for g in json.loads(request.content))
        return httpx.Response(201, json=[f"{BASE}/Observations({i})" for i in range(rows)])

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.removeprefix("/v1.1/")
        if request.method == "GET" and path.endswith("/Observations"):
            return httpx.Response(200, json={"value": self.held})
        if request.method == "GET" and "(" not in path:
            return httpx.Response(200, json={"value": []})
        if request.method == "GET":
            return httpx.Response(200, json={"@iot.id": 1})
        if path == "CreateObservations":
            return self.on_create_observations(request)
        if path == "Observations":
            return self.on_observation(request)
        return self.created(request, path)

    def posts(self, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST" and r.url.path.endswith(path)]


def uplink(fake: FakeSta, tmp_path: Path, **kw: Any) -> SensorThingsHttpUplink:
    s = SensorThingsHttpSettings(base_url=BASE, **kw)
    return SensorThingsHttpUplink(s, GW, tmp_path, transport=httpx.MockTransport(fake))


def batch(*seqs: int, **kw: Any) -> Batch:
    return Batch(GW, tuple(make_obs(GW, s, **kw) for s in seqs))


async def test_error_rows_are_retried_individually_and_409_counts_as_delivered(
    tmp_path: Path,
) -> None:
    fake = FakeSta()
    fake.on_create_observations = lambda req: httpx.Response(
        201, json=[f"{BASE}/Observations(1)", "error", "error", f"{BASE}/Observations(2)"])
    answers = iter([httpx.Response(409, text="already exists"),
                    httpx.Response(400, text="result out of range")])
    fake.on_observation = lambda req: next(answers)
    fake.held = [{"@iot.id": 7, "parameters": {"obsId": str(observation_id(GW, 2))}}]
    async with uplink(fake, tmp_path) as up:
        delivery = await up.send(batch(1, 2, 3, 4))
    assert sorted(delivery.confirmed) == [1, 2, 4]
    assert delivery.rejected == {3: "HTTP 400: result out of range"}
    retried = [json.loads(r.content) for r in fake.posts("/Observations")]
    assert [b["parameters"]["seq"] for b in retried] == [2, 3]
    assert all(b["Datastream"] == {"@iot.id": 104} for b in retried)  # Thing..Datastream ids
    assert up.sender.stats["duplicates"] == 1
    lookups = [r for r in fake.requests if r.method == "GET" and r.url.path.endswith(
        "Datastreams(104)/Observations")]
    assert "obsId" in lookups[0].url.params["$filter"]


async def test_409_for_a_different_observation_is_not_delivered(tmp_path: Path) -> None:
    """istSOS4 answers 409 when the Datastream holds ANOTHER observation at the same
    phenomenonTime: ours was not stored, so it must not be confirmed (and deleted)."""
    fake = FakeSta()
    fake.on_create_observations = lambda req: httpx.Response(201, json=["error"])
    fake.on_observation = lambda req: httpx.Response(409, text="duplicate phenomenonTime")
    fake.held = [{"@iot.id": 7, "parameters": {"obsId": str(observation_id(GW, 99))}}]
    async with uplink(fake, tmp_path) as up:
        delivery = await up.send(batch(5))
    assert delivery.confirmed == []
    assert "different observation at this phenomenonTime" in delivery.rejected[5]
    assert up.sender.stats["conflicts"] == 1


async def test_server_without_create_observations_falls_back_for_good(tmp_path: Path) -> None:
    fake = FakeSta()
    fake.on_create_observations = lambda req: httpx.Response(404, text="no such resource")
    async with uplink(fake, tmp_path) as up:
        assert sorted((await up.send(batch(1, 2))).confirmed) == [1, 2]
        assert sorted((await up.send(batch(3))).confirmed) == [3]
    assert len(fake.posts("/CreateObservations")) == 1
    assert len(fake.posts("/Observations")) == 3
    async with uplink(FakeSta(), tmp_path) as again:  # remembered in the registry file
        assert not again.sender.use_data_array


@pytest.mark.parametrize("status", [500, 502, 503, 401, 403, 429])
async def test_whole_request_failures_raise(tmp_path: Path, status: int) -> None:
    fake = FakeSta()
    fake.on_create_observations = lambda req: httpx.Response(status, text="nope")
    async with uplink(fake, tmp_path) as up:
        with pytest.raises(SensorThingsUnavailable, match=f"HTTP {status}"):
            await up.send(batch(1, 2))


async def test_network_error_raises(tmp_path: Path) -> None:
    fake = FakeSta()

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    fake.on_create_observations = broken
    async with uplink(fake, tmp_path) as up:
        with pytest.raises(SensorThingsUnavailable, match="ReadTimeout"):
            await up.send(batch(1))


async def test_failure_after_partial_success_returns_what_settled(tmp_path: Path) -> None:
    """Chunk 1 stored, chunk 2 hits a 503: return chunk 1 as confirmed (no re-send)."""
    fake = FakeSta()
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return fake.all_created(request) if calls["n"] == 1 else httpx.Response(503)

    fake.on_create_observations = flaky
    async with uplink(fake, tmp_path, batch_size=2) as up:
        delivery = await up.send(batch(1, 2, 3, 4))
    assert sorted(delivery.confirmed) == [1, 2]
    assert delivery.rejected == {}


async def test_answer_of_the_wrong_length_is_not_trusted(tmp_path: Path) -> None:
    fake = FakeSta()
    fake.on_create_observations = lambda req: httpx.Response(201, json=["x(1)"])
    async with uplink(fake, tmp_path) as up:
        with pytest.raises(SensorThingsUnavailable, match="1 entries for 3 rows"):
            await up.send(batch(1, 2, 3))


async def test_validation_error_on_the_whole_request_isolates_rows(tmp_path: Path) -> None:
    fake = FakeSta()
    fake.on_create_observations = lambda req: httpx.Response(400, text="bad row somewhere")

    def per_row(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["result"] > 100:
            return httpx.Response(422, json={"detail": "result too large"})
        return fake.created(request, "Observations")

    fake.on_observation = per_row
    async with uplink(fake, tmp_path) as up:
        obs = batch(1, 2).observations + batch(3, result=500.0).observations
        delivery = await up.send(Batch(GW, obs))
    assert sorted(delivery.confirmed) == [1, 2]
    assert delivery.rejected == {3: 'HTTP 422: {"detail":"result too large"}'}


async def test_interval_refused_with_4xx_degrades_in_auto_mode(tmp_path: Path) -> None:
    fake = FakeSta()

    def no_intervals(request: httpx.Request) -> httpx.Response:
        if "/" in json.loads(request.content)["phenomenonTime"]:
            return httpx.Response(400, text="intervals not supported")
        return fake.created(request, "Observations")

    def bulk(request: httpx.Request) -> httpx.Response:
        rows = [r for g in json.loads(request.content) for r in g["dataArray"]]
        return httpx.Response(201, json=["error" if "/" in r[0] else f"{BASE}/Observations(1)"
                                         for r in rows])

    fake.on_create_observations = bulk
    fake.on_observation = no_intervals
    async with uplink(fake, tmp_path) as up:
        delivery = await up.send(batch(1, 2, 3, interval_s=60))
        assert up.sender.degrade_intervals
    assert sorted(delivery.confirmed) == [1, 2, 3]
    singles = [json.loads(r.content) for r in fake.posts("/Observations")]
    # seq 1: interval refused, end instant accepted ...
    assert [("/" in b["phenomenonTime"], b["parameters"]["seq"]) for b in singles] == [
        (True, 1), (False, 1)]
    # ... then seq 2 and 3 go again in one CreateObservations, as end instants.
    bulks = [json.loads(r.content) for r in fake.posts("/CreateObservations")]
    assert [[row[4]["seq"] for row in b[0]["dataArray"]] for b in bulks] == [[1, 2, 3], [2, 3]]
    assert all("/" not in row[0] for row in bulks[1][0]["dataArray"])
    # The next run remembers that this server refuses intervals.
    async with uplink(FakeSta(), tmp_path) as again:
        assert again.sender.degrade_intervals
    async with uplink(FakeSta(), tmp_path, phenomenon_interval="interval") as forced:
        assert not forced.sender.degrade_intervals


async def test_entity_registration_refused_rejects_that_streams_rows(tmp_path: Path) -> None:
    fake = FakeSta()
    inner = fake.__call__

    def no_pm10(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/Datastreams") and request.method == "POST" \
                and b"pm10" in request.content:
            return httpx.Response(400, text="unit not allowed")
        return inner(request)

    transport = httpx.MockTransport(no_pm10)
    s = SensorThingsHttpSettings(base_url=BASE)
    async with SensorThingsHttpUplink(s, GW, tmp_path, transport=transport) as up:
        obs = batch(1).observations + batch(2, 3, quantity="pm10").observations
        delivery = await up.send(Batch(GW, obs))
    assert delivery.confirmed == [1]
    assert set(delivery.rejected) == {2, 3}
    assert "unit not allowed" in delivery.rejected[2]


# -- auth --------------------------------------------------------------------------------


async def test_bearer_token_from_file_is_sent_and_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cr3t-t0ken\n")
    fake = FakeSta()
    caplog.set_level(logging.DEBUG)
    fake.on_create_observations = lambda req: httpx.Response(500, text="boom")
    async with uplink(fake, tmp_path, auth={"type": "bearer", "token_file": token_file}) as up:
        with pytest.raises(SensorThingsUnavailable) as err:
            await up.send(batch(1))
    assert all(r.headers["authorization"] == "Bearer s3cr3t-t0ken" for r in fake.requests)
    assert "s3cr3t" not in caplog.text
    assert "s3cr3t" not in str(err.value)
    assert "s3cr3t" not in repr(up.sender.settings)


async def test_basic_auth_password_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DUET_TEST_STA_PASSWORD", "pa55")
    fake = FakeSta()
    auth = {"type": "basic", "username": "gw", "password_env": "DUET_TEST_STA_PASSWORD"}
    async with uplink(fake, tmp_path, auth=auth) as up:
        await up.send(batch(1))
    expected = httpx.BasicAuth("gw", "pa55").auth_flow(httpx.Request("GET", BASE))
    header = next(expected).headers["authorization"]
    assert fake.requests and all(r.headers["authorization"] == header for r in fake.requests)


async def test_missing_secret_is_a_clear_error(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DUET_TEST_STA_TOKEN", raising=False)
    up = uplink(FakeSta(), tmp_path, auth={"type": "bearer", "token_env": "DUET_TEST_STA_TOKEN"})
    with pytest.raises(SensorThingsConfigError, match="DUET_TEST_STA_TOKEN is empty"):
        async with up:
            pass
    up = uplink(FakeSta(), tmp_path, auth={"type": "bearer", "token_file": tmp_path / "nope"})
    with pytest.raises(SensorThingsConfigError, match="cannot read token file"):
        async with up:
            pass


# -- registry cache ----------------------------------------------------------------------


async def test_cache_of_another_server_or_corrupt_cache_is_ignored(tmp_path: Path) -> None:
    from edge.sensorthings.settings import REGISTRY_FILE_NAME

    cache = tmp_path / REGISTRY_FILE_NAME
    for content in (json.dumps({"server": "https://other/v1.1",
                                "datastreams": {f"{GW}/sds011-1/pm2_5": 9}}), "{not json"):
        cache.write_text(content)
        fake = FakeSta()
        async with uplink(fake, tmp_path) as up:
            await up.send(batch(1))
        sent = json.loads(fake.posts("/CreateObservations")[0].content)
        assert sent[0]["Datastream"] != {"@iot.id": 9}
        assert json.loads(cache.read_text())["server"] == BASE
    # Now the cache is ours: a new uplink registers nothing.
    fake = FakeSta()
    async with uplink(fake, tmp_path) as up:
        await up.send(batch(2))
    assert [r.url.path for r in fake.requests] == ["/v1.1/CreateObservations"]
