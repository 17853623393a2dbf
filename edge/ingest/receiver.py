"""The twin receiver: no message can stop it.

It subscribes to ``<prefix>/+/obs`` (MQTT 5 shared subscription by default, so several
instances split the load), and for each group of messages that arrived together:

1. decodes and validates every message completely (edge.contract) before any database work;
   a v2 batch that refers to a session dictionary nobody here knows gets a ``need`` answer;
2. optionally forwards what is new (``--forward-sta``); a forward failure ends the session, so
   the messages come back later;
3. stores every valid batch in ONE transaction (:class:`edge.ingest.ports.TwinStore`); if that
   fails, stores them one by one, and a batch that still fails alone for a reason of its own
   is dead-lettered — only a store that is unavailable as a whole stops acknowledging;
4. records refused messages in the store's dead letters, with their reason and payload;
5. publishes one ack per gateway on ``<prefix>/<gw>/ack`` (``ok``, ``x``, ``need``), and only
   then acknowledges the messages to the broker (PUBACK).

So a receiver that dies anywhere gets the unacknowledged messages again; a poison message is
answered and acknowledged once, never redelivered forever. Reconnects back off with jitter,
and the backoff starts again from its first step after a healthy session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.backoff import Backoff
from edge.contract import (
    Ack,
    ContractError,
    DecodedBatch,
    SessionDictionary,
    UnknownDictionary,
    decode_batch,
    encode_ack,
    merge_ranges,
    seq_ranges,
)
from edge.ingest.ports import Forwarder, Rejection, StoreUnavailable, TwinStore
from edge.tls import TlsSettings, read_secret, tls_context

log = logging.getLogger("duet.ingest")

DICTIONARY_CACHE = 4096


@dataclass(slots=True)
class ReceiverSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    topic_prefix: str = "duet/v1"
    share_group: str | None = "duet-ingest"  # None: a plain (non-shared) persistent subscription
    client_id: str = "duet-ingest-1"
    store_path: Path = Path("twin.db")
    username: str | None = None
    password_file: Path | None = None
    tls: TlsSettings | None = None
    session_expiry_s: int = 86400
    max_group: int = 64  # messages stored in one transaction
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 2.0  # few receivers per broker: no thundering herd to avoid
    healthy_after_s: float = 5.0  # a session that lasted this long resets the backoff


@dataclass(slots=True)
class ReceiverCounters:
    messages: int = 0
    observations_new: int = 0
    duplicates: int = 0
    rejected_messages: int = 0
    rejected_rows: int = 0
    store_dead_letters: int = 0  # batches the store failed on by themselves
    needs: int = 0
    gaps_announced: int = 0
    acks_published: int = 0
    reconnects: int = 0


class ForwardFailed(Exception):
    """The optional forwarder could not deliver: the messages stay unacknowledged."""


@dataclass(slots=True)
class _Message:
    """One received message on its way through a group."""

    topic: str
    payload: bytes
    gateway_id: str | None  # from the topic: the only gateway an answer goes to
    batch: DecodedBatch | None = None
    rejection: Rejection | None = None
    x: list[tuple[int, int, str]] = field(default_factory=list)
    need: UnknownDictionary | None = None


class Receiver:
    """Subscribe, validate, store, answer (and optionally forward)."""

    def __init__(
        self,
        settings: ReceiverSettings,
        forward: Forwarder | None = None,
        on_batch: Callable[[DecodedBatch, int], None] | None = None,
        store: TwinStore | None = None,
    ) -> None:
        self.settings = settings
        if store is None:
            from edge.ingest.store import ReceiverStore

            store = ReceiverStore(settings.store_path)
        self.store: TwinStore = store
        self.counters = ReceiverCounters()
        self.forward = forward
        self.on_batch = on_batch
        self.subscribed = asyncio.Event()
        self._dictionaries: OrderedDict[tuple[str, bytes], SessionDictionary] = OrderedDict()
        self._subscribed_at: float | None = None

    @property
    def topic(self) -> str:
        plain = f"{self.settings.topic_prefix}/+/obs"
        return f"$share/{self.settings.share_group}/{plain}" if self.settings.share_group else plain

    def ack_topic(self, gateway_id: str) -> str:
        return f"{self.settings.topic_prefix}/{gateway_id}/ack"

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
        client._client.manual_ack_set(True)  # PUBACK only after the batch is stored and answered
        return client

    # ------------------------------------------------------------------------ sessions
    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
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
            except aiomqtt.MqttError as exc:
                reason = str(exc) or type(exc).__name__
            except StoreUnavailable as exc:
                cause, reason = "store", str(exc)
            except ForwardFailed as exc:
                cause, reason = "forward", str(exc)
            except Exception as exc:  # a bug: say so, with the traceback, and carry on
                cause, reason = "bug", f"{type(exc).__name__}: {exc}"
                log.exception("receiver session failed", extra={"event": "ingest_error"})
            self.subscribed.clear()
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

    async def _session(self, stop: asyncio.Event | None) -> None:
        if self.forward is not None:
            async with self.forward:
                await self._subscribe_and_handle(stop)
        else:
            await self._subscribe_and_handle(stop)

    async def _subscribe_and_handle(self, stop: asyncio.Event | None) -> None:
        async with self._client() as client:
            await client.subscribe(self.topic, qos=1)
            self._subscribed_at = time.monotonic()
            self.subscribed.set()
            log.info(
                "receiver subscribed", extra={"event": "ingest_subscribed", "topic": self.topic}
            )
            messages = client.messages
            while True:
                first = await _next_unless_stopped(messages, stop)
                if first is None:
                    return  # stop asked: leave with every handled message acknowledged
                group = [first]
                while len(messages) and len(group) < self.settings.max_group:
                    group.append(await anext(messages))
                acks = await self.handle_group([(str(m.topic), _bytes(m.payload)) for m in group])
                if acks:
                    await asyncio.gather(*(
                        client.publish(self.ack_topic(gw), encode_ack(ack), qos=1)
                        for gw, ack in acks.items()
                    ))
                    self.counters.acks_published += len(acks)
                for m in group:
                    client._client.ack(m.mid, m.qos)

    # ------------------------------------------------------------------------ messages
    async def handle(self, topic: str, payload: bytes) -> dict[str, Ack]:
        """Process one message; returns the acks to publish, per gateway."""
        return await self.handle_group([(topic, payload)])

    async def handle_group(self, messages: Sequence[tuple[str, bytes]]) -> dict[str, Ack]:
        """Validate, forward, store (one transaction) and answer a group of messages.

        Raises only :class:`StoreUnavailable` or :class:`ForwardFailed` (nothing acknowledged).
        """
        self.counters.messages += len(messages)
        items = [self._decode(topic, payload) for topic, payload in messages]
        stored = [m for m in items if m.batch is not None]
        if self.forward is not None:
            await self._forward(stored)
        self._store(stored)
        rejections = [m.rejection for m in items if m.rejection is not None]
        if rejections:
            self.store.reject(rejections)
        return self._acks(items)

    def _decode(self, topic: str, payload: bytes) -> _Message:
        m = _Message(topic, payload, self._gateway_of(topic))
        try:
            batch = decode_batch(payload, self._lookup)
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
            self._remember(batch.gateway_id, batch.dictionary)
        m.batch = batch
        if batch.rejected:
            self._refuse_rows(m, batch)
        return m

    def _gateway_of(self, topic: str) -> str | None:
        parts = topic.split("/")
        prefix = self.settings.topic_prefix.split("/")
        if len(parts) == len(prefix) + 2 and parts[: len(prefix)] == prefix and parts[-1] == "obs":
            return parts[-2]
        return None

    def _lookup(self, gateway_id: str, ref: bytes) -> SessionDictionary | None:
        key = (gateway_id, ref)
        found = self._dictionaries.get(key)
        if found is None:
            found = self.store.dictionary(gateway_id, ref)
            if found is not None:
                self._remember(gateway_id, found)
        else:
            self._dictionaries.move_to_end(key)
        return found

    def _remember(self, gateway_id: str, dictionary: SessionDictionary) -> None:
        self._dictionaries[(gateway_id, dictionary.ref)] = dictionary
        while len(self._dictionaries) > DICTIONARY_CACHE:
            self._dictionaries.popitem(last=False)

    def _refuse(self, m: _Message, exc: ContractError) -> None:
        """A message refused whole: dead letter, and an ``x`` answer when it is readable."""
        self.counters.rejected_messages += 1
        answerable = exc.gateway_id is not None and exc.gateway_id == m.gateway_id
        ranges = tuple(exc.ranges) if answerable else ()
        m.rejection = Rejection(m.topic, exc.reason, m.payload, exc.gateway_id, ranges)
        m.x = [(a, b, exc.reason) for a, b in ranges]
        log.warning(
            "rejected message",
            extra={"event": "ingest_rejected", "topic": m.topic, "reason": exc.reason[:300]},
        )

    def _refuse_rows(self, m: _Message, batch: DecodedBatch) -> None:
        self.counters.rejected_rows += len(batch.rejected)
        by_reason: dict[str, list[int]] = {}
        for seq, reason in batch.rejected.items():
            by_reason.setdefault(reason, []).append(seq)
        for reason, seqs in by_reason.items():
            m.x += [(a, b, reason) for a, b in seq_ranges(seqs)]
        summary = "; ".join(list(by_reason)[:3])
        m.rejection = Rejection(m.topic, f"{len(batch.rejected)} rows refused: {summary}",
                                m.payload, batch.gateway_id,
                                tuple(seq_ranges(batch.rejected)))
        log.warning(
            "rejected rows",
            extra={"event": "ingest_rows_rejected", "topic": m.topic,
                   "rows": len(batch.rejected), "reason": summary[:300]},
        )

    async def _forward(self, items: list[_Message]) -> None:
        assert self.forward is not None
        for m in items:
            assert m.batch is not None
            fresh = self.store.unknown(m.batch)
            if not fresh.observations:
                continue
            try:
                await self.forward.forward(fresh)
            except Exception as exc:
                raise ForwardFailed(f"{type(exc).__name__}: {exc}") from exc

    def _store(self, items: list[_Message]) -> None:
        """All batches in one transaction; on failure one by one, dead-lettering the culprit."""
        if not items:
            return
        try:
            results = self.store.store_batches([m.batch for m in items if m.batch is not None])
        except StoreUnavailable:
            raise
        except Exception as exc:
            if len(items) > 1:
                for m in items:
                    self._store([m])
            else:
                self._store_failed(items[0], exc)
            return
        for m, result in zip(items, results, strict=True):
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
        ranges = tuple(seq_ranges(batch.sequences))
        self.counters.store_dead_letters += 1
        log.error("receiver could not store a batch; dead-lettered",
                  extra={"event": "ingest_store_failed", "topic": m.topic,
                         "gateway": batch.gateway_id, "reason": reason})
        if m.rejection is not None:  # some rows were refused already: keep both reasons
            reason = f"{reason}; {m.rejection.reason}"
        m.rejection = Rejection(m.topic, reason, m.payload, batch.gateway_id, ranges)
        m.x += [(a, b, reason) for a, b in ranges]
        m.batch = None

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


async def _next_unless_stopped(
    messages: aiomqtt.client.MessagesIterator, stop: asyncio.Event | None
) -> aiomqtt.Message | None:
    """The next message, or None once ``stop`` is set (checked between groups only)."""
    if stop is None:
        return await anext(messages)
    if stop.is_set():
        return None
    receive = asyncio.ensure_future(anext(messages))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({receive, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not receive.done():
        receive.cancel()
        await asyncio.gather(receive, return_exceptions=True)
        return None
    return receive.result()


def _bytes(payload: object) -> bytes:
    return bytes(payload) if isinstance(payload, bytes | bytearray) else b""
