"""The twin receiver: subscribes with an MQTT 5 shared subscription, so several instances split
the load on a clustered broker (EMQX, VerneMQ, HiveMQ, Mosquitto ≥ 2), decodes and validates
compact batches, de-duplicates by observation id, and stores or forwards them.

A message is acknowledged (PUBACK) only after its observations are stored, so a receiver that
dies mid-message gets it again from the broker; an invalid message is recorded with its reason
and acknowledged, so one poison message never blocks the stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.backoff import Backoff
from edge.contract import ContractError, DecodedBatch, decode_batch
from edge.ingest.store import ReceiverStore
from edge.tls import TlsSettings, read_secret, tls_context

log = logging.getLogger("duet.ingest")


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


@dataclass(slots=True)
class ReceiverCounters:
    messages: int = 0
    observations_new: int = 0
    duplicates: int = 0
    rejected_messages: int = 0
    gaps_announced: int = 0
    reconnects: int = 0


class Receiver:
    """Subscribe, validate, de-duplicate, store (and optionally forward)."""

    def __init__(
        self,
        settings: ReceiverSettings,
        forward: Any | None = None,
        on_batch: Callable[[DecodedBatch, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = ReceiverStore(settings.store_path)
        self.counters = ReceiverCounters()
        self.forward = forward
        self.on_batch = on_batch
        self.subscribed = asyncio.Event()

    @property
    def topic(self) -> str:
        plain = f"{self.settings.topic_prefix}/+/obs"
        return f"$share/{self.settings.share_group}/{plain}" if self.settings.share_group else plain

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

    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
        backoff = Backoff(0.5, 10.0)
        while stop is None or not stop.is_set():
            try:
                await self._session()
            except Exception as exc:  # broker gone, or forwarding failed: the message stays unacked
                self.subscribed.clear()
                self.counters.reconnects += 1
                delay = backoff.next_delay()
                log.warning(
                    "receiver session ended (broker or forwarding failure); reconnecting",
                    extra={
                        "event": "ingest_disconnected",
                        "reason": str(exc),
                        "retry_in_s": round(delay, 2),
                    },
                )
                await asyncio.sleep(delay)

    async def _session(self) -> None:
        if self.forward is not None and hasattr(self.forward, "__aenter__"):
            async with self.forward:
                await self._subscribe_and_handle()
        else:
            await self._subscribe_and_handle()

    async def _subscribe_and_handle(self) -> None:
        async with self._client() as client:
            await client.subscribe(self.topic, qos=1)
            self.subscribed.set()
            log.info(
                "receiver subscribed", extra={"event": "ingest_subscribed", "topic": self.topic}
            )
            async for message in client.messages:
                await self.handle(str(message.topic), bytes(message.payload))
                client._client.ack(message.mid, message.qos)

    async def handle(self, topic: str, payload: bytes) -> None:
        """Process one message: validate, store (idempotent), forward."""
        self.counters.messages += 1
        try:
            batch = decode_batch(payload)
            expected_gw = topic.split("/")[-2] if topic.count("/") >= 2 else None
            if expected_gw is not None and batch.gateway_id != expected_gw:
                raise ContractError(f"gateway {batch.gateway_id!r} published on {topic!r}")
        except ContractError as exc:
            self.counters.rejected_messages += 1
            self.store.reject(topic, len(payload), str(exc))
            log.warning(
                "rejected message",
                extra={"event": "ingest_rejected", "topic": topic, "reason": str(exc)},
            )
            return
        if self.forward is not None:
            # Forward first, store second: a forward failure leaves the message unacknowledged,
            # so the broker redelivers it; only ids not stored yet are forwarded.
            fresh = self.store.unknown(batch)
            if fresh.observations:
                await self.forward.forward(fresh)
        new, dup = self.store.store(batch)
        self.counters.observations_new += new
        self.counters.duplicates += dup
        self.counters.gaps_announced += len(batch.gaps)
        if self.on_batch is not None:
            self.on_batch(batch, new)
