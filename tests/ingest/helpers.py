"""Test helpers for the twin receiver: gateways played by a plain MQTT client, batches, poison."""

from __future__ import annotations

import math
import sqlite3
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import cbor2
import paho.mqtt.client as mqtt

from edge.contract import Ack, ContractError, SessionEncoder, decode_ack, encode_batch
from edge.model import Batch, Datastream, Observation, Provenance, Quality
from tests.spine.test_contract import POISON, V1_POISON, _two_row_message

PREFIX = "duet/v1"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def make_batch(gw: str, first_seq: int, n: int = 20, t0: int | None = None,
               sensor: str = "sds") -> Batch:
    """n observations of two PM streams with quality, 50 ms apart, sequences from first_seq."""
    start = now_ms() - 60_000 if t0 is None else t0
    streams = [Datastream(gw, sensor, "pm2_5"), Datastream(gw, sensor, "pm10")]
    rows = []
    for i in range(n):
        q = Quality(1, {"gross_range": 1, "spike": 1}, {"ml_anomaly": round(0.1 + i / 1000, 4)})
        rows.append(Observation(streams[i % 2], 10 + i / 10, start + i * 50,
                                Provenance("SDS011", "A1"), quality=q, sequence=first_seq + i))
    return Batch(gw, tuple(rows))


class Gateways:
    """Plays any number of gateways over one MQTT connection; collects the twin's acks."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"probe-{uuid.uuid4().hex[:8]}")
        self.acks: dict[str, list[Ack]] = defaultdict(list)
        self.bad_acks: list[str] = []
        self._lock = threading.Lock()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"{PREFIX}/+/ack", qos=1)
        self.client.loop_start()
        self.encoders: dict[str, SessionEncoder] = {}

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        gw = message.topic.split("/")[-2]
        try:
            ack = decode_ack(message.payload)
        except ContractError as exc:
            self.bad_acks.append(str(exc))
            return
        with self._lock:
            self.acks[gw].append(ack)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def send(self, batch: Batch, full: bool = False) -> bytes:
        """Publish a v2 batch the way a gateway session does (dictionary once, then its ref)."""
        encoder = self.encoders.setdefault(batch.gateway_id, SessionEncoder(batch.gateway_id))
        encoded = encoder.encode(batch, sent_ms=now_ms(), full=full)
        self.publish(f"{PREFIX}/{batch.gateway_id}/obs", encoded.payload)
        return encoded.ref

    def ok(self, gw: str) -> set[int]:
        with self._lock:
            return {s for ack in self.acks[gw] for a, b in ack.ok for s in range(a, b + 1)}

    def refused(self, gw: str) -> list[tuple[int, int, str]]:
        with self._lock:
            return [x for ack in self.acks[gw] for x in ack.x]

    def needed(self, gw: str) -> list[tuple[bytes, int, int]]:
        with self._lock:
            return [n for ack in self.acks[gw] for n in ack.need]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def poison_payloads(gw: str) -> list[tuple[str, bytes]]:
    """Every kind of bad message the fault campaign found, and more: (name, payload)."""
    out: list[tuple[str, bytes]] = []
    for version, table in ((2, POISON), (1, V1_POISON)):
        for name, mutate, _reason in table:
            msg = _two_row_message(version)
            msg["gw"] = gw
            mutate(msg)
            if name in ("no gw", "gw with a slash"):
                msg.pop("gw", None)
            out.append((f"v{version} {name}", cbor2.dumps(msg)))
    out += [
        ("empty", b""),
        ("not cbor", b"\xff\xfe\x00garbage"),
        ("an int", cbor2.dumps(5)),
        ("a list", cbor2.dumps([1, 2, 3])),
        ("deep nesting", b"\x81" * 100_000 + b"\x00"),
        ("huge bignum", cbor2.dumps({"ver": 2, "s0": 10**5000})),
        ("another gateway's id", encode_batch(make_batch("gw-victim", 1, 2))),
        ("json", b'{"ver": 2}'),
    ]
    return out


def row_poison(gw: str, first_seq: int) -> bytes:
    """A valid message whose middle row has a 1970 timestamp (a gateway clock never set)."""
    batch = make_batch(gw, first_seq, 3)
    rows = list(batch.observations)
    o = rows[1]
    rows[1] = Observation(o.stream, o.result, 5_000, o.provenance, quality=o.quality,
                          sequence=o.sequence)
    return encode_batch(Batch(gw, tuple(rows)))


def nonfinite_batch(gw: str, first_seq: int) -> Batch:
    batch = make_batch(gw, first_seq, 3)
    rows = [Observation(o.stream, v, o.phenomenon_ms, o.provenance, sequence=o.sequence)
            for o, v in zip(batch.observations, (math.nan, math.inf, -math.inf), strict=True)]
    return Batch(gw, tuple(rows))


def stored(db_path: Path, gw: str) -> list[int]:
    db = sqlite3.connect(db_path)
    try:
        return [r[0] for r in db.execute(
            "SELECT seq FROM observations WHERE gateway=? ORDER BY seq", (gw,))]
    finally:
        db.close()


def dead_letters(db_path: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(db_path)
    try:
        return list(db.execute("SELECT topic, reason FROM dead_letter"))
    finally:
        db.close()
