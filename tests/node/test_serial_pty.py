"""The node_serial source against the real firmware (MicroPython) on a real pseudo-terminal.

The gateway side is the lead's real SQLite outbox with group commits, driven like the
runtime does; the source is stopped and started again in the middle (gateway restart):
no node batch may be lost or committed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
from pathlib import Path

import pytest

from edge.config import BufferSettings
from edge.node.serial_source import NodeSerialSource
from edge.node.settings import NodeSerialOptions
from edge.outbox import Outbox
from edge.seams import SourceContext, SourceHealth
from hil.node_emulator import NodeEmulator

pytestmark = pytest.mark.timeout(90)

NODE_ID = "240ac4123456"


async def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _text(value: str | bytes | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class _OutboxMarks:
    """The node marks as the outbox holds them (their only copy)."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def get(self, node_id: str) -> int | None:
        value = _text(self.outbox.state(f"node1/node-hwm/{node_id}"))
        return int(value) if value else None


class MiniRuntime:
    """What the runtime does around one source: context, group commits, stop = commit."""

    def __init__(self, tmp: Path) -> None:
        self.outbox = Outbox(tmp / "outbox.db", BufferSettings.model_validate(
            {"commit_interval_s": 0.2}), "gw-node", uplinks=["none"])
        self.health = SourceHealth("node1")
        self.options = NodeSerialOptions.model_validate(
            {"state_path": str(tmp / "nodes.db"), "keepalive_s": 2})
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def marks(self) -> _OutboxMarks:
        return _OutboxMarks(self.outbox)

    async def _committer(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            if self.outbox.commit_due():
                self.outbox.commit()

    def start(self, emu: NodeEmulator) -> NodeSerialSource:
        source = NodeSerialSource("node1", emu.port, "gw-node", self.options,
                                  clock_ms=emu.clock_ms)
        ctx = SourceContext(
            "gw-node", self.outbox.append, self.health,
            stage=lambda k, v: self.outbox.stage_state("node1/" + k, v),
            recall=lambda k: _text(self.outbox.state("node1/" + k)),
        )
        self._tasks = [asyncio.create_task(source.run(ctx)), asyncio.create_task(self._committer())]
        return source

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.outbox.commit()  # the runtime commits the pending group after stopping sources


async def test_node_over_pty_with_gateway_restart(tmp_path: Path) -> None:
    cfg = {"interval_s": 10, "pm_on_s": 10, "pm_warmup_s": 0, "ack_timeout_s": 30,
           "persist_ring": True, "ring_size": 64}
    # the PM sensor reads k during the node's k-th interval: batches are identifiable
    with NodeEmulator("air", cfg, node_ms_per_tick=500, tick_s=0.01, pm_ramp_ms=10_000) as emu:
        rt = MiniRuntime(tmp_path)
        marks = rt.marks
        rt.start(emu)
        await _wait(lambda: (marks.get(NODE_ID) or 0) >= 3, 30, "three batches committed")
        await rt.stop()
        first_run = marks.get(NODE_ID) or 0
        # gateway down: the node keeps measuring; what it writes now is lost on the wire
        await _wait(lambda: len(emu.status()["ring"]) >= 3, 30, "batches piling up in the node")
        rt.start(emu)
        await _wait(lambda: (marks.get(NODE_ID) or 0) >= first_run + 5, 40, "resent + new batches")
        emu.pause()  # freeze the node; let the gateway commit what it accepted, then stop it
        await asyncio.sleep(0.5)
        await rt.stop()
        status = emu.status()

    batch = rt.outbox.next_batch("none", 100_000)
    pm = [o for o in batch.observations if o.stream.quantity_code == "pm2_5"]
    values = [o.result for o in pm]
    last_seq = marks.get(NODE_ID)
    assert last_seq is not None and last_seq > first_run + 3
    # every batch 1..last committed exactly once, in order
    assert values == [float(k) for k in range(1, last_seq + 1)], (values, status)
    starts = [o.phenomenon_ms for o in pm]
    steps = [b - a for a, b in itertools.pairwise(starts)]
    # interval times advance by the interval (the restart's time re-sync shifts them by the
    # reply delay, which is large in node time here: node time runs 50x faster than the wall)
    assert statistics.median(steps) == 10_000, steps
    assert len(pm) == last_seq  # one committed batch per sequence number, none missing
    # whatever is not committed is still waiting in the node (unacked), not lost
    assert set(range(last_seq + 1, status["next_seq"])) <= set(status["ring"])
    assert status["stats"]["dropped"] == 0, status
    assert {o.provenance.node_id for o in batch.observations} == {NODE_ID}
    assert {o.provenance.firmware_version for o in batch.observations} == {"1.0.0"}
    assert rt.health.frames_ok >= last_seq
