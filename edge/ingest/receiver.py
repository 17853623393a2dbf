"""The twin receiver: subscribes with an MQTT 5 shared subscription, so several instances split
the load on a clustered broker (EMQX, VerneMQ, HiveMQ, Mosquitto ≥ 2), decodes and validates
compact batches, and stores them in a :class:`~edge.ingest.store.TwinStore` (SQLite or
PostgreSQL), de-duplicated by (gateway, seq).

Messages that arrive together are stored together: the receiver takes every message already
waiting (up to ``group_max``), stores their batches in ONE transaction, and acknowledges
(PUBACK) them only after the commit — so a receiver that dies mid-group gets them all again from
the broker, and the store's (gateway, seq) key absorbs the redelivery. An invalid message is
kept as a dead letter with its reason and acknowledged, so one poison message never blocks the
stream.

Besides batches (``<prefix>/<gw>/obs``) it stores each gateway's retained status/heartbeat
(``<prefix>/<gw>/status``) and its events (``<prefix>/<gw>/events/<kind>``) for
``duet-edge fleet``. Forwarding to SensorThings runs beside it from the store's forward queue
(:mod:`edge.ingest.forwarding`), so a slow or refusing server never holds up storing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.backoff import Backoff
from edge.contract import ContractError
from edge.ingest.columns import decode_columns
from edge.ingest.rows import IngestBatch, check_storable
from edge.ingest.store import (
    Rejection,
    StoreOutcome,
    StoreUnavailable,
    TwinStore,
    open_store,
)
from edge.tls import TlsSettings, read_secret, tls_context

log = logging.getLogger("duet.ingest")

NO_MESSAGE_WARNING_S = 300.0  # warn when subscribed this long without a single message


@dataclass(slots=True)
class ReceiverSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    topic_prefix: str = "duet/v1"
    share_group: str | None = "duet-ingest"  # None: a plain (non-shared) persistent subscription
    client_id: str = "duet-ingest-1"
    store_path: Path | str = Path("twin.db")  # an SQLite file or a postgresql:// URL
    username: str | None = None
    password_file: Path | None = None
    tls: TlsSettings | None = None
    session_expiry_s: int = 86400
    group_max: int = 500  # most messages stored in one transaction
    group_linger_s: float = 0.05  # wait this long for more when fewer are queued
    forward: bool = False  # queue new rows for the SensorThings forwarder
    progress_interval_s: float = 60.0  # a counts line in the log this often
    no_message_warning_s: float = NO_MESSAGE_WARNING_S


@dataclass(slots=True)
class ReceiverCounters:
    messages: int = 0
    observations_new: int = 0
    duplicates: int = 0
    rejected_messages: int = 0
    gaps_announced: int = 0
    reconnects: int = 0
    transactions: int = 0
    status_messages: int = 0
    events: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class GroupResult:
    """What one group of messages did, after its commit: per stored batch its outcome (its
    ``seq_ranges()`` are what the twin now holds for that gateway), and the refused messages
    (dead letters)."""

    stored: list[tuple[IngestBatch, StoreOutcome]] = dataclasses.field(default_factory=list)
    refused: list[Rejection] = dataclasses.field(default_factory=list)


class SubscriptionRefused(Exception):
    """The broker refused a subscription (SUBACK reason code ≥ 0x80)."""


class Observer:
    """Hooks for metrics (edge.ingest.metrics); the default does nothing."""

    def group_stored(self, batches: Sequence[IngestBatch], outcomes: Sequence[StoreOutcome],
                     seconds: float, now_ms: int) -> None: ...

    def rejected(self, reason: str) -> None: ...

    def connected(self, up: bool) -> None: ...

    def messages(self, kind: str, count: int) -> None: ...


def parse_status(payload: bytes) -> dict[str, object]:
    """A status message: contract v2's JSON object, or v1's plain ``online``/``offline``."""
    text = payload.decode("utf-8", "replace").strip()
    if text in ("online", "offline"):
        return {"state": text}
    status = json.loads(text)
    if not isinstance(status, dict):
        raise ValueError("status is not a JSON object nor online/offline")
    return status


class Receiver:
    """Subscribe, validate, store (de-duplicated); status and events for the fleet view."""

    def __init__(
        self,
        settings: ReceiverSettings,
        store: TwinStore | None = None,
        on_batch: Callable[[IngestBatch, int], None] | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.settings = settings
        self.store = store if store is not None else open_store(settings.store_path)
        self.counters = ReceiverCounters()
        self.on_batch = on_batch
        self.observer = observer or Observer()
        self.subscribed = asyncio.Event()
        self.connected = False
        self.last_message_monotonic: float | None = None
        self.last_error = ""
        self._opened = False

    # -- topics -------------------------------------------------------------------------

    def _shared(self, plain: str) -> str:
        group = self.settings.share_group
        return f"$share/{group}/{plain}" if group else plain

    @property
    def topic(self) -> str:
        return self._shared(f"{self.settings.topic_prefix}/+/obs")

    @property
    def topics(self) -> list[str]:
        """Batches, status and events (shared: each message is stored by one receiver)."""
        p = self.settings.topic_prefix
        return [self.topic, self._shared(f"{p}/+/status"), self._shared(f"{p}/+/events/#")]

    # -- session ------------------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.session_expiry_s
        client = aiomqtt.Client(
            hostname=s.host,
            port=s.port,
            identifier=s.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=props,
            username=s.username,
            password=read_secret(s.password_file),
            tls_context=tls_context(s.tls) if s.tls else None,
        )
        client._client.manual_ack_set(True)  # PUBACK only after the batch is stored
        return client

    async def open(self) -> None:
        if not self._opened:
            await self.store.open()
            self._opened = True

    async def close(self) -> None:
        if self._opened:
            await self.store.close()
            self._opened = False

    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
        await self.open()
        backoff = Backoff(0.5, 10.0)
        while stop is None or not stop.is_set():
            try:
                await self._session()
            except SubscriptionRefused:
                raise
            except Exception as exc:  # broker or database gone: the messages stay unacked
                self.subscribed.clear()
                self._set_connected(False)
                self.counters.reconnects += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                delay = backoff.next_delay()
                log.warning(
                    "receiver session ended (broker or database failure); reconnecting",
                    extra={
                        "event": "ingest_disconnected",
                        "reason": self.last_error,
                        "retry_in_s": round(delay, 2),
                    },
                )
                await asyncio.sleep(delay)

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        self.observer.connected(up)

    async def _session(self) -> None:
        async with self._client() as client:
            self._set_connected(True)
            for topic in self.topics:
                await self._subscribe(client, topic)
            self.subscribed.set()
            self.last_error = ""
            log.info("receiver subscribed", extra={"event": "ingest_subscribed",
                                                   "topics": self.topics})
            watchdog = asyncio.create_task(self._no_message_watchdog())
            try:
                await self._consume(client)
            finally:
                watchdog.cancel()

    async def _subscribe(self, client: aiomqtt.Client, topic: str) -> None:
        granted = await client.subscribe(topic, qos=1)
        for code in granted:
            value = code if isinstance(code, int) else code.value
            if value >= 0x80:
                raise SubscriptionRefused(
                    f"the broker refused the subscription to {topic} ({code}): this receiver's "
                    f"identity may not read it; the ACL of `duet-edge provision broker-config` "
                    f"lets only certificates with CN receiver-… read duet/v1/+/obs")

    async def _no_message_watchdog(self) -> None:
        """Mosquitto grants a subscription the ACL forbids and then delivers nothing: say so."""
        started = time.monotonic()
        await asyncio.sleep(self.settings.no_message_warning_s)
        if self.last_message_monotonic is None or self.last_message_monotonic < started:
            log.warning(
                "subscribed but no message received: if gateways are publishing, the broker's "
                "ACL does not let this receiver read the topics (its certificate CN must start "
                "with receiver-)",
                extra={"event": "ingest_no_messages", "topics": self.topics,
                       "seconds": self.settings.no_message_warning_s})

    async def _consume(self, client: aiomqtt.Client) -> None:
        # aiomqtt hands out one message per task switch; the ones already queued are taken
        # together from its queue, so a busy receiver stores hundreds per transaction.
        queue: asyncio.Queue[aiomqtt.Message] = client._queue
        linger = self.settings.group_linger_s
        async for first in client.messages:
            group = [first]
            self._take_queued(queue, group)
            if len(group) < self.settings.group_max and linger > 0:
                # a quiet moment: wait a little for more, so that one commit (one fsync of the
                # database) carries many messages instead of one
                await asyncio.sleep(linger)
                self._take_queued(queue, group)
            await self.handle_messages([(str(m.topic), bytes(m.payload)) for m in group])
            for m in group:
                client._client.ack(m.mid, m.qos)

    def _take_queued(self, queue: asyncio.Queue[aiomqtt.Message],
                     group: list[aiomqtt.Message]) -> None:
        while len(group) < self.settings.group_max:
            try:
                group.append(queue.get_nowait())
            except asyncio.QueueEmpty:
                return

    # -- messages -----------------------------------------------------------------------

    async def handle(self, topic: str, payload: bytes) -> GroupResult:
        """Process one message (see :meth:`handle_messages`)."""
        return await self.handle_messages([(topic, payload)])

    async def handle_messages(self, messages: Sequence[tuple[str, bytes]]) -> GroupResult:
        """Validate and store a group of messages; batches share one transaction.

        Returns once everything is committed — what was stored (per batch: new and duplicate
        rows, the sequence ranges to confirm to each gateway) and what was refused — and
        raises (nothing acknowledged) when the store fails, so the broker redelivers the group.
        """
        result = GroupResult()
        await self.open()
        now_ms = time.time_ns() // 1_000_000
        self.last_message_monotonic = time.monotonic()
        batches: list[IngestBatch] = []
        sources: dict[int, tuple[str, bytes]] = {}  # id(batch) → its message
        obs_messages = 0
        prefix = self.settings.topic_prefix + "/"
        for topic, payload in messages:
            self.counters.messages += 1
            gateway, _, kind = topic.removeprefix(prefix).partition("/")
            if kind == "status":
                await self._status(topic, gateway, payload, now_ms, result.refused)
            elif kind.startswith("events"):
                await self._event(topic, gateway, kind.removeprefix("events").strip("/"),
                                  payload, now_ms)
            else:
                obs_messages += 1
                batch = await self._decode(topic, gateway, payload, now_ms, result.refused)
                if batch is not None:
                    batches.append(batch)
                    sources[id(batch)] = (topic, payload)
        self.observer.messages("obs", obs_messages)
        if not batches:
            return result
        started = time.perf_counter()
        try:
            outcomes = await self.store.store_batches(batches, now_ms,
                                                      forward=self.settings.forward)
        except StoreUnavailable:
            raise  # nothing acknowledged: the broker keeps the messages
        except Exception as exc:  # caused by a batch's data: find it, keep the others flowing
            log.warning("store refused a group; storing its batches one by one",
                        extra={"event": "ingest_group_refused", "reason": str(exc)[:300]})
            batches, outcomes = await self._one_by_one(batches, sources, now_ms,
                                                       result.refused)
        self.counters.transactions += 1
        self.observer.group_stored(batches, outcomes, time.perf_counter() - started, now_ms)
        for batch, outcome in zip(batches, outcomes, strict=True):
            self.counters.observations_new += outcome.new
            self.counters.duplicates += outcome.duplicates
            self.counters.gaps_announced += len(batch.gaps)
            result.stored.append((batch, outcome))
            if self.on_batch is not None:
                self.on_batch(batch, outcome.new)
        return result

    async def _one_by_one(self, batches: list[IngestBatch],
                          sources: dict[int, tuple[str, bytes]], now_ms: int,
                          refused: list[Rejection]) -> tuple[list[IngestBatch],
                                                             list[StoreOutcome]]:
        """Store each batch alone; one the store still refuses is dead-lettered."""
        kept: list[IngestBatch] = []
        outcomes: list[StoreOutcome] = []
        for batch in batches:
            try:
                outcome = (await self.store.store_batches([batch], now_ms,
                                                          forward=self.settings.forward))[0]
            except StoreUnavailable:
                raise
            except Exception as exc:
                topic, payload = sources[id(batch)]
                await self._reject(Rejection(
                    topic, f"the store refused it: {type(exc).__name__}: {exc}"[:1000],
                    payload, batch.gateway, batch.first_seq, batch.last_seq), now_ms, refused)
                continue
            kept.append(batch)
            outcomes.append(outcome)
        return kept, outcomes

    async def _decode(self, topic: str, gateway: str, payload: bytes, now_ms: int,
                      refused: list[Rejection]) -> IngestBatch | None:
        try:
            batch = decode_columns(payload)
            if batch.gateway != gateway:
                raise ContractError(f"gateway {batch.gateway!r} published on {topic!r}")
            check_storable(batch, now_ms)
        except ContractError as exc:
            await self._reject(Rejection(topic, str(exc), payload, gateway or None), now_ms,
                               refused)
            return None
        return batch

    async def _reject(self, rejection: Rejection, now_ms: int,
                      refused: list[Rejection]) -> None:
        refused.append(rejection)
        self.counters.rejected_messages += 1
        self.observer.rejected(rejection.reason)
        await self.store.reject(rejection, now_ms)
        log.warning("rejected message", extra={
            "event": "ingest_rejected", "topic": rejection.topic, "reason": rejection.reason})

    async def _status(self, topic: str, gateway: str, payload: bytes, now_ms: int,
                      refused: list[Rejection]) -> None:
        self.observer.messages("status", 1)
        if not payload:
            return  # a retained status being cleared
        try:
            status = parse_status(payload)
        except ValueError as exc:
            await self._reject(Rejection(topic, f"status: {exc}", payload, gateway), now_ms,
                               refused)
            return
        self.counters.status_messages += 1
        await self.store.put_status(gateway, status, now_ms)

    async def _event(self, topic: str, gateway: str, kind: str, payload: bytes,
                     now_ms: int) -> None:
        self.observer.messages("event", 1)
        try:
            body: object = json.loads(payload) if payload else None
        except ValueError:
            body = {"text": payload.decode("utf-8", "replace")[:2000]}
        if kind == "" and isinstance(body, dict) and isinstance(body.get("kind"), str):
            kind = str(body["kind"])
        self.counters.events += 1
        await self.store.add_event(gateway, kind or "event", body, now_ms)

    # -- reporting ------------------------------------------------------------------------

    async def log_progress(self, stop: asyncio.Event) -> None:
        """A counts line every ``progress_interval_s`` while running."""
        last = self.counters.observations_new
        last_t = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.progress_interval_s):
                    await stop.wait()
            now = time.monotonic()
            stored = self.counters.observations_new
            log.info("ingest progress", extra={
                "event": "ingest_progress", **self.counters.as_dict(),
                "obs_per_s": round((stored - last) / max(now - last_t, 1e-9), 1)})
            last, last_t = stored, now

    def log_summary(self, seconds: float) -> None:
        c = self.counters
        log.info("ingest summary: %d messages, %d observations stored, %d duplicates, "
                 "%d rejected, %d reconnects in %.0f s", c.messages, c.observations_new,
                 c.duplicates, c.rejected_messages, c.reconnects, seconds,
                 extra={"event": "ingest_summary", **c.as_dict(),
                        "seconds": round(seconds, 1)})
