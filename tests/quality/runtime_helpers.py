"""Run the real gateway runtime over prepared batches (no hardware, no uplink)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

from edge.config import GatewayConfig, parse_config
from edge.model import Observation
from edge.runtime import Gateway, RuntimeOptions
from edge.seams import SourceContext


def gateway_config(gateway_id: str, data_dir: Path, quality: str = "") -> GatewayConfig:
    """A gateway with a placeholder source (replaced by the test's) and a [quality] section."""
    return parse_config(f"""
[gateway]
id = "{gateway_id}"
data_dir = "{data_dir}"

[[sources]]
name = "batches"
type = "pms5003"
port = "/dev/null"

[buffer]
commit_interval_s = 0.05
commit_rows = 500

[quality]
{quality}
""")


class BatchSource:
    """Emits the given batches in order (as a sensor source would), then waits."""

    def __init__(self, batches: Sequence[list[Observation]]) -> None:
        self.name = "batches"
        self.batches = batches
        self.done = asyncio.Event()

    async def run(self, ctx: SourceContext) -> None:
        for i, batch in enumerate(self.batches):
            ctx.emit(batch)
            if i % 100 == 0:
                await asyncio.sleep(0)  # let the committer run, as a real source would
        self.done.set()
        await asyncio.Event().wait()


async def run_gateway(config: GatewayConfig, batches: Sequence[list[Observation]]) -> None:
    """Run the runtime until every batch went through its stages, then stop it cleanly."""
    source = BatchSource(batches)
    gateway = Gateway(config, options=RuntimeOptions(drain_timeout_s=0.1), sources=[source],
                      uplinks={})
    halt = asyncio.Event()
    task = asyncio.create_task(gateway.run(halt))
    await asyncio.wait_for(source.done.wait(), 60)
    halt.set()
    with contextlib.suppress(asyncio.CancelledError):
        await task
