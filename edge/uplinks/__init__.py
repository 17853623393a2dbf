"""Uplinks to the twin. Each drains the outbox through :class:`UplinkPort`.

Two shapes are supported:
- a *streaming* uplink (MQTT) with ``async def run(port)`` that owns its connection and
  pipelines batches;
- a *request* uplink (SensorThings HTTP) with ``async with`` and ``async def send(batch)
  -> Delivery``, driven by :func:`drain_sequentially`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from edge.model import Batch, Delivery
from edge.outbox import Outbox


@dataclass(slots=True)
class UplinkHealth:
    name: str
    state: str = "starting"
    connected_since_ms: int | None = None
    last_confirmed_ms: int | None = None
    sent_batches: int = 0
    sent_observations: int = 0
    confirmed: int = 0
    rejected: int = 0
    reconnects: int = 0
    bytes_sent: int = 0
    retransmitted: int = 0  # observations sent again because no ack came in time
    awaiting_ack: int = 0  # observations published and not answered by the twin yet
    last_error: str = ""
    latency_s: list[float] = field(default_factory=list)  # recent upload latencies (bounded)

    def record_latency(self, seconds: float) -> None:
        self.latency_s.append(seconds)
        if len(self.latency_s) > 256:
            del self.latency_s[:128]

    def as_dict(self) -> dict[str, object]:
        lat = sorted(self.latency_s)
        return {
            "name": self.name,
            "state": self.state,
            "last_confirmed_ms": self.last_confirmed_ms,
            "sent_batches": self.sent_batches,
            "sent_observations": self.sent_observations,
            "confirmed": self.confirmed,
            "rejected": self.rejected,
            "reconnects": self.reconnects,
            "bytes_sent": self.bytes_sent,
            "retransmitted": self.retransmitted,
            "awaiting_ack": self.awaiting_ack,
            "last_error": self.last_error,
            "latency_p50_s": lat[len(lat) // 2] if lat else None,
        }


GatewayStatus = Callable[[], Mapping[str, object]]


class UplinkPort:
    """An uplink's view of the outbox: take batches, report deliveries, wait for new data.

    ``status`` (optional) returns the gateway's status (edge.runtime.Gateway.status) for
    uplinks that publish it.
    """

    def __init__(
        self,
        name: str,
        outbox: Outbox,
        new_data: asyncio.Event,
        health: UplinkHealth,
        status: GatewayStatus | None = None,
    ):
        self.name = name
        self.outbox = outbox
        self.new_data = new_data
        self.health = health
        self.status = status

    def next_batch(self, limit: int) -> Batch:
        return self.outbox.next_batch(self.name, limit)

    def pending_gaps(self) -> list[tuple[int, int, int, str]]:
        return self.outbox.pending_gaps(self.name)

    def gaps_reported(self, gaps: list[tuple[int, int, int, str]]) -> None:
        self.outbox.gaps_reported(self.name, gaps)

    def rewind(self) -> None:
        self.outbox.rewind(self.name)

    def settle(self, batch: Batch, delivery: Delivery, started: float) -> None:
        """Report the answer to a whole batch; rows it leaves open are handed out again."""
        self.confirm(delivery, started)
        if len(delivery.confirmed) + len(delivery.rejected) < len(batch):
            self.rewind()  # some rows neither confirmed nor rejected: send them again

    def confirm(self, delivery: Delivery, started: float) -> None:
        """Report confirmed and refused rows (of one or several batches) to the outbox."""
        self.outbox.settle(self.name, delivery)
        h = self.health
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


async def drain_sequentially(uplink: object, port: UplinkPort, batch_size: int) -> None:
    """Drive a request uplink: one batch at a time; transport errors propagate (→ backoff)."""
    async with uplink:  # type: ignore[attr-defined]
        port.rewind()
        port.health.state = "connected"
        while True:
            batch = port.next_batch(batch_size)
            if not batch:
                await port.wait_for_data()
                continue
            started = time.monotonic()
            delivery: Delivery = await uplink.send(batch)  # type: ignore[attr-defined]
            port.health.sent_batches += 1
            port.health.sent_observations += len(batch)
            port.settle(batch, delivery, started)
