"""The twin receiver: no message can stop it.

It subscribes to ``<prefix>/+/obs``, ``<prefix>/+/status`` and ``<prefix>/+/events/#`` (MQTT 5
shared subscriptions by default, so several workers split the load), and for each group of
messages that arrived together:

1. decodes and validates every batch completely (edge.contract) before any database work; a
   v2 batch that refers to a session dictionary neither this worker nor the store knows gets a
   ``need`` answer;
2. stores every valid batch in ONE transaction of its :class:`edge.ingest.store.TwinStore`
   (SQLite or PostgreSQL; each (gateway, seq) once; with forwarding on, the new rows are queued
   for the SensorThings forwarder in the same transaction); if that fails for a reason of the
   data, stores them one by one and dead-letters the batch that still fails alone — only a
   store that is unavailable as a whole (:class:`StoreUnavailable`) stops acknowledging;
3. keeps refused messages as dead letters, with their reason and payload, and the gateways'
   status (birth, heartbeat, last will) and events for ``duet-edge fleet``;
4. publishes one ack per gateway on ``<prefix>/<gw>/ack`` (``ok``, ``x``, ``need``), and only
   then acknowledges the messages to the broker (PUBACK). An ack beyond the broker's Receive
   Maximum leaves as soon as it has room, possibly after that PUBACK; a receiver that dies in
   between leaves the gateway without it, and the gateway sends those rows again after its
   ``ack_timeout_s`` (stored once, answered again).

So a receiver that dies anywhere gets the unacknowledged messages again; a poison message is
answered and acknowledged once, never redelivered forever. Reconnects back off with jitter,
and the backoff starts again from its first step after a healthy session.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge.backoff import Backoff
from edge.contract import (
    Ack,
    ContractError,
    SessionDictionary,
    UnknownDictionary,
    encode_ack,
    merge_ranges,
    seq_ranges,
)
from edge.ingest.columns import ReceivedBatch, decode_columns
from edge.ingest.mqtt_client import ClientSettings, MqttError, SubscriberClient
from edge.ingest.rows import IngestBatch, check_storable
from edge.ingest.store import (
    DictionaryRow,
    Rejection,
    StoreOutcome,
    StoreUnavailable,
    TwinStore,
    open_store,
)
from edge.tls import TlsSettings, read_secret, tls_context

log = logging.getLogger("duet.ingest")

# Session dictionaries a worker keeps: one per v2 gateway, and with a shared subscription every
# worker meets every gateway, so this must exceed the fleet (about 6 KB each). Below it, a
# worker reads a dictionary back from the store for almost every message (a 20,000-gateway
# fleet at 1 message/min with 4,096: one round trip and one commit per message, twice the CPU).
DICTIONARY_CACHE = 32_768
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
    max_group: int = 500  # most messages stored in one transaction
    # MQTT 5 Receive Maximum: the most unacknowledged messages the broker may send us (two
    # groups' worth: the next group arrives while one is stored). Mosquitto 2.0.11 keeps to it
    # only until acks flow (benchmarks.md), so the client also stops reading the socket with
    # this many messages waiting: a burst waits in the broker either way.
    receive_maximum: int = 1000
    group_linger_s: float = 0.05  # wait this long for more when fewer are queued
    dictionary_cache: int = DICTIONARY_CACHE
    forward: bool = False  # queue new rows for the SensorThings forwarder
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 2.0  # few receivers per broker: no thundering herd to avoid
    healthy_after_s: float = 5.0  # a session that lasted this long resets the backoff
    progress_interval_s: float = 60.0  # a counts line in the log this often
    no_message_warning_s: float = NO_MESSAGE_WARNING_S


@dataclass(slots=True)
class ReceiverCounters:
    messages: int = 0
    observations_new: int = 0
    duplicates: int = 0
    rejected_messages: int = 0
    rejected_rows: int = 0
    store_dead_letters: int = 0  # batches the store failed on by themselves
    needs: int = 0
    dictionary_loads: int = 0  # read back from the store: not (or no longer) held by this worker
    gaps_announced: int = 0
    acks_published: int = 0
    reconnects: int = 0
    transactions: int = 0
    status_messages: int = 0
    events: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class SubscriptionRefused(Exception):
    """The broker refused a subscription (SUBACK reason code ≥ 0x80)."""


class Observer:
    """Hooks for metrics (edge.ingest.metrics); the default does nothing."""

    def group_stored(self, batches: Sequence[IngestBatch], outcomes: Sequence[StoreOutcome],
                     seconds: float, now_ms: int) -> None: ...

    def rejected(self, reason: str) -> None: ...

    def connected(self, up: bool) -> None: ...

    def messages(self, kind: str, count: int) -> None: ...


@dataclass(slots=True)
class _Message:
    """One received batch message on its way through a group."""

    topic: str
    payload: bytes
    gateway_id: str | None  # from the topic: the only gateway an answer goes to
    batch: ReceivedBatch | None = None
    rows: IngestBatch | None = None  # the accepted rows, as the store takes them
    rejection: Rejection | None = None
    x: list[tuple[int, int, str]] = field(default_factory=list)
    need: UnknownDictionary | None = None


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
    """Subscribe, validate, store, answer; keep the gateways' status and events."""

    def __init__(
        self,
        settings: ReceiverSettings,
        on_batch: Callable[[ReceivedBatch, int], None] | None = None,
        store: TwinStore | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.settings = settings
        self.store: TwinStore = store if store is not None else open_store(settings.store_path)
        self.counters = ReceiverCounters()
        self.on_batch = on_batch
        self.observer = observer or Observer()
        self.subscribed = asyncio.Event()
        self.connected = False
        self.last_message_monotonic: float | None = None
        self.last_error = ""
        self._dictionaries: OrderedDict[tuple[str, bytes], SessionDictionary] = OrderedDict()
        self._cache_full_logged = False
        self._subscribed_at: float | None = None
        self._opened = False

    # ------------------------------------------------------------------------ topics
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

    def ack_topic(self, gateway_id: str) -> str:
        return f"{self.settings.topic_prefix}/{gateway_id}/ack"

    def _client(self) -> SubscriberClient:
        s = self.settings
        return SubscriberClient(ClientSettings(
            host=s.host, port=s.port, client_id=s.client_id, username=s.username,
            password=read_secret(s.password_file), tls=tls_context(s.tls) if s.tls else None,
            clean_start=False, session_expiry_s=s.session_expiry_s,
            receive_maximum=s.receive_maximum))

    async def open(self) -> None:
        if not self._opened:
            await self.store.open()
            self._opened = True

    async def close(self) -> None:
        if self._opened:
            await self.store.close()
            self._opened = False

    # ------------------------------------------------------------------------ sessions
    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
        await self.open()
        s = self.settings
        backoff = Backoff(s.backoff_initial_s, s.backoff_max_s)
        while stop is None or not stop.is_set():
            started = time.monotonic()
            cause, reason = "broker", ""
            try:
                await self._session(stop)
                if stop is not None and stop.is_set():
                    return  # a clean stop: the last group was answered and acknowledged
                reason = "session ended"
            except SubscriptionRefused:
                raise
            except MqttError as exc:
                reason = str(exc) or type(exc).__name__
            except StoreUnavailable as exc:
                cause, reason = "store", str(exc)
            except Exception as exc:  # a bug: say so, with the traceback, and carry on
                cause, reason = "bug", f"{type(exc).__name__}: {exc}"
                log.exception("receiver session failed", extra={"event": "ingest_error"})
            self.subscribed.clear()
            self._set_connected(False)
            self.last_error = f"{cause}: {reason}"
            self.counters.reconnects += 1
            healthy = self._was_healthy(started)
            if healthy:
                backoff.reset()
            delay = backoff.next_delay()
            log.warning(
                f"receiver session ended ({cause}); reconnecting",
                extra={"event": "ingest_disconnected", "cause": cause, "reason": reason,
                       "after_healthy_session": healthy, "retry_in_s": round(delay, 2)},
            )
            await asyncio.sleep(delay)

    def _was_healthy(self, started: float) -> bool:
        """The session that began at ``started`` subscribed and then ran long enough."""
        since = self._subscribed_at
        return (since is not None and since >= started
                and time.monotonic() - since >= self.settings.healthy_after_s)

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        self.observer.connected(up)

    async def _session(self, stop: asyncio.Event | None) -> None:
        async with self._client() as client:
            self._set_connected(True)
            for topic in self.topics:
                await self._subscribe(client, topic)
            self._subscribed_at = time.monotonic()
            self.subscribed.set()
            self.last_error = ""
            log.info("receiver subscribed", extra={"event": "ingest_subscribed",
                                                   "topics": self.topics})
            watchdog = asyncio.create_task(self._no_message_watchdog())
            try:
                await self._consume(client, stop)
            finally:
                watchdog.cancel()

    async def _subscribe(self, client: SubscriberClient, topic: str) -> None:
        granted = await client.subscribe(topic, qos=1)
        for code in granted:
            if code >= 0x80:
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

    async def _consume(self, client: SubscriberClient, stop: asyncio.Event | None) -> None:
        """Take what has arrived as one group, store and answer it, then PUBACK it."""
        most = self.settings.max_group
        linger = self.settings.group_linger_s
        while True:
            first = await client.next_message(stop)
            if first is None:
                return  # stop asked: leave with every handled message acknowledged
            group = [first, *client.take(most - 1)]
            if len(group) < most and linger > 0:
                # a quiet moment: wait a little for more, so that one commit (one fsync of the
                # database) carries many messages instead of one
                await asyncio.sleep(linger)
                group += client.take(most - len(group))
            acks = await self.handle_group([(m.topic, m.payload) for m in group])
            if acks:
                client.publish([(self.ack_topic(gw), encode_ack(ack))
                                for gw, ack in acks.items()])
                self.counters.acks_published += len(acks)
            client.acknowledge(group)

    # ------------------------------------------------------------------------ messages
    async def handle(self, topic: str, payload: bytes) -> dict[str, Ack]:
        """Process one message; returns the acks to publish, per gateway."""
        return await self.handle_group([(topic, payload)])

    async def handle_group(self, messages: Sequence[tuple[str, bytes]]) -> dict[str, Ack]:
        """Validate, store (one transaction) and answer a group of messages.

        Raises only :class:`StoreUnavailable` (nothing acknowledged).
        """
        await self.open()
        now_ms = time.time_ns() // 1_000_000
        self.last_message_monotonic = time.monotonic()
        self.counters.messages += len(messages)
        prefix = self.settings.topic_prefix + "/"
        items: list[_Message] = []
        for topic, payload in messages:
            gateway, _, kind = topic.removeprefix(prefix).partition("/")
            if kind == "status":
                await self._status(topic, gateway, payload, now_ms)
            elif kind.startswith("events"):
                await self._event(gateway, kind.removeprefix("events").strip("/"), payload,
                                  now_ms)
            else:
                items.append(await self._decode(topic, payload, now_ms))
        self.observer.messages("obs", len(items))
        stored = [m for m in items if m.rows is not None]
        await self._store(stored, now_ms)
        for m in items:
            if m.rejection is not None:
                await self.store.reject(m.rejection, now_ms)
                self.observer.rejected(m.rejection.reason)
        return self._acks(items)

    async def _decode(self, topic: str, payload: bytes, now_ms: int) -> _Message:
        m = _Message(topic, payload, self._gateway_of(topic))
        try:
            batch = await self._decode_with_dictionaries(payload, now_ms)
            if batch.gateway_id != m.gateway_id:
                raise ContractError(f"gateway {batch.gateway_id!r} published on {topic!r}",
                                    batch.gateway_id, seq_ranges(batch.sequences))
        except UnknownDictionary as exc:
            if exc.gateway_id == m.gateway_id:
                m.need = exc
                self.counters.needs += 1
                return m
            self._refuse(m, ContractError(f"gateway {exc.gateway_id!r} published on {topic!r}"))
            return m
        except ContractError as exc:
            self._refuse(m, exc)
            return m
        if batch.dictionary is not None:
            # kept in the store with the rows it came with (same transaction), so every worker
            # can decode the batches that follow; this worker knows it from now on
            self._remember(batch.gateway_id, batch.dictionary)
        m.batch = batch
        if batch.rejected:
            self._refuse_rows(m, batch)
        rows = batch.rows
        try:
            if len(rows):
                check_storable(rows, now_ms)
        except ContractError as exc:
            self._refuse(m, ContractError(exc.reason, batch.gateway_id,
                                          seq_ranges(batch.sequences)))
            m.batch = None
            return m
        if len(rows) or rows.gaps or batch.dictionary is not None:
            m.rows = rows
        return m

    async def _decode_with_dictionaries(self, payload: bytes, now_ms: int) -> ReceivedBatch:
        """Decode; a dictionary this worker has not seen may be in the shared store."""
        try:
            return decode_columns(payload, self._lookup, now_ms=now_ms)
        except UnknownDictionary as exc:
            gateway = exc.gateway_id
            if gateway is None:
                raise
            body = await self.store.get_dictionary(gateway, exc.ref)
            if body is None:
                raise
            self.counters.dictionary_loads += 1
            try:
                self._remember(gateway, SessionDictionary.from_body(body))
            except ContractError:
                raise exc from None
            return decode_columns(payload, self._lookup, now_ms=now_ms)

    def _gateway_of(self, topic: str) -> str | None:
        parts = topic.split("/")
        prefix = self.settings.topic_prefix.split("/")
        if len(parts) == len(prefix) + 2 and parts[: len(prefix)] == prefix and parts[-1] == "obs":
            return parts[-2]
        return None

    def _lookup(self, gateway_id: str, ref: bytes) -> SessionDictionary | None:
        key = (gateway_id, ref)
        found = self._dictionaries.get(key)
        if found is not None:
            self._dictionaries.move_to_end(key)
        return found

    def _remember(self, gateway_id: str, dictionary: SessionDictionary) -> None:
        self._dictionaries[(gateway_id, dictionary.ref)] = dictionary
        if len(self._dictionaries) > self.settings.dictionary_cache:
            if not self._cache_full_logged:
                self._cache_full_logged = True
                log.warning("more v2 gateways than --dictionary-cache (%d): dictionaries are "
                            "read back from the store; raise it above the fleet's size",
                            self.settings.dictionary_cache,
                            extra={"event": "dictionary_cache_full"})
            while len(self._dictionaries) > self.settings.dictionary_cache:
                self._dictionaries.popitem(last=False)

    def _refuse(self, m: _Message, exc: ContractError) -> None:
        """A message refused whole: dead letter, and an ``x`` answer when it is readable."""
        self.counters.rejected_messages += 1
        answerable = exc.gateway_id is not None and exc.gateway_id == m.gateway_id
        ranges = tuple(exc.ranges) if answerable else ()
        m.rejection = Rejection(m.topic, exc.reason, m.payload, exc.gateway_id or m.gateway_id,
                                ranges[0][0] if ranges else None,
                                ranges[-1][1] if ranges else None)
        m.x = [(a, b, exc.reason) for a, b in ranges]
        log.warning(
            "rejected message",
            extra={"event": "ingest_rejected", "topic": m.topic, "reason": exc.reason[:300]},
        )

    def _refuse_rows(self, m: _Message, batch: ReceivedBatch) -> None:
        self.counters.rejected_rows += len(batch.rejected)
        by_reason: dict[str, list[int]] = {}
        for seq, reason in batch.rejected.items():
            by_reason.setdefault(reason, []).append(seq)
        for reason, seqs in by_reason.items():
            m.x += [(a, b, reason) for a, b in seq_ranges(seqs)]
        summary = "; ".join(list(by_reason)[:3])
        refused = seq_ranges(batch.rejected)
        m.rejection = Rejection(m.topic, f"{len(batch.rejected)} rows refused: {summary}",
                                m.payload, batch.gateway_id, refused[0][0], refused[-1][1])
        log.warning(
            "rejected rows",
            extra={"event": "ingest_rows_rejected", "topic": m.topic,
                   "rows": len(batch.rejected), "reason": summary[:300]},
        )

    async def _store(self, items: list[_Message], now_ms: int) -> None:
        """All batches in one transaction; on failure one by one, dead-lettering the culprit."""
        if not items:
            return
        rows = [m.rows for m in items if m.rows is not None]
        dictionaries = [DictionaryRow(m.batch.gateway_id, d.ref, d.body) for m in items
                        if m.batch is not None and (d := m.batch.dictionary) is not None]
        started = time.perf_counter()
        try:
            outcomes = await self.store.store_batches(rows, now_ms, forward=self.settings.forward,
                                                      dictionaries=dictionaries)
        except StoreUnavailable:
            raise
        except Exception as exc:
            if len(items) > 1:
                log.warning("store refused a group; storing its batches one by one",
                            extra={"event": "ingest_group_refused", "reason": str(exc)[:300]})
                for m in items:
                    await self._store([m], now_ms)
            else:
                self._store_failed(items[0], exc)
            return
        self.counters.transactions += 1
        self.observer.group_stored(rows, outcomes, time.perf_counter() - started, now_ms)
        for m, result in zip(items, outcomes, strict=True):
            assert m.batch is not None
            self.counters.observations_new += result.new
            self.counters.duplicates += result.duplicates
            self.counters.gaps_announced += len(m.batch.gaps)
            if self.on_batch is not None:
                self.on_batch(m.batch, result.new)

    def _store_failed(self, m: _Message, exc: Exception) -> None:
        """The store refused this batch alone (and is not unavailable): dead-letter, ``x``."""
        batch = m.batch
        assert batch is not None
        reason = f"the twin could not store it: {type(exc).__name__}: {exc}"[:500]
        ranges = seq_ranges(batch.sequences)
        self.counters.store_dead_letters += 1
        log.error("receiver could not store a batch; dead-lettered",
                  extra={"event": "ingest_store_failed", "topic": m.topic,
                         "gateway": batch.gateway_id, "reason": reason})
        if m.rejection is not None:  # some rows were refused already: keep both reasons
            reason = f"{reason}; {m.rejection.reason}"
        m.rejection = Rejection(m.topic, reason, m.payload, batch.gateway_id,
                                ranges[0][0] if ranges else None,
                                ranges[-1][1] if ranges else None)
        m.x += [(a, b, reason) for a, b in ranges]
        m.batch = None
        m.rows = None

    def _acks(self, items: list[_Message]) -> dict[str, Ack]:
        acks: dict[str, Ack] = {}
        for m in items:
            if m.gateway_id is None:
                continue
            ack = acks.setdefault(m.gateway_id, Ack())
            if m.batch is not None:
                ack.ok += seq_ranges(m.batch.sequences)
            ack.x += m.x
            if m.need is not None:
                ack.need += [(m.need.ref, a, b) for a, b in m.need.ranges]
        for ack in acks.values():
            ack.ok = merge_ranges(ack.ok)
        return {gw: ack for gw, ack in acks.items() if ack}

    # ------------------------------------------------------------------------ fleet
    async def _status(self, topic: str, gateway: str, payload: bytes, now_ms: int) -> None:
        self.observer.messages("status", 1)
        if not payload:
            return  # a retained status being cleared
        try:
            status = parse_status(payload)
        except ValueError as exc:
            self.counters.rejected_messages += 1
            await self.store.reject(Rejection(topic, f"status: {exc}", payload, gateway), now_ms)
            self.observer.rejected(f"status: {exc}")
            return
        self.counters.status_messages += 1
        await self.store.put_status(gateway, status, now_ms)

    async def _event(self, gateway: str, kind: str, payload: bytes, now_ms: int) -> None:
        self.observer.messages("event", 1)
        try:
            body: object = json.loads(payload) if payload else None
        except ValueError:
            body = {"text": payload.decode("utf-8", "replace")[:2000]}
        if kind == "" and isinstance(body, dict) and isinstance(body.get("kind"), str):
            kind = str(body["kind"])
        self.counters.events += 1
        await self.store.add_event(gateway, kind or "event", body, now_ms)

    # ------------------------------------------------------------------------ reporting
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
