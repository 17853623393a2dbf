"""Uplinks to the twin, and the port through which each one sees the outbox.

Every uplink implements :class:`edge.seams.Uplink` (``async run(port)``). Request/response
uplinks (SensorThings HTTP) implement the smaller :class:`RequestUplink` instead and are run by
:class:`RequestUplinkRunner`, which drives them one batch at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self

from edge.model import Batch, Delivery
from edge.outbox import Outbox
from edge.seams import Gap, GatewayStatus, UplinkHealth, UplinkPort


class OutboxPort:
    """The :class:`edge.seams.UplinkPort` of one uplink, backed by the gateway's outbox."""

    def __init__(
        self,
        name: str,
        outbox: Outbox,
        new_data: asyncio.Event,
        health: UplinkHealth,
        on_bundle: Callable[[bytes], None] | None = None,
        status: GatewayStatus | None = None,
    ) -> None:
        self._name = name
        self.outbox = outbox
        self.new_data = new_data
        self._health = health
        self._on_bundle = on_bundle
        self._status = status

    @property
    def status(self) -> GatewayStatus | None:
        """The gateway's status (``Gateway.status``), for uplinks that publish it."""
        return self._status

    @property
    def name(self) -> str:
        return self._name

    @property
    def health(self) -> UplinkHealth:
        return self._health

    @property
    def accepts_bundles(self) -> bool:
        """True when the gateway verifies signed bundles (``[security.bundles]``)."""
        return self._on_bundle is not None

    def deliver_bundle(self, payload: bytes) -> None:
        """Hand a bundle that arrived on this uplink to the gateway (ignored if not accepted)."""
        if self._on_bundle is not None:
            self._on_bundle(payload)

    def next_batch(self, limit: int) -> Batch:
        return self.outbox.next_batch(self._name, limit)

    def pending_gaps(self) -> list[Gap]:
        return self.outbox.pending_gaps(self._name)

    def gaps_reported(self, gaps: list[Gap]) -> None:
        self.outbox.gaps_reported(self._name, gaps)

    def rewind(self) -> None:
        self.outbox.rewind(self._name)

    def settle(self, batch: Batch, delivery: Delivery, started: float) -> None:
        """Report the answer to a whole batch; rows it leaves open are handed out again."""
        self.confirm(delivery, started)
        if len(delivery.confirmed) + len(delivery.rejected) < len(batch):
            self.rewind()  # some rows neither confirmed nor rejected: send them again

    def confirm(self, delivery: Delivery, started: float) -> None:
        """Report confirmed and refused rows (of one or several batches) to the outbox."""
        self.outbox.settle(self._name, delivery)
        h = self._health
        h.confirmed += len(delivery.confirmed)
        h.rejected += len(delivery.rejected)
        if delivery.confirmed:
            h.last_confirmed_ms = time.time_ns() // 1_000_000
            h.record_latency(time.monotonic() - started)

    async def wait_for_data(self, timeout: float = 1.0) -> None:
        self.new_data.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # not wait_for: it can swallow a cancellation
                await self.new_data.wait()


class RequestUplink(Protocol):
    """An uplink that answers each batch: ``async with`` opens it, ``send`` uploads one."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def send(self, batch: Batch) -> Delivery: ...


class RequestUplinkRunner:
    """Runs a :class:`RequestUplink` as an :class:`edge.seams.Uplink`: one batch at a time;
    transport errors propagate (the runtime reconnects with backoff)."""

    def __init__(self, name: str, uplink: RequestUplink, batch_size: int) -> None:
        self._name = name
        self.uplink = uplink
        self.batch_size = batch_size

    @property
    def name(self) -> str:
        return self._name

    async def run(self, port: UplinkPort) -> None:
        async with self.uplink:
            port.rewind()
            port.health.state = "connected"
            while True:
                batch = port.next_batch(self.batch_size)
                if not batch:
                    await port.wait_for_data()
                    continue
                started = time.monotonic()
                delivery = await self.uplink.send(batch)
                port.health.sent_batches += 1
                port.health.sent_observations += len(batch)
                port.settle(batch, delivery, started)
