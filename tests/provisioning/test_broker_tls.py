"""The shipped Mosquitto config, for real: TLS client certificates, identity and ACL."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
import uuid
from pathlib import Path

import aiomqtt
import paho.mqtt.client as mqtt
import pytest

from provisioning.ca import CertificateAuthority
from provisioning.identity import create_identity, load_csr
from provisioning.secrets import write_public
from tests.plugins.tls_broker import ClientCreds, TlsBroker

TIMEOUT_S = 5.0


def _tls(creds: ClientCreds | None, ca_file: str) -> aiomqtt.TLSParameters:
    if creds is None:
        return aiomqtt.TLSParameters(ca_certs=ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    return aiomqtt.TLSParameters(
        ca_certs=str(creds.ca_file),
        certfile=str(creds.cert_file),
        keyfile=str(creds.key_file),
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )


def _client(broker: TlsBroker, creds: ClientCreds | None) -> aiomqtt.Client:
    return aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=f"test-{uuid.uuid4().hex[:8]}",
        tls_params=_tls(creds, str(broker.ca.cert_path)),
        timeout=TIMEOUT_S,
        protocol=aiomqtt.ProtocolVersion.V311,
    )


async def _collect_until(client: aiomqtt.Client, sentinel_topic: str) -> list[str]:
    """Topics received, up to and including the sentinel (which proves delivery works)."""
    seen: list[str] = []
    async with asyncio.timeout(TIMEOUT_S):
        async for message in client.messages:
            seen.append(str(message.topic))
            if str(message.topic) == sentinel_topic:
                return seen
    return seen


def connect_outcome(broker: TlsBroker, creds: ClientCreds | None) -> str:
    """``"accepted"`` if the broker sends a successful CONNACK, else ``"refused: <why>"``."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
    if creds is None:
        client.tls_set(ca_certs=str(broker.ca.cert_path))
    else:
        client.tls_set(str(creds.ca_file), str(creds.cert_file), str(creds.key_file))
    outcome: list[str] = []
    logs: list[str] = []
    client.on_log = lambda _c, _u, _level, text: logs.append(text)
    client.on_connect = lambda _c, _u, _f, rc, _p: outcome.append(
        "accepted" if not rc.is_failure else f"refused: CONNACK {rc}"
    )
    try:
        client.connect(broker.host, broker.port, keepalive=5)
        deadline = time.monotonic() + TIMEOUT_S
        while not outcome and time.monotonic() < deadline:
            rc = client.loop(0.1)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                outcome.append(f"refused: {mqtt.error_string(rc)} {' | '.join(logs)}")
    except (ssl.SSLError, OSError) as exc:
        outcome.append(f"refused: {exc}")
    finally:
        client.disconnect()
    return outcome[0] if outcome else "refused: no CONNACK"


def _assert_refused(broker: TlsBroker, creds: ClientCreds | None, broker_says: str) -> None:
    """Refused at the TLS layer, for the reason ``broker_says`` (from Mosquitto's log)."""
    before = len(broker.log_text())
    outcome = connect_outcome(broker, creds)
    assert outcome.startswith("refused"), outcome
    deadline = time.monotonic() + TIMEOUT_S
    while broker_says not in broker.log_text()[before:] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert broker_says in broker.log_text()[before:], broker.log_text()[before:]


async def test_gateway_publishes_to_own_topic_and_receiver_gets_it(tls_broker: TlsBroker) -> None:
    gw = tls_broker.client("gw-a")
    rx = tls_broker.client("receiver-twin", role="receiver")
    async with _client(tls_broker, rx) as receiver, _client(tls_broker, gw) as gateway:
        await receiver.subscribe("duet/v1/+/obs", qos=1)
        await receiver.subscribe("duet/v1/+/status", qos=1)
        await gateway.publish("duet/v1/gw-a/status", b"online", qos=1)
        await gateway.publish("duet/v1/gw-a/obs", b"batch", qos=1)
        seen = await _collect_until(receiver, "duet/v1/gw-a/obs")
    assert seen == ["duet/v1/gw-a/status", "duet/v1/gw-a/obs"]


async def test_gateway_a_cannot_publish_into_gateway_b_topics(tls_broker: TlsBroker) -> None:
    gw_a = tls_broker.client("gw-a")
    gw_b = tls_broker.client("gw-b")
    rx = tls_broker.client("receiver-twin", role="receiver")
    async with (
        _client(tls_broker, rx) as receiver,
        _client(tls_broker, gw_a) as a,
        _client(tls_broker, gw_b) as b,
    ):
        await receiver.subscribe("duet/v1/#", qos=1)
        await a.publish("duet/v1/gw-b/obs", b"forged", qos=1)
        await a.publish("duet/v1/gw-b/status", b"offline", qos=1)
        await a.publish("duet/v1/receiver-twin/obs", b"forged", qos=1)
        # Then a legitimate message from B: everything before it has been routed by now.
        await b.publish("duet/v1/gw-b/obs", b"genuine", qos=1)
        seen = await _collect_until(receiver, "duet/v1/gw-b/obs")
    assert seen == ["duet/v1/gw-b/obs"], f"forged messages reached the receiver: {seen}"


async def test_gateway_cannot_read_other_gateways_data(tls_broker: TlsBroker) -> None:
    gw_a = tls_broker.client("gw-a")
    gw_b = tls_broker.client("gw-b")
    async with _client(tls_broker, gw_a) as a, _client(tls_broker, gw_b) as b:
        await a.subscribe("duet/v1/#", qos=1)
        await b.publish("duet/v1/gw-b/obs", b"private", qos=1)
        await b.publish("duet/v1/gw-a/config/x", b"forged config", qos=1)
        # The twin side may push a (signed) bundle to A's config topic: sent last.
        rx = tls_broker.client("receiver-twin", role="receiver")
        async with _client(tls_broker, rx) as ops:
            await ops.publish("duet/v1/gw-a/config/bundle", b"bundle", qos=1)
        seen = await _collect_until(a, "duet/v1/gw-a/config/bundle")
    assert seen == ["duet/v1/gw-a/config/bundle"]


def test_valid_gateway_certificate_is_accepted(tls_broker: TlsBroker) -> None:
    assert connect_outcome(tls_broker, tls_broker.client("gw-a")) == "accepted"


def test_client_without_certificate_is_refused(tls_broker: TlsBroker) -> None:
    _assert_refused(tls_broker, None, "peer did not return a certificate")


def test_expired_certificate_is_refused(tls_broker: TlsBroker) -> None:
    expired = tls_broker.client("gw-old", expired=True)
    _assert_refused(tls_broker, expired, "certificate verify failed")


async def test_revoked_certificate_is_refused(tls_broker: TlsBroker) -> None:
    gw = tls_broker.client("gw-stolen")
    async with _client(tls_broker, gw) as client:
        await client.publish("duet/v1/gw-stolen/obs", b"ok", qos=1)
    tls_broker.revoke("gw-stolen")
    _assert_refused(tls_broker, gw, "certificate verify failed")
    # Another gateway of the same CA is unaffected.
    other = tls_broker.client("gw-honest")
    async with _client(tls_broker, other) as client:
        await client.publish("duet/v1/gw-honest/obs", b"ok", qos=1)


def test_certificate_from_another_ca_is_refused(tls_broker: TlsBroker, tmp_path: Path) -> None:
    rogue = CertificateAuthority.create(tmp_path / "rogue-ca", name="rogue CA")
    ident = create_identity(tmp_path / "rogue-gw", "gw-a")
    cert = rogue.sign_csr(load_csr(ident.csr))
    write_public(ident.cert, rogue.chain_pem(cert))
    creds = ClientCreds("gw-a", tls_broker.ca.cert_path, ident.cert, ident.key, cert.serial_number)
    _assert_refused(tls_broker, creds, "certificate verify failed")


async def test_open_session_is_cut_only_by_restart(tls_broker: TlsBroker) -> None:
    """A reload refuses new sessions of a revoked certificate but keeps an open one."""
    gw = tls_broker.client("gw-stolen")
    async with _client(tls_broker, gw) as client:
        tls_broker.revoke("gw-stolen")  # CRL rewritten + SIGHUP
        await client.publish("duet/v1/gw-stolen/obs", b"still open", qos=1)  # not re-checked
        tls_broker.restart()
        with pytest.raises(aiomqtt.MqttError):
            for _ in range(50):  # the broker closed the socket; bounded wait for paho to see it
                await client.publish("duet/v1/gw-stolen/obs", b"x", qos=1, timeout=1)
                await asyncio.sleep(0.1)
    _assert_refused(tls_broker, gw, "certificate verify failed")


async def test_gateway_cannot_take_over_another_gateways_session(tls_broker: TlsBroker) -> None:
    """Client ids are forced to the certificate identity: reusing B's id does not kick B."""
    gw_a = tls_broker.client("gw-a")
    gw_b = tls_broker.client("gw-b")
    rx = tls_broker.client("receiver-twin", role="receiver")
    async with _client(tls_broker, rx) as receiver, _client(tls_broker, gw_b) as b:
        await receiver.subscribe("duet/v1/+/obs", qos=1)
        hijack = aiomqtt.Client(tls_broker.host, tls_broker.port, identifier="gw-b",
                                tls_params=_tls(gw_a, str(gw_a.ca_file)), timeout=TIMEOUT_S)
        async with hijack:
            await b.publish("duet/v1/gw-b/obs", b"still here", qos=1, timeout=TIMEOUT_S)
            seen = await _collect_until(receiver, "duet/v1/gw-b/obs")
    assert seen == ["duet/v1/gw-b/obs"]
    assert "as gw-a (" in tls_broker.log_text()  # A's session is named after A's certificate


def _subscribed(client: mqtt.Client, topic: str) -> None:
    """Subscribe (QoS 1) and wait for the SUBACK; the client's network loop must run."""
    acked = threading.Event()
    client.on_subscribe = lambda *_args: acked.set()
    client.subscribe(topic, qos=1)
    assert acked.wait(TIMEOUT_S), f"no SUBACK for {topic}"


def test_receiver_session_and_queue_survive_a_broker_restart(tls_broker: TlsBroker) -> None:
    """persistence + max_queued_messages: what the broker acknowledged is not lost."""
    gw = tls_broker.client("gw-a")
    rx = tls_broker.client("receiver-twin", role="receiver")

    def receiver() -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="receiver-twin",
                             clean_session=False)
        client.tls_set(str(rx.ca_file), str(rx.cert_file), str(rx.key_file))
        return client

    first = receiver()
    first.connect(tls_broker.host, tls_broker.port)
    first.loop_start()
    _subscribed(first, "duet/v1/+/obs")
    first.disconnect()
    first.loop_stop()

    sender = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw-a")
    sender.tls_set(str(gw.ca_file), str(gw.cert_file), str(gw.key_file))
    sender.connect(tls_broker.host, tls_broker.port)
    sender.loop_start()
    for i in range(3):
        sender.publish("duet/v1/gw-a/obs", f"batch {i}".encode(), qos=1).wait_for_publish(TIMEOUT_S)
    sender.disconnect()
    sender.loop_stop()

    tls_broker.restart()  # SIGTERM: Mosquitto writes its persistence file

    got: list[bytes] = []
    again = receiver()
    again.on_message = lambda _c, _u, msg: got.append(msg.payload)
    again.connect(tls_broker.host, tls_broker.port)
    again.loop_start()
    deadline = time.monotonic() + TIMEOUT_S
    while len(got) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    again.disconnect()
    again.loop_stop()
    assert got == [b"batch 0", b"batch 1", b"batch 2"]


def test_shared_subscription_of_two_receivers(tmp_path: Path) -> None:
    """Receivers scale out with $share/…: each instance has its own certificate identity."""
    from tests.plugins.tls_broker import start_tls_broker

    with start_tls_broker(tmp_path / "b", receivers=("receiver-a", "receiver-b")) as broker:
        gw = broker.client("gw-a")
        got: dict[str, list[bytes]] = {"receiver-a": [], "receiver-b": []}
        clients = []
        for name in got:
            creds = broker.client(name, role="receiver")
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name,
                                 protocol=mqtt.MQTTv5)
            client.tls_set(str(creds.ca_file), str(creds.cert_file), str(creds.key_file))
            client.on_message = lambda _c, _u, msg, n=name: got[n].append(msg.payload)
            client.connect(broker.host, broker.port)
            client.loop_start()
            _subscribed(client, "$share/duet-ingest/duet/v1/+/obs")
            clients.append(client)
        sender = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw-a")
        sender.tls_set(str(gw.ca_file), str(gw.cert_file), str(gw.key_file))
        sender.connect(broker.host, broker.port)
        sender.loop_start()
        for i in range(6):
            sender.publish("duet/v1/gw-a/obs", b"%d" % i, qos=1).wait_for_publish(TIMEOUT_S)
        deadline = time.monotonic() + TIMEOUT_S
        while sum(map(len, got.values())) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        for client in [*clients, sender]:
            client.disconnect()
            client.loop_stop()
    assert sorted(got["receiver-a"] + got["receiver-b"]) == [b"%d" % i for i in range(6)]
    assert got["receiver-a"] and got["receiver-b"]  # shared between both members


async def test_only_receivers_write_acks_and_each_gateway_reads_only_its_own(
    tls_broker: TlsBroker,
) -> None:
    gw_a = tls_broker.client("gw-a")
    gw_b = tls_broker.client("gw-b")
    rx = tls_broker.client("receiver-twin", role="receiver")
    async with (
        _client(tls_broker, gw_a) as a,
        _client(tls_broker, gw_b) as b,
        _client(tls_broker, rx) as twin,
    ):
        await a.subscribe("duet/v1/+/ack", qos=1)  # may only ever see its own
        await b.publish("duet/v1/gw-a/ack", b"forged: dead-letter everything", qos=1)
        await a.publish("duet/v1/gw-a/ack", b"self-made", qos=1)
        await twin.publish("duet/v1/gw-b/ack", b"for b", qos=1)
        await twin.publish("duet/v1/gw-a/ack", b"for a", qos=1)  # sent last
        seen: list[tuple[str, object]] = []
        async with asyncio.timeout(TIMEOUT_S):
            async for message in a.messages:
                seen.append((str(message.topic), message.payload))
                if message.payload == b"for a":
                    break
    assert seen == [("duet/v1/gw-a/ack", b"for a")]
