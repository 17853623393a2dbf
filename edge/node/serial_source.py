"""The ``node_serial`` source: a firmware node on a serial port (USB, UART or a pty).

It answers the node's hello with the time and the node's high-water mark, turns accepted
batches into observations with node provenance, and acknowledges a batch only after the
outbox committed its observations (the runtime's outbox sets ``Observation.sequence`` on
commit; the source waits for that, at most ``commit_wait_s``).

The node's mark has one owner: the outbox's staged state. It is staged right before the
batch's observations are emitted, so both commit in the same journal record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import serial_asyncio_fast

from edge.node.session import AcceptedBatch, NodeSession
from edge.node.settings import NodeSerialOptions
from edge.node.store import read_legacy_marks
from edge.seams import SourceContext

log = logging.getLogger("duet.node.serial")

READ_CHUNK = 4096
COMMIT_POLL_S = 0.02


class NodeSerialSource:
    """Source for one node on one serial port."""

    def __init__(
        self,
        name: str,
        port: str,
        gateway_id: str,
        options: NodeSerialOptions | None = None,
        baudrate: int | None = None,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.gateway_id = gateway_id
        self.options = options or NodeSerialOptions.model_validate({})
        self.baudrate = baudrate or self.options.baudrate
        self.session: NodeSession | None = None
        self.clock_ms = clock_ms  # wall clock for time sync; None: the runtime's ctx.clock_ms

    async def run(self, ctx: SourceContext) -> None:
        reader, writer = await serial_asyncio_fast.open_serial_connection(
            url=self.port, baudrate=self.baudrate
        )
        session = NodeSession(
            self.gateway_id,
            self.name,
            _Marks(ctx, self.options.state_path),
            self.clock_ms or ctx.clock_ms,
            ctx.health.frames_bad,
        )
        self.session = session
        ctx.health.device["port"] = self.port
        ctx.health.connected_since_ms = ctx.clock_ms()
        ctx.health.set_state("connected", f"opened {self.port}")
        writer.write(session_sync())  # ask for a hello: we may have restarted mid-session
        try:
            while True:
                try:  # asyncio.timeout: wait_for can swallow a cancellation on Python 3.11
                    async with asyncio.timeout(self.options.keepalive_s):
                        data = await reader.read(READ_CHUNK)
                except TimeoutError:
                    writer.write(session_sync())
                    continue
                if not data:
                    raise ConnectionError(f"{self.port} closed")
                await self._handle(ctx, session, writer, data)
        finally:
            writer.close()

    async def _handle(
        self, ctx: SourceContext, session: NodeSession, writer: Any, data: bytes
    ) -> None:
        bad_before = sum(ctx.health.frames_bad.values())
        result = session.feed(data)
        for _ in range(min(sum(ctx.health.frames_bad.values()) - bad_before, 50)):
            ctx.health.frame_result(False)
        for reply in result.replies:
            writer.write(reply)
        if session.node is not None:
            ctx.health.device["node_id"] = session.node.node_id
            ctx.health.device["firmware"] = session.node.firmware
        for batch in result.batches:
            ctx.health.frames_ok += 1
            ctx.health.frame_result(True)
            ctx.health.last_frame_ms = ctx.clock_ms()
            if batch.observations:
                ctx.health.observations += len(batch.observations)
                # the node's mark commits in the same journal record as its observations:
                # no crash can separate them
                ctx.stage(f"node-hwm/{batch.node_id}", str(batch.seq))
                ctx.emit(batch.observations)
        if result.batches:
            # stopped while waiting: the batches and their staged mark commit together with
            # the runtime's final commit, or not at all (then the node resends them)
            await self._await_commit(result.batches)
            last = result.batches[-1]
            writer.write(session.committed(last.node_id, last.seq))
            await writer.drain()

    async def _await_commit(self, batches: list[AcceptedBatch]) -> None:
        """Wait until the outbox committed every observation of ``batches`` (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.commit_wait_s
        while loop.time() < deadline:
            if all(o.sequence is not None for b in batches for o in b.observations):
                return
            await asyncio.sleep(COMMIT_POLL_S)
        log.warning(
            "outbox did not confirm a node batch in time; acking anyway",
            extra={
                "event": "node_commit_unconfirmed",
                "source": self.name,
                "seqs": [b.seq for b in batches],
            },
        )


def session_sync() -> bytes:
    from firmware import nodeproto

    return nodeproto.encode_message({"type": "sync"})


def build_node_serial(settings: Any, gateway_id: str) -> NodeSerialSource:
    """Factory for ``SOURCE_FACTORIES["node_serial"]`` (settings: edge.config.SourceSettings)."""
    options = NodeSerialOptions.model_validate(settings.options or {})
    if not settings.port:
        raise ValueError(f"source {settings.name!r}: a node_serial source needs 'port'")
    return NodeSerialSource(settings.name, settings.port, gateway_id, options, settings.baudrate)


class _Marks:
    """A node's last committed batch: the outbox's staged state is its only copy.

    Versions before 0.9 kept marks in their own SQLite file (``options.state_path``). Its
    marks are staged into the outbox once, at start; as soon as they are committed the file
    is renamed ``<name>.migrated`` and never read again. Until then (at most one commit
    interval) a legacy mark still counts, so no batch is accepted twice across the upgrade.
    """

    def __init__(self, ctx: SourceContext, legacy_path: Path) -> None:
        self.ctx = ctx
        self.legacy_path = legacy_path
        self.legacy = read_legacy_marks(legacy_path)
        for node_id, seq in self.legacy.items():
            if (self._committed(node_id) or 0) < seq:
                ctx.stage(f"node-hwm/{node_id}", str(seq))
        self._finish_migration()

    def _committed(self, node_id: str) -> int | None:
        value = self.ctx.recall(f"node-hwm/{node_id}")
        return int(value) if value else None

    def _finish_migration(self) -> None:
        if not self.legacy:
            return
        if all((self._committed(n) or 0) >= s for n, s in self.legacy.items()):
            moved = self.legacy_path.with_name(self.legacy_path.name + ".migrated")
            try:
                self.legacy_path.replace(moved)
            except OSError as exc:
                log.warning("node marks migrated; old marks file not renamed",
                            extra={"event": "node_marks_migrated", "path": str(moved),
                                   "reason": str(exc)})
            else:
                log.info("node marks migrated into the outbox",
                         extra={"event": "node_marks_migrated", "path": str(moved)})
            self.legacy = {}

    def get(self, node_id: str) -> int | None:
        self._finish_migration()
        marks = [m for m in (self._committed(node_id), self.legacy.get(node_id)) if m is not None]
        return max(marks) if marks else None

    def set(self, node_id: str, seq: int, firmware: str = "") -> None:
        """Nothing to write: the mark was staged with the batch and committed with it."""
        del node_id, seq, firmware
