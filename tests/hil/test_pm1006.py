"""A PM1006 on a real pseudo-terminal, read by the generic serial source inside the real
Gateway, into a real outbox: tapped inside a VINDRIKTNING (the gateway never transmits) and
wired directly (the gateway polls)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge.config import parse_config
from edge.outbox import iter_unsent
from edge.runtime import Gateway
from edge.sensors.pm1006 import codec
from edge.sensors.pm1006.emulator import Pm1006Emulator
from edge.sources.serial import SerialSource

pytestmark = pytest.mark.timeout(60)

CONFIG = """
[gateway]
id = "gw-pm1006"
data_dir = "{data}"
[buffer]
commit_interval_s = 0.1
[[sources]]
name = "vindriktning-1"
type = "pm1006"
port = "{port}"
options = {{ polled_by = "{polled_by}", warmup_s = 0 }}
"""


def _run_gateway(tmp_path: Path, emu: Pm1006Emulator, polled_by: str,
                 poll_interval_s: float | None = None) -> list[float]:
    """Run a gateway on ``emu`` until 8 readings arrived; return the outbox's PM2.5 values."""
    config = parse_config(CONFIG.format(data=tmp_path / "data", port=emu.port,
                                        polled_by=polled_by))
    gateway = Gateway(config, uplinks=[])
    (source,) = gateway.sources
    assert type(source) is SerialSource  # the generic serial source, nothing PM1006-specific
    if poll_interval_s is not None:
        source.poll_interval_s = poll_interval_s  # the default is the sensor's 20 s

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(gateway.run(stop))
        for _ in range(200):  # bounded: at most 10 s
            await asyncio.sleep(0.05)
            if gateway.counters.observations_in >= 8:
                break
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(main())
    stored = list(iter_unsent(config.outbox_path))
    assert {(o.stream.sensor_id, o.stream.quantity_code) for o in stored} == {
        ("vindriktning-1", "pm2_5")}
    assert all(o.provenance.sensor_model == "PM1006" for o in stored)
    return [o.result for o in stored]


def _sent(emu: Pm1006Emulator) -> list[float]:
    return [s.values["pm2_5"] for s in emu.sent_values]


def _in_order_within(got: list[float], sent: list[float]) -> bool:
    it = iter(sent)
    return all(any(g == s for s in it) for g in got)


def test_vindriktning_tap_listens_only_and_fills_the_outbox(tmp_path: Path) -> None:
    with Pm1006Emulator(tmp_path / "tty", polled_by="vindriktning", interval_s=0.05) as emu:
        stored = _run_gateway(tmp_path, emu, "vindriktning")
    assert len(stored) >= 8
    assert _in_order_within(stored, _sent(emu))
    assert emu.commands_seen == []  # not one byte from the gateway: the line is the IKEA's


def test_directly_wired_sensor_is_polled_into_the_outbox(tmp_path: Path) -> None:
    with Pm1006Emulator(tmp_path / "tty", interval_s=0.05) as emu:
        stored = _run_gateway(tmp_path, emu, "gateway", poll_interval_s=0.05)
    assert len(stored) >= 8
    assert stored == _sent(emu)[: len(stored)]  # every answer to a poll, in order
    assert emu.commands_seen and set(emu.commands_seen) == {codec.cmd_read_pm()}
