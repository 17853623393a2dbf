"""Sensor → firmware → gateway → twin receiver, with a gateway restart in the middle.

- sensor: the emulated SDS011 and BME280 behind the firmware's hardware layer;
- firmware: the real node firmware under MicroPython (WebAssembly), link UART on a real pty;
- gateway: the lead's runtime (``edge.runtime.Gateway``) with this node_serial source, its
  SQLite outbox and MQTT uplink to a real Mosquitto;
- twin: the lead's receiver storing into SQLite.

The emulated PM sensor reads k during the node's k-th interval, so every batch is
identifiable at the twin: pm2_5 must arrive as exactly 1, 2, ..., N — none lost, none twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from edge.config import parse_config
from edge.node.serial_source import NodeSerialSource
from edge.node.settings import NodeSerialOptions
from edge.outbox import Outbox
from edge.runtime import Gateway
from hil.node_emulator import NodeEmulator
from tests.plugins.mosquitto import Broker
from tests.spine.harness import ReceiverThread

pytestmark = pytest.mark.timeout(120)

NODE_ID = "240ac4123456"
SENSOR = f"node1.{NODE_ID}.sds011"
INTERVAL_S = 10


def config_text(tmp: Path, broker_port: int, port: str) -> str:
    return f"""
[gateway]
id = "gw-node-e2e"
data_dir = "{tmp / 'data'}"

[buffer]
commit_interval_s = 0.2

[runtime]
backoff_initial_s = 0.2
backoff_max_s = 1.0
drain_timeout_s = 3

[uplinks.mqtt]
port = {broker_port}
batch_size = 200
keepalive_s = 5

[[sources]]
name = "node1"
type = "node_serial"
port = "{port}"
options = {{ state_path = "{tmp / 'data' / 'nodes.db'}", keepalive_s = 2 }}
"""


async def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class _Marks:
    """The node's mark as the running gateway's outbox holds it."""

    outbox: Outbox | None = None

    def get(self, node_id: str) -> int | None:
        value = None if self.outbox is None else self.outbox.state(f"node1/node-hwm/{node_id}")
        if isinstance(value, bytes):
            value = value.decode()
        return int(value) if value else None


async def test_sensor_to_twin_with_gateway_restart(
        tmp_path: Path, mosquitto: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = {"interval_s": INTERVAL_S, "pm_on_s": INTERVAL_S, "pm_warmup_s": 0,
           "ack_timeout_s": 30, "persist_ring": True, "ring_size": 64}
    marks = _Marks()
    with NodeEmulator("air", cfg, node_ms_per_tick=500, tick_s=0.01,
                      pm_ramp_ms=INTERVAL_S * 1000) as emu, \
            ReceiverThread(mosquitto.port, tmp_path / "twin.db") as rx:
        config = parse_config(config_text(tmp_path, mosquitto.port, emu.port))

        async def run_gateway(until) -> None:  # type: ignore[no-untyped-def]
            options = NodeSerialOptions.model_validate(config.sources[0].options)
            source = NodeSerialSource("node1", emu.port, config.gateway.id, options,
                                      clock_ms=emu.clock_ms)
            gateway = Gateway(config, sources=[source])
            marks.outbox = gateway.outbox  # the node marks' only copy
            stop = asyncio.Event()
            task = asyncio.create_task(gateway.run(stop))
            try:
                await until()
            finally:
                stop.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        async def first() -> None:
            await _wait(lambda: (marks.get(NODE_ID) or 0) >= 4, 40, "first batches committed")

        await run_gateway(first)
        first_mark = marks.get(NODE_ID) or 0
        await _wait(lambda: len(emu.status()["ring"]) >= 3, 30, "node buffering while down")

        async def second() -> None:
            await _wait(lambda: (marks.get(NODE_ID) or 0) >= first_mark + 6, 40, "after restart")
            emu.pause()
            await asyncio.sleep(0.5)  # let accepted batches commit before stopping

        await run_gateway(second)
        last = marks.get(NODE_ID) or 0

        def pm_values() -> list[float]:
            return [r[3] for r in rx.rows(SENSOR) if r[2] == "pm2_5"]

        await _wait(lambda: len(pm_values()) >= last, 30, "twin has every committed batch")
        values = pm_values()
        status = emu.status()
        rows = rx.rows(SENSOR)

    assert sorted(values) == [float(k) for k in range(1, last + 1)], "a batch lost or doubled"
    assert len(values) == len(set(values))
    assert status["stats"]["dropped"] == 0, status
    assert set(range(last + 1, status["next_seq"])) <= set(status["ring"])  # rest still on node
    quantities = {r[2] for r in rows}
    assert {"pm2_5", "pm10"} <= quantities
    temps = [r[3] for r in rx.rows(f"node1.{NODE_ID}.bme280") if r[2] == "temperature"]
    assert temps and all(abs(t - 21.5) < 0.05 for t in temps)
    prov = rows[0][5]
    assert NODE_ID in prov and "1.0.0" in prov
    assert rx.receiver.counters.rejected_messages == 0
