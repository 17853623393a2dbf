"""OAuth2 client credentials and custom headers against a real SensorThings server behind an
authorising front (token endpoint + bearer check + istSOS4's ``commit-message`` rule)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from edge.ingest.sta_forward import StaForwarder
from edge.sensorthings import GeoPoint
from edge.sensorthings.settings import SensorThingsHttpSettings
from tests.plugins.mosquitto import free_port
from tests.sta.helpers import make_obs

pytestmark = pytest.mark.timeout(60)
SECRET = "s3cr3t-client"


@dataclass
class Front:
    url: str
    lifetime_s: float
    tokens: dict[str, float] = field(default_factory=dict)  # token → expiry (monotonic)
    issued: int = 0
    unauthorised: int = 0
    missing_commit_message: int = 0

    def revoke_all(self) -> None:
        self.tokens.clear()


@pytest.fixture
async def front(sta_server: str) -> AsyncIterator[Front]:
    counter = itertools.count(1)
    state = Front(url="", lifetime_s=3.0)

    async def token(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        form = await request.post()
        basic_ok = auth == "Basic " + base64.b64encode(f"duet:{SECRET}".encode()).decode()
        if not basic_ok or form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "invalid_client"}, status=401)
        tok = f"tok-{next(counter)}"
        state.tokens[tok] = time.monotonic() + state.lifetime_s
        state.issued += 1
        return web.json_response({"access_token": tok, "token_type": "Bearer",
                                  "expires_in": state.lifetime_s})

    async def proxy(request: web.Request) -> web.Response:
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if state.tokens.get(bearer, 0) < time.monotonic():
            state.unauthorised += 1
            return web.Response(status=401, text="token expired or unknown")
        if request.method == "POST" and not request.headers.get("commit-message"):
            state.missing_commit_message += 1
            return web.Response(status=400, text="commit-message header required")
        url = sta_server + "/" + request.match_info["path"]
        async with httpx.AsyncClient() as http:
            upstream = await http.request(request.method, url, params=request.query,
                                          content=await request.read(),
                                          headers={"Content-Type": "application/json"})
        headers = {k: v for k, v in upstream.headers.items() if k.lower() == "location"}
        return web.Response(status=upstream.status_code, body=upstream.content,
                            headers=headers, content_type="application/json")

    app = web.Application()
    app.router.add_post("/token", token)
    app.router.add_route("*", "/sta/{path:.*}", proxy)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


def settings(front: Front, tmp_path: Path, secret: str = SECRET) -> SensorThingsHttpSettings:
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(secret + "\n")
    return SensorThingsHttpSettings.model_validate({
        "base_url": front.url + "/sta",
        "auth": {"type": "oauth2", "token_url": front.url + "/token", "client_id": "duet",
                 "client_secret_file": str(secret_file)},
        "headers": {"commit-message": "duet-edge twin forwarder"},
    })


async def test_oauth2_token_is_refreshed_before_it_expires(front: Front, tmp_path: Path) -> None:
    gw = "oa-" + uuid.uuid4().hex[:6]
    where = {gw: GeoPoint(4.4, 51.2)}
    async with StaForwarder(settings(front, tmp_path), tmp_path, where) as fwd:
        first = await fwd.forward_observations(gw, [make_obs(gw, 1)])
        await asyncio.sleep(front.lifetime_s + 0.5)  # the first token has expired by now
        second = await fwd.forward_observations(gw, [make_obs(gw, 2)])
        front.revoke_all()  # the server forgets every token: one 401, then a fresh token
        third = await fwd.forward_observations(gw, [make_obs(gw, 3)])
    assert (first.confirmed, second.confirmed, third.confirmed) == ([1], [2], [3])
    assert front.issued == 3
    assert front.unauthorised == 1  # only the revoked one: expiry never reached the server
    assert front.missing_commit_message == 0


async def test_a_refused_client_secret_parks_instead_of_crashing(front: Front,
                                                                 tmp_path: Path) -> None:
    from edge.sensorthings.client import SensorThingsUnavailable

    gw = "oa-" + uuid.uuid4().hex[:6]
    async with StaForwarder(settings(front, tmp_path, secret="wrong"), tmp_path,
                            {gw: GeoPoint(4.4, 51.2)}) as fwd:
        with pytest.raises(SensorThingsUnavailable, match="refused client 'duet'"):
            await fwd.forward_observations(gw, [make_obs(gw, 1)])
    assert front.issued == 0
