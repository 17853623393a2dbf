"""SensorThings upload throughput against the real test server (django-ogc-sensorthings).

Run: .venv/bin/python bench/bench_sta_upload.py [N]
Uploads N observations (default 2000) three ways to a fresh local server and prints
observations/s and request bytes per observation:
  - baseline: one ``POST Observations`` per observation (create_observations = false),
  - CreateObservations dataArray with batch_size 100,
  - CreateObservations dataArray with batch_size 500,
and the ratio of each against the baseline measured in the same run.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge import sensorthings as sta
from edge.model import Batch, Datastream, Observation, Provenance, Quality
from edge.sensorthings.settings import SensorThingsHttpSettings
from edge.uplinks.sensorthings_http import SensorThingsHttpUplink
from tests.plugins.sta_server import running_sta_server

T0 = 1_764_064_800_000


def observations(gw: str, n: int) -> tuple[Observation, ...]:
    streams = [Datastream(gw, "sps30-1", q) for q in ("pm1", "pm2_5", "pm10", "nc0_5")]
    prov = Provenance("SPS30", sensor_serial="X1")
    out = []
    for seq in range(1, n + 1):
        q = Quality()
        q.set("gross_range", 1)
        out.append(Observation(streams[seq % 4], 10.0 + seq % 7, T0 + seq * 1000, prov,
                               quality=q, sequence=seq))
    return tuple(out)


async def run(base: str, tag: str, n: int, work: Path, **kw: object) -> tuple[float, float]:
    gw = f"bench-{tag}"
    sent = {"bytes": 0}

    async def count(request: httpx.Request) -> None:
        sent["bytes"] += len(request.content)

    settings = SensorThingsHttpSettings(base_url=base, **kw)  # type: ignore[arg-type]
    up = SensorThingsHttpUplink(settings, gw, work / tag, sta.GeoPoint(3.72, 51.05))
    batch = Batch(gw, observations(gw, n))
    async with up:
        await up.ensure_datastreams([(o.stream, "SPS30") for o in batch.observations[:4]])
        up.sender.http.event_hooks["request"].append(count)
        started = time.perf_counter()
        delivery = await up.send(batch)
        elapsed = time.perf_counter() - started
    assert len(delivery.confirmed) == n, (tag, len(delivery.confirmed))
    return n / elapsed, sent["bytes"] / n


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with running_sta_server(work) as base:
            one = await run(base, "one-by-one", n, work, create_observations=False)
            b100 = await run(base, "dataarray-100", n, work, batch_size=100)
            b500 = await run(base, "dataarray-500", n, work, batch_size=500)
    print(f"SensorThings upload, {n} observations, django-ogc-sensorthings on SQLite, localhost")
    print(f"{'mode':<16}{'obs/s':>10}{'bytes/obs':>11}{'vs baseline':>13}")
    for name, (rate, size) in (("one-by-one", one), ("dataArray 100", b100),
                               ("dataArray 500", b500)):
        print(f"{name:<16}{rate:>10.0f}{size:>11.0f}{rate / one[0]:>12.1f}x")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
