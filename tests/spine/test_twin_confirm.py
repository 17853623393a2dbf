"""confirm = "twin": the gateway's outbox lets go of an observation only on the twin's answer.

The gateway's MQTT uplink, its outbox and the twin receiver run in one event loop against a
real Mosquitto; a plain MQTT client watches the topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import cbor2
import pytest

from edge.config import BufferSettings
from edge.ingest.receiver import Receiver, ReceiverSettings
from edge.model import Datastream, Observation, Provenance, Quality
from edge.outbox import Outbox
from edge.seams import UplinkHealth
from edge.uplinks import OutboxPort
from edge.uplinks.mqtt import MqttUplink
from edge.uplinks.mqtt_settings import MqttSettings
from tests.ingest.helpers import stored
from tests.plugins.mosquitto import Broker

pytestmark = pytest.mark.timeout(90)
GW = "gw-tc"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def until(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Gateway:
    """An outbox drained by the MQTT uplink, restarted on failure like the runtime does."""

    outbox: Outbox
    uplink: MqttUplink
    port: OutboxPort
    task: asyncio.Task[None] | None = None
    seq: int = 0
    errors: list[str] = field(default_factory=list)

    def commit(self, n: int, t: int | None = None) -> list[int]:
        start = now_ms() - 10_000 if t is None else t
        s = [Datastream(GW, "sds", "pm2_5"), Datastream(GW, "sds", "pm10")]
        q = Quality(1, {"gross_range": 1})
        self.outbox.append(Observation(s[i % 2], 10 + i / 10, start + i * 100,
                                       Provenance("SDS011"), quality=q) for i in range(n))
        self.outbox.commit()
        self.port.new_data.set()
        first = self.seq + 1
        self.seq += n
        return list(range(first, self.seq + 1))

    async def _supervise(self) -> None:
        while True:
            try:
                await self.uplink.run(self.port)
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.2)

    def start(self) -> None:
        self.task = asyncio.create_task(self._supervise())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


@contextlib.asynccontextmanager
async def gateway(tmp: Path, broker: Broker, **mqtt: object) -> AsyncIterator[Gateway]:
    settings = MqttSettings(port=broker.port, keepalive_s=5, **mqtt)  # type: ignore[arg-type]
    box = Outbox(tmp / "outbox.db", BufferSettings(), GW, uplinks=("mqtt",))
    port = OutboxPort("mqtt", box, asyncio.Event(), UplinkHealth("mqtt"),
                      status=lambda: {"started_ms": 1, "buffer_depth": box.depth(),
                                      "sources": [{"name": "sds", "state": "connected"}]})
    gw = Gateway(box, MqttUplink(settings, GW), port)
    gw.start()
    try:
        yield gw
    finally:
        await gw.stop()
        box.close()


@contextlib.asynccontextmanager
async def twin(broker: Broker, store: Path) -> AsyncIterator[Receiver]:
    receiver = Receiver(ReceiverSettings(port=broker.port, store_path=store, share_group=None,
                                         client_id=f"rx-{store.stem}"))
    stop = asyncio.Event()
    task = asyncio.create_task(receiver.run_forever(stop))
    await until(receiver.subscribed.is_set, 10, "receiver subscribed")
    try:
        yield receiver
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await receiver.close()


@contextlib.asynccontextmanager
async def watcher(broker: Broker, topic: str) -> AsyncIterator[list[tuple[str, bytes, float]]]:
    """Every message on ``topic`` (retained ones included): (topic, payload, arrival time)."""
    seen: list[tuple[str, bytes, float]] = []
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        await client.subscribe(topic, qos=1)

        async def collect() -> None:
            async for m in client.messages:
                assert isinstance(m.payload, bytes)
                seen.append((str(m.topic), m.payload, time.monotonic()))

        task = asyncio.create_task(collect())
        try:
            yield seen
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_nothing_leaves_the_outbox_until_the_twin_has_stored_it(
    tmp_path: Path, mosquitto: Broker
) -> None:
    async with (
        watcher(mosquitto, f"duet/v1/{GW}/obs") as published,
        gateway(tmp_path, mosquitto, ack_timeout_s=1.5, max_latency_s=0) as gw,
    ):
        sent = gw.commit(40)
        await until(lambda: published, 10, "a publish")
        await asyncio.sleep(3.5)  # no twin: PUBACKed by the broker, never acked
        assert gw.outbox.depth() == 40
        assert gw.port.health.retransmitted >= 40  # sent again after ack_timeout_s
        async with twin(mosquitto, tmp_path / "twin.db"):
            await until(lambda: gw.outbox.depth() == 0, 15, "confirmed by the twin")
        assert stored(tmp_path / "twin.db", GW) == sent
        assert gw.port.health.confirmed == 40 and gw.port.health.awaiting_ack == 0


async def test_rows_the_twin_refuses_go_to_dead_letters_and_the_rest_is_confirmed(
    tmp_path: Path, mosquitto: Broker
) -> None:
    async with (
        twin(mosquitto, tmp_path / "twin.db"),
        watcher(mosquitto, f"duet/v1/{GW}/events/#") as events,
        gateway(tmp_path, mosquitto, max_latency_s=0) as gw,
    ):
        good = gw.commit(4)
        bad = gw.commit(2, t=5_000)  # a gateway clock that was never set: 1970
        more = gw.commit(4)
        await until(lambda: gw.outbox.depth() == 0, 15, "everything answered")
        assert stored(tmp_path / "twin.db", GW) == good + more
        letters = gw.outbox.dead_letters()
        assert [row[0] for row in letters] == bad
        assert all("before 2000" in row[2] for row in letters)
        await until(lambda: events, 10, "the dead-letter event")
        topic, body, _ = events[0]
        assert topic == f"duet/v1/{GW}/events/dead_letter"
        assert json.loads(body)["count"] == 2


async def test_a_twin_without_the_dictionary_asks_for_it_and_gets_everything(
    tmp_path: Path, mosquitto: Broker
) -> None:
    async with gateway(tmp_path, mosquitto, max_latency_s=0) as gw:
        async with twin(mosquitto, tmp_path / "first.db"):
            first = gw.commit(10)
            await until(lambda: gw.outbox.depth() == 0, 15, "first twin confirms")
        # a new twin with an empty store takes over; the gateway's session goes on
        async with twin(mosquitto, tmp_path / "second.db") as rx:
            second = gw.commit(10)
            await until(lambda: gw.outbox.depth() == 0, 15, "second twin confirms")
            assert rx.counters.needs >= 1
        assert stored(tmp_path / "first.db", GW) == first
        assert stored(tmp_path / "second.db", GW) == second


async def test_steady_load_goes_out_in_few_messages_within_the_latency_bound(
    tmp_path: Path, mosquitto: Broker
) -> None:
    async with (
        twin(mosquitto, tmp_path / "twin.db"),
        watcher(mosquitto, f"duet/v1/{GW}/obs") as published,
        gateway(tmp_path, mosquitto, max_latency_s=1.0) as gw,
    ):
        committed_at: dict[int, float] = {}
        for _ in range(20):  # a commit of 4 observations every 0.2 s, for 4 s
            for s in gw.commit(4):
                committed_at[s] = time.monotonic()
            await asyncio.sleep(0.2)
        await until(lambda: gw.outbox.depth() == 0, 10, "all confirmed")
    assert 3 <= len(published) <= 7, len(published)  # ~1 message a second, not 20
    for _topic, payload, arrived in published:
        first = cbor2.loads(payload)["s0"]
        assert arrived - committed_at[first] <= 1.0 + 0.5


async def test_status_is_a_retained_birth_heartbeat_and_offline_document(
    tmp_path: Path, mosquitto: Broker
) -> None:
    async with gateway(tmp_path, mosquitto, heartbeat_s=5) as gw:
        async with watcher(mosquitto, f"duet/v1/{GW}/status") as status:
            await until(lambda: len(status) >= 1, 10, "birth")
            birth = json.loads(status[0][1])
            assert birth["state"] == "online" and birth["software"]
            assert birth["sensors"] == {"sds": {"state": "connected"}}
            assert birth["uplink"]["confirm"] == "twin" and "backlog" in birth
            await until(lambda: len(status) >= 2, 10, "heartbeat")
        await gw.stop()
    async with watcher(mosquitto, f"duet/v1/{GW}/status") as status:
        await until(lambda: status, 10, "retained status")
        assert json.loads(status[-1][1])["state"] == "offline"


async def test_without_twin_acks_every_message_carries_its_dictionary(
    tmp_path: Path, mosquitto: Broker
) -> None:
    """confirm = "broker": rows are gone on the PUBACK, so no message may depend on another."""
    async with (
        watcher(mosquitto, f"duet/v1/{GW}/obs") as published,
        gateway(tmp_path, mosquitto, confirm="broker", max_latency_s=0) as gw,
    ):
        for _ in range(3):
            gw.commit(4)
            await asyncio.sleep(0.3)
        await until(lambda: gw.outbox.depth() == 0, 10, "PUBACKed")
        await until(lambda: len(published) >= 3, 10, "three messages")
    assert all("st" in cbor2.loads(payload) for _t, payload, _a in published)
