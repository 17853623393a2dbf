"""MQTT uplink in SensorThings mode: one Observation JSON per message on v1.1/Datastreams(id)/Observations."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge.config import BufferSettings
from edge.model import Datastream, Observation, Provenance
from edge.outbox import Outbox
from edge.seams import UplinkHealth
from edge.uplinks import OutboxPort
from edge.uplinks.mqtt import MqttUplink
from edge.uplinks.mqtt_settings import MqttSettings
from tests.plugins.mosquitto import Broker

pytestmark = pytest.mark.timeout(60)


async def test_observations_are_published_as_sensorthings_json(tmp_path: Path, mosquitto: Broker) -> None:
    received: list[tuple[str, dict[str, object]]] = []
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sta-sub")
    sub.on_connect = lambda c, *_a: c.subscribe("v1.1/#", qos=1)
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.on_message = lambda _c, _u, m: received.append((m.topic, json.loads(m.payload)))
    sub.connect("127.0.0.1", mosquitto.port)
    sub.loop_start()
    assert subscribed.wait(10)

    box = Outbox(tmp_path / "o.db", BufferSettings(), "gw-sta")
    known = Datastream("gw-sta", "pm", "pm2_5")
    unknown = Datastream("gw-sta", "pm", "pm10")
    prov = Provenance("SDS011", "58D9")
    box.append([Observation(known, 12.5, 1_760_000_000_000, prov),
                Observation(unknown, 20.0, 1_760_000_000_000, prov),
                Observation(known, 13.0, 1_760_000_001_000, prov, phenomenon_end_ms=1_760_000_061_000)])
    box.commit()
    uplink = MqttUplink(MqttSettings(port=mosquitto.port, mode="sensorthings",
                                     datastream_ids={"pm/pm2_5": 42}), "gw-sta")
    port = OutboxPort("default", box, asyncio.Event(), UplinkHealth("mqtt"))
    task = asyncio.create_task(uplink.run(port))
    for _ in range(200):
        if len(received) >= 2 and box.depth() == 0:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    sub.loop_stop()
    assert [t for t, _ in received] == ["v1.1/Datastreams(42)/Observations"] * 2
    first, second = (body for _, body in received)
    assert first["result"] == 12.5 and first["phenomenonTime"].startswith("2025-10-09T")  # type: ignore[union-attr]
    assert "/" in second["phenomenonTime"]  # type: ignore[operator]
    assert first["parameters"]["obsId"]  # type: ignore[index]
    # the stream without a Datastream id is dead-lettered with a reason, not lost
    (dead,) = box.dead_letters()
    assert dead[0] == 2 and "no SensorThings Datastream id" in dead[2]
    box.close()
