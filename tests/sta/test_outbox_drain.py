"""End to end on the gateway side: outbox → RequestUplinkRunner → SensorThings uplink → real
server. Confirmed rows leave the outbox; a row the server refuses lands in the dead letters."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest

from edge import sensorthings as sta
from edge.model import Datastream
from edge.seams import UplinkHealth
from edge.sensorthings.settings import REGISTRY_FILE_NAME, SensorThingsHttpSettings
from edge.uplinks.sensorthings_http import SensorThingsHttpUplink
from tests.sta.helpers import make_obs

NAME = "sensorthings_http"


async def test_outbox_drains_into_the_server(sta_server: str, tmp_path: Path) -> None:
    config = pytest.importorskip("edge.config")
    outbox_mod = pytest.importorskip("edge.outbox")
    uplinks = pytest.importorskip("edge.uplinks")
    gw = "e2e-" + uuid.uuid4().hex[:8]
    bad = Datastream(gw, "sds011-1", "pm10")
    (tmp_path / REGISTRY_FILE_NAME).write_text(json.dumps({
        "server": sta_server, "datastreams": {sta.datastream_key(bad): "not-a-uuid"}}))
    outbox = outbox_mod.Outbox(tmp_path / "outbox.db", config.BufferSettings(), gw, (NAME,))
    observations = [make_obs(gw, 0, t_ms=1_764_064_800_000 + i * 1000,
                             quantity="pm10" if i == 3 else "pm2_5",
                             interval_s=60 if i % 2 else None) for i in range(8)]
    for o in observations:
        o.sequence = None
    outbox.append(observations)
    outbox.commit()
    port = uplinks.OutboxPort(NAME, outbox, asyncio.Event(), UplinkHealth(NAME))
    up = SensorThingsHttpUplink(SensorThingsHttpSettings(base_url=sta_server), gw, tmp_path,
                                sta.GeoPoint(3.72, 51.05))
    task = asyncio.create_task(uplinks.RequestUplinkRunner(NAME, up, up.batch_size).run(port))
    try:
        for _ in range(200):  # ≤ 20 s
            if outbox.depth() == 0:
                break
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert outbox.depth() == 0
    letters = outbox.dead_letters()
    assert len(letters) == 1 and letters[0][1] == NAME and "HTTP 422" in letters[0][2]
    assert port.health.confirmed == 7
    ds_id = up.sender.registry.cached(observations[0].stream)
    url = f"{sta_server}/{sta.entity_path('Datastreams', ds_id)}/Observations"  # type: ignore[arg-type]
    assert len(httpx.get(url).json()["value"]) == 7
    outbox.close()
