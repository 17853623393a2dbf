"""MQTT uplink (aiomqtt, QoS 1).

Compact mode publishes one CBOR batch per message (edge.contract) to
``<prefix>/<gateway_id>/obs``; SensorThings mode publishes one Observation JSON per message to
``v1.1/Datastreams(<id>)/Observations``. A retained ``online``/``offline`` status (the
latter as the connection's will) goes to ``<prefix>/<gateway_id>/status``.

Batches are pipelined with a bounded window (``max_inflight``): paho keys in-flight messages
by a 16-bit id and silently loses messages past 65,535 unacknowledged, so the window — not
paho's queue — bounds what is in flight. A row is deleted from the outbox only after its
PUBACK. Any connection problem ends ``run``; the runtime reconnects with backoff and the
outbox hands out every unconfirmed row again, in order (the receiver de-duplicates by id).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import aiomqtt

from edge.contract import encode_batch
from edge.model import Batch, Delivery
from edge.seams import UplinkPort
from edge.tls import read_secret, tls_context
from edge.uplinks.mqtt_settings import MqttSettings

log = logging.getLogger("duet.uplink.mqtt")
# aiomqtt warns once per publish beyond ten concurrent ones; our window is deliberate.
_client_log = logging.getLogger("duet.uplink.mqtt.client")
_client_log.setLevel(logging.ERROR)

PUBLISH_TIMEOUT_S = 30.0


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
        self.bundle_topic = f"{settings.topic_prefix}/{gateway_id}/config/#"
        self.obs_topic = f"{settings.topic_prefix}/{gateway_id}/obs"
        self.status_topic = f"{settings.topic_prefix}/{gateway_id}/status"

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
            will=aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True),
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
                },
            )
            await client.publish(self.status_topic, b"online", qos=1, retain=True)
            port.rewind()
            disconnected: asyncio.Future[None] | None = getattr(client, "_disconnected", None)
            listener = None
            if port.accepts_bundles:  # signed config/calibration bundles pushed to this gateway
                await client.subscribe(self.bundle_topic, qos=1)
                listener = asyncio.create_task(self._listen_for_bundles(client, port))
            try:
                await self._pump(client, port, disconnected)
            finally:
                if listener is not None:
                    listener.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        client.publish(self.status_topic, b"offline", qos=1, retain=True), 2.0
                    )

    async def _listen_for_bundles(self, client: aiomqtt.Client, port: UplinkPort) -> None:
        async for message in client.messages:
            if isinstance(message.payload, bytes | bytearray) and message.payload:
                port.deliver_bundle(bytes(message.payload))

    async def _pump(
        self, client: aiomqtt.Client, port: UplinkPort, disconnected: asyncio.Future[None] | None
    ) -> None:
        window = asyncio.Semaphore(self.settings.max_inflight)
        in_flight: set[asyncio.Task[None]] = set()
        failure: list[BaseException] = []

        def done(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            window.release()
            if not task.cancelled() and task.exception() is not None:
                failure.append(task.exception())  # type: ignore[arg-type]

        try:
            while True:
                if failure:
                    raise failure[0]
                if disconnected is not None and disconnected.done():
                    raise ConnectionError("broker connection lost")
                batch = port.next_batch(self.settings.batch_size)
                if not batch:
                    await self._idle(port, disconnected)
                    continue
                await window.acquire()
                task = asyncio.create_task(self._deliver(client, port, batch))
                in_flight.add(task)
                task.add_done_callback(done)
        finally:
            for task in list(in_flight):
                task.cancel()
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def _idle(self, port: UplinkPort, disconnected: asyncio.Future[None] | None) -> None:
        waiter = asyncio.ensure_future(port.wait_for_data())
        waits: set[asyncio.Future[Any]] = {waiter}
        if disconnected is not None:
            waits.add(disconnected)
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()

    async def _deliver(self, client: aiomqtt.Client, port: UplinkPort, batch: Batch) -> None:
        started = time.monotonic()
        if self.settings.mode == "compact":
            delivery = await self._publish_compact(client, port, batch)
        else:
            delivery = await self._publish_sensorthings(client, port, batch)
        port.health.sent_batches += 1
        port.health.sent_observations += len(batch)
        port.settle(batch, delivery, started)

    async def _publish_compact(
        self, client: aiomqtt.Client, port: UplinkPort, batch: Batch
    ) -> Delivery:
        gaps = port.pending_gaps()
        payload = encode_batch(batch, gaps, sent_ms=time.time_ns() // 1_000_000)
        await client.publish(self.obs_topic, payload, qos=1)
        port.health.bytes_sent += len(payload)
        if gaps:
            port.gaps_reported(gaps)
        return Delivery(confirmed=batch.sequences)

    async def _publish_sensorthings(
        self, client: aiomqtt.Client, port: UplinkPort, batch: Batch
    ) -> Delivery:
        from edge.sensorthings import observation_body  # the one JSON mapping (shared with HTTP)

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
                observation_body(obs, self.gateway_id), separators=(",", ":")
            ).encode()
            port.health.bytes_sent += len(body)
            sends.append(client.publish(f"v1.1/Datastreams({ds_id})/Observations", body, qos=1))
            delivery.confirmed.append(obs.sequence)
        await asyncio.gather(*sends)
        return delivery
