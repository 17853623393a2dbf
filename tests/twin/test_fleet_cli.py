"""`duet-edge fleet` on a store filled the way the receiver fills it."""

from __future__ import annotations

import asyncio
import json
import time

from typer.testing import CliRunner

from edge.cli import app
from edge.ingest.store import TwinStore, open_store
from tests.twin.helpers import batch


async def fill(store: TwinStore, now_ms: int) -> None:
    await store.store_batches([batch("gw-live", range(1, 6))], now_ms - 10_000)
    await store.put_status("gw-live", {"state": "online", "version": "0.3.1", "backlog": 7,
                                       "oldest_unsent_ms": now_ms - 90_000}, now_ms - 5_000)
    await store.store_batches([batch("gw-quiet", range(1, 3))], now_ms - 3 * 3600_000)
    await store.put_status("gw-quiet", {"state": "offline"}, now_ms - 3 * 3600_000)
    await store.add_event("gw-quiet", "disk_full", {"free_mb": 1}, now_ms - 3 * 3600_000)
    await store.forward_park("gw-quiet", now_ms + 600_000, "HTTP 400: no location")


async def fill_target(target: str, now_ms: int) -> None:
    store = open_store(target)
    await store.open()
    try:
        await fill(store, now_ms)
    finally:
        await store.close()


def test_fleet_json_and_table(store_target: str) -> None:
    now_ms = time.time_ns() // 1_000_000
    asyncio.run(fill_target(store_target, now_ms))
    runner = CliRunner()
    res = runner.invoke(app, ["fleet", "--store", store_target, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    by_gw = {g["gateway"]: g for g in out["gateways"]}
    assert out["summary"] == {"gateways": 2, "online": 1, "offline": 1, "silent": 1,
                              "backlog": 7, "forward_parked": 1}
    assert [g["gateway"] for g in out["gateways"]] == ["gw-quiet", "gw-live"]  # silent first
    live, quiet = by_gw["gw-live"], by_gw["gw-quiet"]
    assert (live["version"], live["backlog"], live["observations"], live["silent"]) == (
        "0.3.1", 7, 5, False)
    assert (quiet["silent"], quiet["events_24h"], quiet["last_event"]) == (True, 1, "disk_full")
    assert quiet["forward_error"] == "HTTP 400: no location"
    res = runner.invoke(app, ["fleet", "--store", store_target, "--only", "silent", "--json"])
    assert [g["gateway"] for g in json.loads(res.output)["gateways"]] == ["gw-quiet"]
    res = runner.invoke(app, ["fleet", "--store", store_target], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "SILENT" in res.output and "0.3.1" in res.output and "parked" in res.output
    assert "2 gateways: 1 online, 1 offline, 1 silent; 7 observations waiting" in res.output


def test_fleet_without_a_store_says_so(tmp_path: object) -> None:
    res = CliRunner().invoke(app, ["fleet", "--store", "/nonexistent/twin.db"])
    assert res.exit_code == 2
    assert "no such store" in res.output
