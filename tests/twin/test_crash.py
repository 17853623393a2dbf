"""0 rows lost, 0 stored twice across kill -9 of a receiver worker, of PostgreSQL and of the
broker — real processes: Mosquitto, PostgreSQL, two `duet-edge ingest` workers.

The publisher plays the gateways' side of upload contract v2: a batch stays with its gateway
until the twin holds it, and is sent again (same sequence numbers) when it is not confirmed in
time — here "confirmed" is read from the store, where the delivery side uses the receivers'
acks. So a broker that dies with messages in memory costs time, not rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
import pytest

from edge.contract import encode_batch
from edge.model import Batch
from tests.plugins.mosquitto import Broker
from tests.plugins.postgres import PgServer
from tests.sta.helpers import make_obs

pytestmark = pytest.mark.timeout(240)
GATEWAYS = [f"gw-crash-{i}" for i in range(8)]
ROUNDS = 40  # batches per gateway
ROWS = 10


class Worker:
    def __init__(self, name: str, broker: Broker, dsn: str, log: Path) -> None:
        self.cmd = [sys.executable, "-c", "from edge.cli import main; main()", "ingest",
                    "--port", str(broker.port), "--store", dsn, "--client-id", name,
                    "--log-format", "text"]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=out,
                                         env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Gateways:
    """Publishes every gateway's batches; re-sends what the twin does not hold yet."""

    def __init__(self, broker: Broker) -> None:
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="sim-gateways",
                                  protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(200)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", broker.port, keepalive=10)
        self.client.loop_start()
        self.payloads: dict[tuple[str, int], bytes] = {}
        for gw in GATEWAYS:
            for r in range(ROUNDS):
                first = r * ROWS + 1
                obs = tuple(make_obs(gw, s) for s in range(first, first + ROWS))
                self.payloads[(gw, first)] = encode_batch(Batch(gw, obs))

    def publish(self, keys: list[tuple[str, int]]) -> None:
        for gw, first in keys:
            self.client.publish(f"duet/v1/{gw}/obs", self.payloads[(gw, first)], qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def stored(dsn: str) -> list[tuple[str, int]]:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as c:
            return [(str(g), int(s)) for g, s in c.execute(
                "SELECT g.name, o.seq FROM observation o JOIN gateway g ON g.id = o.gateway_id")]
    except psycopg.Error:
        return []


@pytest.fixture
def chaos(tmp_path: Path, pg_private: PgServer) -> Iterator[tuple[Broker, PgServer]]:
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    broker = Broker(workdir)
    broker.start()
    try:
        yield broker, pg_private
    finally:
        broker.stop()


def test_kill_9_of_worker_postgres_and_broker_loses_and_duplicates_nothing(
        tmp_path: Path, chaos: tuple[Broker, PgServer]) -> None:
    broker, pg = chaos
    dsn = pg.dsn()
    workers = [Worker(f"rx-{i}", broker, dsn, tmp_path / f"rx-{i}.log") for i in range(2)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 30
    while not stored(dsn) and time.monotonic() < deadline:  # schema exists once rows can land
        with psycopg.connect(dsn) as c:
            if c.execute("SELECT to_regclass('seq_ledger')").fetchone() != (None,):
                break
        time.sleep(0.2)
    time.sleep(1.0)  # both subscribed
    gws = Gateways(broker)
    keys = list(gws.payloads)
    expected = {(gw, first + k) for gw, first in keys for k in range(ROWS)}
    chunks = [keys[i::4] for i in range(4)]

    def kill_broker() -> None:
        broker.proc.kill()  # type: ignore[union-attr]
        broker.proc.wait(10)  # type: ignore[union-attr]
        broker.proc = None
        time.sleep(1.0)
        broker.start()

    def kill_postgres() -> None:
        pg.kill9()
        time.sleep(2.0)
        pg.start()

    def kill_worker() -> None:
        workers[0].kill9()
        time.sleep(1.0)
        workers[0].start()

    try:
        for chunk, crash in zip(chunks, (kill_worker, kill_postgres, kill_broker, None),
                                strict=True):
            sender = threading.Thread(target=gws.publish, args=(chunk,))
            sender.start()
            time.sleep(0.3)  # mid-stream
            if crash is not None:
                crash()
            sender.join(60)
        # the gateways' side of contract v2: what the twin does not hold after a while is
        # sent again (same sequence numbers)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(5.0)
            held = set(stored(dsn))
            missing = [(gw, first) for gw, first in keys
                       if any((gw, first + k) not in held for k in range(ROWS))]
            if not missing:
                break
            gws.publish(missing)
        rows = stored(dsn)
    finally:
        gws.close()
        for w in workers:
            w.stop()
    logs = "\n".join(w.log.read_text(errors="replace") for w in workers)
    # the chaos really hit the receivers: sessions ended (database and broker gone)
    assert logs.count("receiver session ended") >= 2, logs[-3000:]
    assert len(rows) == len(set(rows)), f"stored twice: {len(rows) - len(set(rows))}\n{logs[-3000:]}"
    assert set(rows) == expected, f"lost {len(expected - set(rows))}\n{logs[-3000:]}"
    with psycopg.connect(dsn) as c:
        ledger = c.execute("SELECT sum(observations)::int8 FROM seq_ledger").fetchone()
    assert ledger == (len(expected),)
