"""The receiver's own MQTT 5 client: the packet reader, and sessions against a real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.contract import encode_batch
from edge.ingest.mqtt_client import (
    ClientSettings,
    Message,
    MqttError,
    PacketReader,
    ProtocolError,
    SubscriberClient,
    encode_pubacks,
    encode_publish_qos1,
    encode_varint,
    read_varint,
)
from edge.ingest.receiver import Receiver, ReceiverSettings
from edge.tls import TlsSettings
from tests.ingest.helpers import PREFIX, make_batch
from tests.plugins.mosquitto import Broker, free_port
from tests.plugins.tls_broker import TlsBroker, tls_broker  # noqa: F401
from tests.spine.harness import wait_until

pytestmark = pytest.mark.timeout(60)


def _publish_packet(topic: str, payload: bytes, qos: int, packet_id: int,
                    properties: bytes = b"", dup: bool = False) -> bytes:
    """A PUBLISH as a broker writes it (with properties the receiver does not use)."""
    raw = topic.encode()
    body = len(raw).to_bytes(2, "big") + raw
    if qos:
        body += packet_id.to_bytes(2, "big")
    body += encode_varint(len(properties)) + properties + payload
    first = 0x30 | (qos << 1) | (0x08 if dup else 0)
    return bytes((first,)) + encode_varint(len(body)) + body


topics = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00+#"),
                 min_size=1, max_size=40)
messages = st.lists(
    st.tuples(topics, st.binary(max_size=400), st.integers(0, 1), st.integers(1, 65535),
              st.sampled_from([b"", b"\x01\x01", b"\x02\x00\x00\x0e\x10",
                               b"\x26\x00\x01k\x00\x01v", b"\x0b\x81\x01"])),
    min_size=1, max_size=20)


@settings(max_examples=300, deadline=None)
@given(messages, st.lists(st.integers(1, 64), max_size=30))
def test_packets_split_anywhere_read_as_the_same_messages(
    sent: list[tuple[str, bytes, int, int, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(_publish_packet(t, p, q, i, props) for t, p, q, i, props in sent)
    reader = PacketReader()
    got: list[Message] = []
    pos = 0
    for cut in cuts:
        got += reader.feed(stream[pos:pos + cut])[0]
        pos += cut
    got += reader.feed(stream[pos:])[0]
    assert [(m.topic, m.payload, m.qos, m.packet_id if m.qos else 0) for m in got] == [
        (t, p, q, i if q else 0) for t, p, q, i, _ in sent]


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_read_or_refused_with_a_protocol_error(data: bytes) -> None:
    reader = PacketReader(max_packet=10_000)
    with contextlib.suppress(ProtocolError):  # anything else escaping is a failure
        reader.feed(data)


@given(st.integers(0, 268_435_455))
def test_variable_byte_integers_round_trip(value: int) -> None:
    raw = encode_varint(value)
    assert len(raw) <= 4 and read_varint(raw, 0, len(raw)) == (value, len(raw))


def test_a_qos2_publish_or_an_unknown_packet_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="QoS 2"):
        PacketReader().feed(_publish_packet("a/b", b"x", 2, 7))
    with pytest.raises(ProtocolError, match="longer than four bytes"):
        PacketReader().feed(b"\x30\xff\xff\xff\xff\x01")


def test_publish_and_puback_encodings_are_what_the_spec_says() -> None:
    assert encode_publish_qos1(258, "a/b", b"hi") == b"\x32\x0a\x00\x03a/b\x01\x02\x00hi"
    assert encode_pubacks([1, 513]) == b"\x40\x02\x00\x01\x40\x02\x02\x01"


# ---------------------------------------------------------------------------- real broker
def _settings(broker: Broker, client_id: str, **kw: object) -> ClientSettings:
    return ClientSettings(host="127.0.0.1", port=broker.port, client_id=client_id,
                          session_expiry_s=300, **kw)  # type: ignore[arg-type]


def _publisher(port: int) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"p-{uuid.uuid4().hex[:8]}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


async def _receive(client: SubscriberClient, count: int) -> list[Message]:
    got: list[Message] = []
    async with asyncio.timeout(10):
        while len(got) < count:
            first = await client.next_message()
            assert first is not None
            got += [first, *client.take(count - len(got) - 1)]
    return got


async def test_unacknowledged_messages_come_again_and_acknowledged_ones_do_not(
    mosquitto: Broker,
) -> None:
    pub = _publisher(mosquitto.port)
    try:
        async with SubscriberClient(_settings(mosquitto, "rx-redeliver")) as client:
            assert (await client.subscribe("t/+/obs")) == [1]
            for i in range(6):
                pub.publish(f"t/g{i}/obs", f"m{i}".encode(), qos=1).wait_for_publish(5)
            first = await _receive(client, 6)
            client.acknowledge(first[:3])  # the other three are "being stored" when we die
        async with SubscriberClient(_settings(mosquitto, "rx-redeliver")) as client:
            assert client.session_present
            again = await _receive(client, 3)
            client.acknowledge(again)
            await asyncio.sleep(0.3)
            assert client.queued == 0, [(m.payload, m.dup) for m in client.take(9)]
        assert [m.payload for m in first] == [f"m{i}".encode() for i in range(6)]
        assert sorted(m.payload for m in again) == [b"m3", b"m4", b"m5"]
        assert all(m.dup for m in again)
    finally:
        pub.loop_stop()
        pub.disconnect()


async def test_answers_beyond_the_brokers_window_wait_for_room_and_all_arrive(
    tmp_path: Path,
) -> None:
    """Mosquitto announces Receive Maximum 5: 300 answers published at once all arrive."""
    broker = Broker(tmp_path)
    broker.conf.write_text(broker.conf.read_text().replace("max_inflight_messages 0",
                                                           "max_inflight_messages 5"))
    broker.start()
    got: list[bytes] = []
    done = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="answers")

    def on_message(_c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        got.append(message.payload)
        if len(got) == 300:
            done.set()

    sub.on_message = on_message
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("ans/#", qos=1)
    sub.loop_start()
    try:
        async with SubscriberClient(_settings(broker, "rx-window")) as client:
            assert client.broker_receive_maximum == 5
            await asyncio.sleep(0.3)  # the subscription is in place
            client.publish([(f"ans/{i}", str(i).encode()) for i in range(300)])
            assert await asyncio.to_thread(done.wait, 10)
        assert sorted(got, key=int) == [str(i).encode() for i in range(300)]
    finally:
        sub.loop_stop()
        sub.disconnect()
        broker.stop()


def _password_broker(tmp_path: Path) -> Broker:
    broker = Broker(tmp_path)
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "twin", "right-one"],
                   check=True, capture_output=True)
    broker.conf.write_text(broker.conf.read_text().replace(
        "allow_anonymous true", f"allow_anonymous false\npassword_file {passwords}"))
    broker.start()
    return broker


async def test_a_refused_connection_is_one_line_naming_the_reason(tmp_path: Path) -> None:
    broker = _password_broker(tmp_path)
    try:
        with pytest.raises(MqttError) as refused:
            async with SubscriberClient(_settings(broker, "rx-pw", username="twin",
                                                  password="wrong-one")):
                pass
        text = str(refused.value)
        assert "refused the connection" in text and "0x8" in text and "\n" not in text
        assert "wrong-one" not in text
        async with SubscriberClient(_settings(broker, "rx-pw", username="twin",
                                              password="right-one")) as client:
            assert await client.subscribe("x/#") == [1]
    finally:
        broker.stop()


async def test_nothing_listening_is_an_mqtt_error_not_a_traceback() -> None:
    settings_ = ClientSettings(host="127.0.0.1", port=free_port(), client_id="rx-none")
    with pytest.raises(MqttError, match=r"cannot connect to 127\.0\.0\.1"):
        await SubscriberClient(settings_).connect()


class _Flood:
    """A fake broker that accepts a session and then writes ``count`` QoS 1 PUBLISH packets
    as fast as the socket takes them, ignoring the client's Receive Maximum."""

    def __init__(self, count: int, connack: bytes = b"\x20\x03\x00\x00\x00") -> None:
        self.count = count
        self.connack = connack
        self.written = 0
        self.acked = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *_exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # CONNECT
        writer.write(self.connack)  # default: success, no properties
        pending = asyncio.create_task(self._count_pubacks(reader))
        payload = b"x" * 100
        for i in range(self.count):
            writer.write(_publish_packet("f/gw/obs", payload, 1, i % 65535 + 1))
            self.written += 1
            if i % 100 == 99:
                await writer.drain()
        await writer.drain()
        await pending

    async def _count_pubacks(self, reader: asyncio.StreamReader) -> None:
        while self.acked < self.count:
            data = await reader.read(65536)
            if not data:
                return
            self.acked += data.count(b"\x40\x02")


async def test_a_broker_that_ignores_receive_maximum_cannot_fill_the_receivers_memory() -> None:
    """With ``receive_maximum`` messages waiting the client stops reading the socket: the
    rest waits in the sender (kernel buffers aside), and arrives once the queue is taken."""
    count = 200_000
    flood = _Flood(count)
    async with flood as port:
        client = SubscriberClient(ClientSettings("127.0.0.1", port, "rx-flood", keepalive_s=0,
                                                 receive_maximum=100))
        async with client:
            await asyncio.sleep(1.0)
            held = client.queued
            assert 100 <= held < 5_000  # one socket read past the limit at most
            assert flood.written < count  # the sender is blocked, not buffered here
            taken = 0
            async with asyncio.timeout(30):
                while taken < count:
                    first = await client.next_message()
                    assert first is not None
                    group = [first, *client.take(499)]
                    client.acknowledge(group)
                    taken += len(group)
        assert taken == count


async def test_answers_waiting_for_room_at_the_broker_do_not_unbound_the_queue() -> None:
    """The broker allows one unanswered publish (Receive Maximum 1) and never answers: the
    receiver's acks are held, not waited for, so the client still stops reading at its limit."""
    flood = _Flood(200_000, connack=b"\x20\x06\x00\x00\x03\x21\x00\x01")
    async with flood as port:
        client = SubscriberClient(ClientSettings("127.0.0.1", port, "rx-held", keepalive_s=0,
                                                 receive_maximum=100))
        async with client:
            assert client.broker_receive_maximum == 1
            most = taken = 0
            async with asyncio.timeout(30):
                while taken < 20_000:
                    first = await client.next_message()
                    assert first is not None
                    group = [first, *client.take(499)]
                    client.publish([("duet/v1/gw-a/ack", b"a"), ("duet/v1/gw-b/ack", b"b")])
                    client.acknowledge(group)
                    taken += len(group)
                    await asyncio.sleep(0.005)  # a store
                    most = max(most, client.queued)
            assert most < 5_000


# ---------------------------------------------------------------------------- TLS, receiver
async def test_the_receiver_stores_and_answers_over_tls_with_its_certificate(
    tls_broker: TlsBroker, tmp_path: Path  # noqa: F811
) -> None:
    rx = tls_broker.client("receiver-twin", role="receiver")
    receiver = Receiver(ReceiverSettings(
        port=tls_broker.port, store_path=tmp_path / "twin.db", client_id="receiver-twin",
        tls=TlsSettings(ca_file=rx.ca_file, cert_file=rx.cert_file, key_file=rx.key_file)))
    stop = asyncio.Event()
    task = asyncio.create_task(receiver.run_forever(stop))
    gw = tls_broker.client("gw-a")
    gateway = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw-a")
    gateway.tls_set(str(gw.ca_file), str(gw.cert_file), str(gw.key_file))
    acks: list[bytes] = []
    gateway.on_message = lambda _c, _u, m: acks.append(m.payload)
    gateway.connect("127.0.0.1", tls_broker.port)
    gateway.subscribe(f"{PREFIX}/gw-a/ack", qos=1)
    gateway.loop_start()
    try:
        await asyncio.to_thread(wait_until, receiver.subscribed.is_set, 10, "subscribed")
        gateway.publish(f"{PREFIX}/gw-a/obs", encode_batch(make_batch("gw-a", 1, 4)), qos=1)
        await asyncio.to_thread(wait_until, lambda: receiver.counters.observations_new == 4
                                and bool(acks), 10, "stored and answered")
    finally:
        gateway.loop_stop()
        gateway.disconnect()
        stop.set()
        await asyncio.wait_for(task, 15)
        await receiver.close()


async def test_a_receiver_restarting_on_a_backlog_beyond_its_window_drains_it(
    mosquitto: Broker, tmp_path: Path
) -> None:
    """The broker sends the queued backlog before it answers the re-subscriptions: with more
    than ``receive_maximum`` waiting, a SUBACK sits behind them, so the client must not stop
    reading while it waits for one (it once did, and ended every session on a SUBACK timeout)."""
    settings_ = ReceiverSettings(port=mosquitto.port, store_path=tmp_path / "twin.db",
                                 client_id="rx-backlog", receive_maximum=4, max_group=2)
    first = Receiver(settings_)
    stop = asyncio.Event()
    task = asyncio.create_task(first.run_forever(stop))
    await asyncio.to_thread(wait_until, first.subscribed.is_set, 10, "subscribed")
    stop.set()
    await asyncio.wait_for(task, 15)
    await first.close()
    pub = _publisher(mosquitto.port)
    try:
        for n in range(40):  # the session is kept: the broker queues them for the group
            pub.publish(f"{PREFIX}/gw-b/obs", encode_batch(make_batch("gw-b", 1 + 2 * n, 2)),
                        qos=1).wait_for_publish(5)
    finally:
        pub.loop_stop()
        pub.disconnect()
    again = Receiver(settings_)
    stop = asyncio.Event()
    task = asyncio.create_task(again.run_forever(stop))
    try:
        await asyncio.to_thread(wait_until, lambda: again.counters.observations_new == 80, 20,
                                "the backlog stored")
        assert again.counters.reconnects == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await again.close()
