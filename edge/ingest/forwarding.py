"""Forwarding from the twin store to a SensorThings server, one gateway's trouble at a time.

The receiver stores first and queues the new rows of every batch in the same transaction
(``forward_queue``). This loop takes the oldest queued item of each gateway that is not parked,
sends it with :class:`~edge.ingest.sta_forward.StaForwarder`, and settles it:

- rows the server stored (or verifiably holds already) are done;
- rows the server refuses permanently become **forward dead letters** with the server's reason
  (``forward_dead_letter``; ``duet-edge fleet`` shows the count) — never retried forever;
- when the server is unavailable for that gateway (5xx, network, auth, throttling) or refuses
  the gateway's rows because it has no location yet, **that gateway is parked** with its own
  exponential backoff (5 s … 1 h) and its items wait; every other gateway keeps flowing.

Storing never waits for forwarding: a down SensorThings server only grows the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from edge.ingest.rows import to_observations
from edge.ingest.sta_forward import SensorThingsConfigError, SensorThingsUnavailable, StaForwarder
from edge.ingest.store import ForwardItem, TwinStore

log = logging.getLogger("duet.ingest.forward")

PARK_INITIAL_S = 5.0
PARK_MAX_S = 3600.0


@dataclass(slots=True)
class ForwardLoopCounters:
    items: int = 0
    forwarded: int = 0
    dead_letters: int = 0
    parked: int = 0


def park_delay_s(attempts: int) -> float:
    """Backoff of a parked gateway after ``attempts`` failed tries: 5 s, 10 s, … 1 h."""
    return float(min(PARK_MAX_S, PARK_INITIAL_S * 2 ** min(attempts, 20)))


class ForwardLoop:
    """Drain the store's forward queue into a SensorThings server."""

    def __init__(self, store: TwinStore, forwarder: StaForwarder, claim: int = 20,
                 poll_s: float = 1.0) -> None:
        self.store = store
        self.forwarder = forwarder
        self.claim = claim
        self.poll_s = poll_s
        self.counters = ForwardLoopCounters()

    async def run(self, stop: asyncio.Event) -> None:
        async with self.forwarder:
            while not stop.is_set():
                done = await self.step()
                if not done:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll_s):
                            await stop.wait()

    async def step(self) -> int:
        """Forward one claim of items; returns how many items were handled."""
        now_ms = time.time_ns() // 1_000_000
        items = await self.store.forward_claim(now_ms, self.claim)
        for item in items:
            await self._forward(item)
        return len(items)

    async def _forward(self, item: ForwardItem) -> None:
        self.counters.items += 1
        gateway = item.gateway
        observations = to_observations(item.rows)
        try:
            delivery = await self.forwarder.forward_observations(gateway, observations)
        except (SensorThingsUnavailable, SensorThingsConfigError) as exc:
            await self._park(item, str(exc))
            return
        missing_location = self.forwarder.missing_location(gateway)
        if delivery.rejected and missing_location:
            # Most servers derive the FeatureOfInterest from the Thing's Location: until the
            # operator gives one, the rows wait (the Thing gets its Location when it comes).
            await self._park(item, f"gateway {gateway} has no location; add it to "
                                   f"--gateway-locations (server said: "
                                   f"{next(iter(delivery.rejected.values()))})")
            return
        now_ms = time.time_ns() // 1_000_000
        settled = set(delivery.confirmed) | set(delivery.rejected)
        pending = [i for i, seq in enumerate(item.rows.seq) if seq not in settled]
        remaining = item.rows.select(pending) if pending else None
        await self.store.forward_settle(item, delivery.rejected, now_ms, remaining)
        self.counters.forwarded += len(delivery.confirmed)
        self.counters.dead_letters += len(delivery.rejected)
        if remaining is not None:
            await self._park(item, f"{len(pending)} of {len(item.rows)} observations not "
                                   f"forwarded yet (server unavailable)")
        if delivery.rejected:
            log.warning("SensorThings server refused observations; kept as forward dead letters",
                        extra={"event": "sta_forward_dead_letters", "gateway": gateway,
                               "count": len(delivery.rejected),
                               "reason": next(iter(delivery.rejected.values()))})

    async def _park(self, item: ForwardItem, error: str) -> None:
        delay = park_delay_s(item.attempts)
        until_ms = time.time_ns() // 1_000_000 + int(delay * 1000)
        self.counters.parked += 1
        await self.store.forward_park(item.gateway, until_ms, error)
        log.warning("forwarding of one gateway parked; the others continue",
                    extra={"event": "sta_forward_parked", "gateway": item.gateway,
                           "retry_in_s": delay, "reason": error})
