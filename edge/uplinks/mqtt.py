"""MQTT uplink (aiomqtt, QoS 1).

Compact mode publishes CBOR batches (edge.contract, v2 by default) to ``<prefix>/<gw>/obs``;
SensorThings mode publishes one Observation JSON per message to
``v1.1/Datastreams(<id>)/Observations``.

Confirmation (``confirm``):

- ``"twin"`` (default in compact mode): the gateway subscribes to ``<prefix>/<gw>/ack``; an
  observation leaves the outbox only when the twin's receiver has acked it after its database
  commit (``ok``), or refused it for good (``x``: dead letter). A message the twin cannot read
  for lack of the session dictionary (``need``) is sent again with it; a message left
  unanswered for ``ack_timeout_s`` is sent again as it is (the twin de-duplicates). So a broker
  restart, a broker without persistence or a lost shared subscription can delay data, never
  lose it (docs/upload-contract.md).
- ``"broker"``: the broker's PUBACK is delivery (contract v1 behaviour, SensorThings mode).

At steady load a message waits up to ``max_latency_s`` for more committed observations (few,
larger messages); a backlog goes out at once in full messages. The window ``max_inflight``
bounds unconfirmed messages (paho silently loses messages past 65,535 unacknowledged ones,
so the window — not paho's queue — bounds what is in flight).

A retained JSON status goes to ``<prefix>/<gw>/status`` (birth, heartbeat, will) and notable
outbox events to ``<prefix>/<gw>/events/<event>`` (edge.uplinks.status). Any connection
problem ends ``run``; the runtime reconnects with backoff and the outbox hands out every
unconfirmed row again, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections.abc import Coroutine
from typing import Any

import aiomqtt

from edge.contract import ContractError, SessionEncoder, decode_ack, encode_batch
from edge.model import Batch, Delivery, Observation
from edge.seams import UplinkPort
from edge.tls import read_secret, tls_context
from edge.uplinks.confirmations import Answer, Confirmations, InFlight
from edge.uplinks.mqtt_settings import MqttSettings
from edge.uplinks.status import OFFLINE_WILL, EventTap, status_document

log = logging.getLogger("duet.uplink.mqtt")
# aiomqtt warns once per publish beyond ten concurrent ones; our window is deliberate.
_client_log = logging.getLogger("duet.uplink.mqtt.client")
_client_log.setLevel(logging.ERROR)

PUBLISH_TIMEOUT_S = 30.0
HOUSEKEEPING_TICK_S = 1.0


class MqttUplink:
    """Streams the outbox to an MQTT broker."""

    def __init__(
        self,
        settings: MqttSettings,
        gateway_id: str,
        name: str = "mqtt",
    ) -> None:
        self.name = name
        self.settings = settings
        self.gateway_id = gateway_id
        base = f"{settings.topic_prefix}/{gateway_id}"
        self.bundle_topic = f"{base}/config/#"
        self.obs_topic = f"{base}/obs"
        self.ack_topic = f"{base}/ack"
        self.status_topic = f"{base}/status"
        self.events_topic = f"{base}/events"
        self.twin_confirms = settings.mode == "compact" and settings.confirmation == "twin"
        self.encoder = SessionEncoder(gateway_id)
        self.events = EventTap()  # installed now: the outbox may report while it opens
        weakref.finalize(self, self.events.detach)

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        return aiomqtt.Client(
            hostname=s.host,
            port=s.port,
            identifier=s.client_id or f"duet-gw-{self.gateway_id}",
            username=s.username,
            password=read_secret(s.password_file),
            keepalive=s.keepalive_s,
            tls_context=tls_context(s.tls) if s.tls else None,
            will=aiomqtt.Will(self.status_topic, OFFLINE_WILL, qos=1, retain=True),
            max_inflight_messages=max(
                20, s.max_inflight * (1 if s.mode == "compact" else s.batch_size)
            ),
            timeout=PUBLISH_TIMEOUT_S,
            logger=_client_log,
        )

    async def run(self, port: UplinkPort) -> None:
        async with self._client() as client:
            port.health.state = "connected"
            port.health.connected_since_ms = time.time_ns() // 1_000_000
            log.info(
                "mqtt uplink connected",
                extra={
                    "event": "uplink_connected",
                    "uplink": self.name,
                    "broker": f"{self.settings.host}:{self.settings.port}",
                    "confirm": "twin" if self.twin_confirms else "broker",
                },
            )
            if self.twin_confirms:
                await client.subscribe(self.ack_topic, qos=1)
            if port.accepts_bundles:  # signed config/calibration bundles pushed to this gateway
                await client.subscribe(self.bundle_topic, qos=1)
            await self.publish_status(client, port, "online")
            port.rewind()
            self.encoder.reset()
            session = _Session(self, client, port)
            try:
                await session.run()
            finally:
                port.health.awaiting_ack = 0
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.publish_status(client, port, "offline"), 2.0)

    async def publish_status(self, client: aiomqtt.Client, port: UplinkPort, state: str) -> None:
        uplink = {"state": port.health.state, "confirm": "twin" if self.twin_confirms else "broker",
                  "awaiting_ack": port.health.awaiting_ack,
                  "last_confirmed_ms": port.health.last_confirmed_ms}
        gateway = port.status() if port.status is not None else None
        document = status_document(state, gateway, uplink)
        await client.publish(self.status_topic, document, qos=1, retain=True)
        port.health.bytes_sent += len(document)

    def encode(self, batch: Batch, gaps: list[tuple[int, int, int, str]], full: bool = False
               ) -> tuple[bytes, bytes]:
        """The message for ``batch`` and the session dictionary it refers to.

        Without twin acks every message carries its dictionary: a receiver that missed it
        could not ask (``need``), and the gateway would already have deleted the rows.
        """
        sent = time.time_ns() // 1_000_000
        if self.settings.contract == 1:
            return encode_batch(batch, gaps, sent, version=1), b""
        encoded = self.encoder.encode(batch, gaps, sent, full=full or not self.twin_confirms)
        return encoded.payload, encoded.ref


class _Session:
    """One broker connection: the pump, the ack listener, retransmission and housekeeping."""

    def __init__(self, uplink: MqttUplink, client: aiomqtt.Client, port: UplinkPort) -> None:
        self.uplink = uplink
        self.settings = uplink.settings
        self.client = client
        self.port = port
        self.window = asyncio.Semaphore(self.settings.max_inflight)
        self.pending = Confirmations()
        self.resend: asyncio.Queue[InFlight] = asyncio.Queue()
        self.publishing: set[asyncio.Task[None]] = set()
        self.failure: list[BaseException] = []
        # aiomqtt has no public "connection lost" signal; the iterator uses this one too
        self.disconnected: asyncio.Future[None] = client._disconnected

    async def run(self) -> None:
        jobs: list[Coroutine[Any, Any, None]] = [self._pump(), self._listen(), self._housekeeping()]
        if self.uplink.twin_confirms:
            jobs.append(self._retransmit())
        tasks = [asyncio.create_task(job) for job in jobs]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # the first failure ends the session, with its own message
            raise ConnectionError("mqtt session ended")
        finally:
            for task in [*tasks, *self.publishing]:
                task.cancel()
            await asyncio.gather(*tasks, *self.publishing, return_exceptions=True)

    # ------------------------------------------------------------------------ sending
    async def _pump(self) -> None:
        while True:
            self._check()
            await self._wait_for(self.window.acquire())
            try:
                batch = await self._collect()
            except BaseException:
                self.window.release()
                raise
            task = asyncio.create_task(self._send(batch))
            self.publishing.add(task)
            task.add_done_callback(self._sent)

    def _check(self) -> None:
        if self.failure:
            raise self.failure[0]
        if self.disconnected.done():
            raise ConnectionError("broker connection lost")

    def _sent(self, task: asyncio.Task[None]) -> None:
        self.publishing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failure.append(task.exception())  # type: ignore[arg-type]

    async def _wait_for(self, awaitable: Coroutine[Any, Any, Any], timeout: float | None = None
                        ) -> None:
        """Await ``awaitable`` unless the connection drops first (then raise)."""
        task = asyncio.ensure_future(awaitable)
        await asyncio.wait({task, self.disconnected}, timeout=timeout,
                           return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self._check()
            return
        task.result()

    async def _collect(self) -> Batch:
        """The next message's rows: a full batch at once, else what arrives within the
        latency bound (compact mode), else what is there now (SensorThings mode)."""
        limit = self.settings.batch_size
        patience = self.settings.max_latency_s if self.settings.mode == "compact" else 0.0
        rows: list[Observation] = []
        deadline = 0.0
        while True:
            batch = self.port.next_batch(limit - len(rows))
            if batch and not rows:
                deadline = time.monotonic() + patience
            rows.extend(batch.observations)
            if len(rows) >= limit or (rows and time.monotonic() >= deadline):
                break
            wait = deadline - time.monotonic() if rows else 1.0
            await self._wait_for(self.port.wait_for_data(wait), timeout=wait + 0.1)
            self._check()
        rows.sort(key=_sequence)
        return Batch(self.uplink.gateway_id, tuple(rows))

    async def _send(self, batch: Batch) -> None:
        if self.settings.mode != "compact":
            await self._send_sensorthings(batch)
            return
        gaps = self.port.pending_gaps()
        payload, ref = self.uplink.encode(batch, gaps)
        started = time.monotonic()
        if self.uplink.twin_confirms:
            self.pending.add(batch, gaps, ref, started)
            self.port.health.awaiting_ack = self.pending.awaiting
        await self.client.publish(self.uplink.obs_topic, payload, qos=1)
        self._count(batch, payload)
        if not self.uplink.twin_confirms:  # the PUBACK is the confirmation
            if gaps:
                self.port.gaps_reported(gaps)
            self.port.settle(batch, Delivery(confirmed=batch.sequences), started)
            self.window.release()

    def _count(self, batch: Batch, payload: bytes) -> None:
        h = self.port.health
        h.sent_batches += 1
        h.sent_observations += len(batch)
        h.bytes_sent += len(payload)

    async def _send_sensorthings(self, batch: Batch) -> None:
        from edge.sensorthings import observation_body  # the one JSON mapping (shared with HTTP)

        started = time.monotonic()
        delivery = Delivery()
        ids = self.settings.datastream_ids
        sends = []
        for obs in batch.observations:
            assert obs.sequence is not None
            ds_id = ids.get(obs.stream.key)
            if ds_id is None:
                delivery.rejected[obs.sequence] = (
                    f"no SensorThings Datastream id for {obs.stream.key!r}: add it to "
                    "[uplinks.mqtt].datastream_ids or run `duet-edge provision register`"
                )
                continue
            body = json.dumps(
                observation_body(obs, self.uplink.gateway_id), separators=(",", ":")
            ).encode()
            self.port.health.bytes_sent += len(body)
            sends.append(self.client.publish(f"v1.1/Datastreams({ds_id})/Observations", body,
                                             qos=1))
            delivery.confirmed.append(obs.sequence)
        await asyncio.gather(*sends)
        self.port.health.sent_batches += 1
        self.port.health.sent_observations += len(batch)
        self.port.settle(batch, delivery, started)
        self.window.release()

    # ------------------------------------------------------------------------ answers
    async def _listen(self) -> None:
        async for message in self.client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                continue
            if message.topic.matches(self.uplink.ack_topic):
                self._on_ack(bytes(payload))
            elif payload:
                self.port.deliver_bundle(bytes(payload))

    def _on_ack(self, payload: bytes) -> None:
        try:
            ack = decode_ack(payload)
        except ContractError as exc:
            log.warning("ignoring an unreadable ack", extra={
                "event": "ack_invalid", "uplink": self.uplink.name, "reason": exc.reason})
            return
        for answer in self.pending.apply(ack):
            self._answered(answer)
        self.port.health.awaiting_ack = self.pending.awaiting

    def _answered(self, answer: Answer) -> None:
        entry = answer.entry
        if answer.delivery.confirmed or answer.delivery.rejected:
            self.port.confirm(answer.delivery, entry.first_sent)
        if answer.gaps_stored:
            self.port.gaps_reported(answer.gaps_stored)
        if answer.resend:
            self.uplink.encoder.forget(entry.ref)
            self.resend.put_nowait(entry)
        if answer.finished:
            self.window.release()

    async def _retransmit(self) -> None:
        """Publish again what the twin asked for (``need``) or left unanswered too long."""
        timeout = self.settings.ack_timeout_s
        tick = min(HOUSEKEEPING_TICK_S, timeout / 4)
        while True:
            needed: InFlight | None = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    needed = await self.resend.get()
            if needed is not None:
                await self._publish_again(needed, full=True, why="need")
            for entry in self.pending.overdue(time.monotonic(), timeout):
                await self._publish_again(entry, full=True, why="ack_timeout")

    async def _publish_again(self, entry: InFlight, full: bool, why: str) -> None:
        if entry not in self.pending.entries or not entry.rows:
            return
        batch = entry.batch()
        payload, entry.ref = self.uplink.encode(batch, entry.gaps, full=full)
        entry.sent_at = time.monotonic()
        entry.attempts += 1
        self.port.health.retransmitted += len(batch)
        if entry.attempts == 2 or why == "need":
            log.warning(
                "sending again what the twin has not confirmed",
                extra={"event": "retransmit", "uplink": self.uplink.name, "why": why,
                       "observations": len(batch), "first_seq": batch.sequences[0]},
            )
        await self.client.publish(self.uplink.obs_topic, payload, qos=1)
        self._count(batch, payload)

    # ------------------------------------------------------------------------ status, events
    async def _housekeeping(self) -> None:
        next_status = time.monotonic() + self.settings.heartbeat_s
        events = self.uplink.events.queue
        while True:
            while events:
                name, body = events[0]
                await self.client.publish(f"{self.uplink.events_topic}/{name}", body, qos=1)
                events.popleft()  # only once the broker has it
                self.port.health.bytes_sent += len(body)
            if time.monotonic() >= next_status:
                await self.uplink.publish_status(self.client, self.port, "online")
                next_status = time.monotonic() + self.settings.heartbeat_s
            await asyncio.sleep(HOUSEKEEPING_TICK_S)


def _sequence(o: Observation) -> int:
    return o.sequence or 0
