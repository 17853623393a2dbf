"""The gateway's generic serial source reads every emulated sensor of the registry like a real
adapter, across an unplug/replug of the stable link (the runtime restarts ``run`` after it
raises)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from edge.config import SourceSettings
from edge.emulation.base import SensorEmulator
from edge.model import Observation
from edge.seams import SourceContext, SourceHealth
from edge.sources import build_source
from edge.sources.serial import SerialSource

from .registry import generic_serial

Factory = Callable[..., SensorEmulator]


def _is_subsequence(got: list[float], sent: list[float]) -> bool:
    it = iter(sent)
    return all(any(g == s for s in it) for g in got)


@pytest.mark.parametrize("sensor", generic_serial())
async def test_serial_source_survives_unplug_replug(emulator: Factory, sensor: str) -> None:
    emu = emulator(sensor, interval_s=0.02)
    settings = SourceSettings(name="s1", type=sensor, port=emu.port, interval_s=0.001,
                              options={"warmup_s": 0})
    source = build_source(settings, "gw-test")
    assert isinstance(source, SerialSource)
    source.poll_interval_s = 0.02  # polled sensors: ask as often as the emulator measures
    got: list[Observation] = []
    ctx = SourceContext("gw-test", got.extend, SourceHealth("s1"))
    quantity = emu.descriptor.quantities[0]

    def values() -> list[float]:
        return [o.result for o in got if o.stream.quantity_code == quantity]

    async def run_until(n: int) -> BaseException | None:
        """Run the source until ``n`` readings of the first quantity arrived (one per frame)."""
        task = asyncio.create_task(source.run(ctx))
        try:
            async with asyncio.timeout(10):
                while len(values()) < n and not task.done():
                    await asyncio.sleep(0.01)
        finally:
            if not task.done():
                task.cancel()
        (result,) = await asyncio.gather(task, return_exceptions=True)
        return None if isinstance(result, asyncio.CancelledError) else result

    assert await run_until(10) is None
    first = len(values())
    # unplug while reading: run() must end with an error, as for a yanked USB adapter
    task = asyncio.create_task(source.run(ctx))
    await asyncio.sleep(0.2)
    emu.unplug()
    async with asyncio.timeout(10):
        error = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(error[0], Exception), error
    emu.replug()  # maybe another /dev/pts/N; the configured symlink follows
    assert await run_until(len(values()) + 10) is None
    assert len(values()) >= first + 10  # data flows again after the replug
    sent = [s.values[quantity] for s in emu.sent_values if s.values]
    assert _is_subsequence(values(), sent)
    assert ctx.health.frames_ok >= len(values()) >= 20
