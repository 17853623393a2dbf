"""``/metrics`` (Prometheus) and ``/healthz`` for ``duet-edge ingest --http HOST:PORT``.

Needs the ``web`` extra (aiohttp, prometheus-client). Metric names start with ``duet_ingest_``
(this receiver) or ``duet_twin_`` (what the store holds, refreshed every ``refresh_s``, so every
receiver of a shared PostgreSQL store reports the same fleet numbers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from edge.ingest.receiver import Observer, Receiver
from edge.ingest.rows import IngestBatch
from edge.ingest.store import StoreOutcome, TwinStore
from edge.ingest.store_common import SILENT_AFTER_MS
from edge.sensorthings import GeoPoint

log = logging.getLogger("duet.ingest.http")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
                   60.0, 120.0, 300.0, 600.0, 1800.0)


class ReceiverMetrics(Observer):
    """Prometheus metrics fed by the receiver's :class:`Observer` hooks."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.messages_total = Counter("duet_ingest_messages", "MQTT messages received, by kind",
                                ["kind"], registry=r)
        self.stored = Counter("duet_ingest_observations_stored",
                              "Observations written to the store", registry=r)
        self.duplicates = Counter("duet_ingest_duplicates",
                                  "Observations received again and already stored", registry=r)
        self.rejected_total = Counter("duet_ingest_rejected_messages",
                                "Messages refused (kept as dead letters)", registry=r)
        self.transactions = Counter("duet_ingest_transactions",
                                    "Store transactions (each holds one or more messages)",
                                    registry=r)
        self.transaction_seconds = Histogram("duet_ingest_transaction_seconds",
                                             "Time to store one group of messages", registry=r)
        self.end_to_end = Histogram(
            "duet_ingest_end_to_end_seconds",
            "From the gateway encoding a batch (its 'sent' time) to its commit at the twin",
            buckets=LATENCY_BUCKETS, registry=r)
        self.connected_gauge = Gauge("duet_ingest_connected", "1 while connected to the broker",
                                     registry=r)
        self.last_message = Gauge("duet_ingest_last_message_timestamp_seconds",
                                  "When the last message arrived (Unix time)", registry=r)
        self.gateways = Gauge("duet_twin_gateways", "Gateways the store knows", registry=r)
        self.silent = Gauge("duet_twin_gateways_silent",
                            f"Gateways not heard from for {SILENT_AFTER_MS // 60000} min",
                            registry=r)
        self.offline = Gauge("duet_twin_gateways_offline",
                             "Gateways whose status says offline (last will)", registry=r)
        self.backlog = Gauge("duet_twin_gateway_backlog",
                             "Observations waiting in gateways' outboxes (last heartbeats)",
                             registry=r)
        self.versions = Gauge("duet_twin_gateways_by_version", "Gateways per software version",
                              ["version"], registry=r)
        self.forward_queued = Gauge("duet_twin_forward_queue_items",
                                    "Batches waiting for the SensorThings forwarder", registry=r)
        self.forward_dead = Gauge("duet_twin_forward_dead_letters",
                                  "Observations the SensorThings server refused", registry=r)
        self.forward_parked = Gauge("duet_twin_forward_parked_gateways",
                                    "Gateways whose forwarding is parked (backoff)", registry=r)
        self.dead_letters = Gauge("duet_twin_dead_letters", "Messages refused by receivers",
                                  registry=r)

    def group_stored(self, batches: Sequence[IngestBatch], outcomes: Sequence[StoreOutcome],
                     seconds: float, now_ms: int) -> None:
        self.transactions.inc()
        self.transaction_seconds.observe(seconds)
        done_ms = time.time_ns() // 1_000_000
        for batch, outcome in zip(batches, outcomes, strict=True):
            self.stored.inc(outcome.new)
            self.duplicates.inc(outcome.duplicates)
            if batch.sent_ms > 0:
                self.end_to_end.observe(max(0.0, (done_ms - batch.sent_ms) / 1000))
        self.last_message.set(now_ms / 1000)

    def rejected(self, reason: str) -> None:
        self.rejected_total.inc()

    def connected(self, up: bool) -> None:
        self.connected_gauge.set(1 if up else 0)

    def messages(self, kind: str, count: int) -> None:
        if count:
            self.messages_total.labels(kind).inc(count)

    async def refresh_fleet(self, store: TwinStore) -> None:
        now_ms = time.time_ns() // 1_000_000
        fleet = await store.fleet(now_ms)
        totals = await store.totals()
        self.gateways.set(len(fleet))
        self.silent.set(sum(1 for g in fleet if g.last_seen_ms is None
                            or now_ms - g.last_seen_ms > SILENT_AFTER_MS))
        self.offline.set(sum(1 for g in fleet if g.state == "offline"))
        self.backlog.set(sum(g.backlog or 0 for g in fleet))
        self.versions.clear()
        by_version: dict[str, int] = {}
        for g in fleet:
            by_version[g.version or "unknown"] = by_version.get(g.version or "unknown", 0) + 1
        for version, n in by_version.items():
            self.versions.labels(version).set(n)
        self.forward_queued.set(totals.forward_queued)
        self.forward_dead.set(totals.forward_dead_letters)
        self.forward_parked.set(sum(1 for g in fleet if g.forward_parked_until_ms is not None
                                    and g.forward_parked_until_ms > now_ms))
        self.dead_letters.set(totals.dead_letters)


def health(receiver: Receiver) -> tuple[int, dict[str, object]]:
    """(HTTP status, body): 200 while connected and subscribed, else 503 with the reason."""
    since = receiver.last_message_monotonic
    body: dict[str, object] = {
        "connected": receiver.connected,
        "subscribed": receiver.subscribed.is_set(),
        "last_error": receiver.last_error,
        "seconds_since_last_message": None if since is None
        else round(time.monotonic() - since, 1),
        "counters": receiver.counters.as_dict(),
    }
    ok = receiver.connected and receiver.subscribed.is_set()
    body["status"] = "ok" if ok else "unavailable"
    return (200 if ok else 503), body


async def serve_http(receiver: Receiver, metrics: ReceiverMetrics, fleet_store: TwinStore,
                     host: str, port: int, stop: asyncio.Event, refresh_s: float = 30.0) -> None:
    """Serve /metrics and /healthz until ``stop`` is set; ``fleet_store`` is a connection of
    its own to the receiver's store (fleet numbers are read there, outside its transactions)."""

    async def metrics_page(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        status, body = health(receiver)
        return web.Response(status=status, text=json.dumps(body),
                            content_type="application/json")

    async def oslo(request: web.Request) -> web.Response:
        """``/oslo?gateway=…&since=…&until=…&limit=…``: JSON-LD (edge.ingest.oslo)."""
        from edge.commands.oslo_cmd import parse_time
        from edge.ingest.oslo import export

        q = request.query
        try:
            since = parse_time(q.get("since"), "since")
            until = parse_time(q.get("until"), "until")
            limit = min(int(q.get("limit", "1000")), 100_000)
        except ValueError as exc:
            return web.Response(status=400, text=str(exc))
        rows = await fleet_store.read_observations(q.get("gateway"), since, until, limit)
        where = {gw: GeoPoint(*p) for gw, p in (await fleet_store.locations()).items()}
        return web.Response(text=json.dumps(export(rows, where)),
                            content_type="application/ld+json")

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/oslo", oslo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("metrics and health on http://%s:%d/metrics, /healthz", host, port,
             extra={"event": "ingest_http", "host": host, "port": port})
    try:
        while not stop.is_set():
            try:
                await metrics.refresh_fleet(fleet_store)
            except Exception as exc:  # the store is down: /healthz and the receiver say so
                log.debug("fleet metrics not refreshed: %s", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(refresh_s):
                    await stop.wait()
    finally:
        await runner.cleanup()
