"""The ``node_serial`` source: a firmware node on a serial port (USB, UART or a pty).

It answers the node's hello with the time and the node's high-water mark, turns accepted
batches into observations with node provenance, and acknowledges a batch only after the
outbox committed its observations (the runtime's outbox sets ``Observation.sequence`` on
commit; the source waits for that, at most ``commit_wait_s``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import serial_asyncio_fast

from edge.node.session import AcceptedBatch, NodeSession
from edge.node.settings import NodeSerialOptions
from edge.node.store import HwmStore
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
        self._hwm: HwmStore | None = None
        self._unconfirmed: list[AcceptedBatch] = []
        self.clock_ms = clock_ms  # wall clock for time sync; None: the runtime's ctx.clock_ms

    @property
    def hwm(self) -> HwmStore:
        if self._hwm is None:
            self._hwm = HwmStore(self.options.state_path)
        return self._hwm

    async def run(self, ctx: SourceContext) -> None:
        reader, writer = await serial_asyncio_fast.open_serial_connection(
            url=self.port, baudrate=self.baudrate
        )
        session = NodeSession(
            self.gateway_id,
            self.name,
            _Marks(self.hwm, ctx),  # type: ignore[arg-type]
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
            self._settle_unconfirmed(session)

    def _settle_unconfirmed(self, session: NodeSession) -> None:
        """Stopped (shutdown, port error) while batches waited for their group commit.

        Their observations are in the outbox's pending group, which the runtime commits after
        stopping the sources. A loop callback keeps watching for that commit (at most
        ``commit_wait_s``) and only then persists the node's mark, so a restarted gateway
        recognises the node's resend as a duplicate. If the commit is never seen (the process
        ends first, or crashes), the mark is not written: the node resends and the batch is
        accepted again — never lost.
        """
        batches, self._unconfirmed = self._unconfirmed, []
        if not batches:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.commit_wait_s
        last = batches[-1]
        firmware = session.node.firmware if session.node else ""

        def check() -> None:
            if all(o.sequence is not None for b in batches for o in b.observations):
                session.hwm.set(last.node_id, last.seq, firmware)
            elif loop.time() < deadline:
                loop.call_later(COMMIT_POLL_S, check)
            else:
                log.warning(
                    "node batches not confirmed committed at stop; the node will resend",
                    extra={
                        "event": "node_commit_unconfirmed",
                        "source": self.name,
                        "seqs": [b.seq for b in batches],
                    },
                )

        check()

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
                # the node's mark commits in the same transaction as its observations, so
                # even a kill -9 between commit and the HwmStore write cannot duplicate it
                ctx.stage(f"node-hwm/{batch.node_id}", str(batch.seq))
                ctx.emit(batch.observations)
        if result.batches:
            self._unconfirmed = list(result.batches)
            await self._await_commit(result.batches)
            self._unconfirmed = []
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
    """A node's last committed batch: the later of the HwmStore and the outbox's own record."""

    def __init__(self, store: HwmStore, ctx: SourceContext) -> None:
        self.store = store
        self.ctx = ctx

    def get(self, node_id: str) -> int | None:
        stored = self.store.get(node_id)
        committed = self.ctx.recall(f"node-hwm/{node_id}")
        marks = [m for m in (stored, int(committed) if committed else None) if m is not None]
        return max(marks) if marks else None

    def set(self, node_id: str, seq: int, firmware: str = "") -> None:
        self.store.set(node_id, seq, firmware)
