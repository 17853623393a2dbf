"""The twin receiver keeps storing for healthy gateways whatever else arrives (real Mosquitto,
real SQLite)."""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from edge.contract import Ack, SessionEncoder, decode_batch, encode_batch
from edge.ingest.mqtt_client import SubscriberClient
from edge.ingest.receiver import Receiver, ReceiverSettings
from edge.ingest.sqlite_store import SqliteStore
from tests.ingest.helpers import (
    PREFIX,
    Gateways,
    dead_letters,
    make_batch,
    nonfinite_batch,
    poison_payloads,
    row_poison,
    stored,
)
from tests.plugins.mosquitto import Broker
from tests.spine.harness import ReceiverThread, wait_until

pytestmark = pytest.mark.timeout(120)


def test_poison_among_good_messages_blocks_nobody_even_across_a_restart(
    tmp_path: Path, mosquitto: Broker
) -> None:
    db = tmp_path / "twin.db"
    poison = poison_payloads("gw-evil")
    gws = Gateways(mosquitto.port)
    expected: dict[str, list[int]] = {"gw-a": [], "gw-b": []}
    seq = {"gw-a": 1, "gw-b": 1}

    def good(gw: str) -> None:
        batch = make_batch(gw, seq[gw], 10)
        gws.send(batch)
        expected[gw] += batch.sequences
        seq[gw] += 10

    try:
        with ReceiverThread(mosquitto.port, db) as rx:
            for _name, payload in poison:
                good("gw-a")
                gws.publish(f"{PREFIX}/gw-evil/obs", payload)
                good("gw-b")
            wait_until(lambda: all(gws.ok(g) >= set(s) for g, s in expected.items()), 30,
                       "acks for every good batch")
            assert rx.receiver.counters.rejected_messages == len(poison)
        for gw, seqs in expected.items():
            assert stored(db, gw) == seqs
        assert stored(db, "gw-evil") == [] and stored(db, "gw-victim") == []
        letters = dead_letters(db)
        assert len(letters) == len(poison)
        assert all(reason for _topic, reason in letters)
        # readable poison is answered with `x` on the publisher's own ack topic only
        assert gws.refused("gw-evil") and not gws.refused("gw-a") and not gws.acks["gw-victim"]

        # a restarted receiver reads the dictionaries from the store and goes on
        with ReceiverThread(mosquitto.port, db) as rx:
            for _name, payload in poison[:10]:
                gws.publish(f"{PREFIX}/gw-evil/obs", payload)
                good("gw-a")
            wait_until(lambda: gws.ok("gw-a") >= set(expected["gw-a"]), 30, "acks after restart")
            assert rx.receiver.counters.needs == 0
        assert stored(db, "gw-a") == expected["gw-a"]
    finally:
        gws.close()


async def test_rows_with_an_implausible_time_are_refused_alone(tmp_path: Path) -> None:
    receiver = Receiver(ReceiverSettings(store_path=tmp_path / "twin.db"))
    acks = await receiver.handle(f"{PREFIX}/gw-a/obs", row_poison("gw-a", 100))
    assert acks["gw-a"].ok == [(100, 100), (102, 102)]
    assert [(a, b) for a, b, _ in acks["gw-a"].x] == [(101, 101)]
    assert "before 2000" in acks["gw-a"].x[0][2]
    assert stored(tmp_path / "twin.db", "gw-a") == [100, 102]
    assert "1 rows refused" in dead_letters(tmp_path / "twin.db")[0][1]


async def test_non_finite_results_are_stored_never_counted_as_duplicates(tmp_path: Path) -> None:
    db = tmp_path / "twin.db"
    receiver = Receiver(ReceiverSettings(store_path=db))
    payload = SessionEncoder("gw-a").encode(nonfinite_batch("gw-a", 1)).payload
    await receiver.handle(f"{PREFIX}/gw-a/obs", payload)
    assert (receiver.counters.observations_new, receiver.counters.duplicates) == (3, 0)
    await receiver.handle(f"{PREFIX}/gw-a/obs", payload)  # redelivered
    assert (receiver.counters.observations_new, receiver.counters.duplicates) == (3, 3)
    await receiver.close()
    rows = sqlite3.connect(db).execute(
        "SELECT seq, result, nonfinite FROM observations ORDER BY seq").fetchall()
    assert rows == [(1, None, "NaN"), (2, None, "Infinity"), (3, None, "-Infinity")]
    assert math.isnan(decode_batch(payload).observations[0].result)


async def test_unknown_dictionary_is_answered_with_need_and_nothing_is_stored(tmp_path: Path) -> None:
    db = tmp_path / "twin.db"
    receiver = Receiver(ReceiverSettings(store_path=db))
    encoder = SessionEncoder("gw-a")
    encoder.encode(make_batch("gw-a", 1, 2))  # this one never reaches the twin
    later = encoder.encode(make_batch("gw-a", 3, 4))
    assert not later.full
    acks = await receiver.handle(f"{PREFIX}/gw-a/obs", later.payload)
    assert acks["gw-a"].need == [(later.ref, 3, 6)] and not acks["gw-a"].ok
    assert stored(db, "gw-a") == []
    encoder.forget(later.ref)
    again = encoder.encode(make_batch("gw-a", 3, 4))
    assert again.full
    assert (await receiver.handle(f"{PREFIX}/gw-a/obs", again.payload))["gw-a"].ok == [(3, 6)]
    # another receiver sharing the store decodes reference-only batches at once
    other = Receiver(ReceiverSettings(store_path=db))
    last = encoder.encode(make_batch("gw-a", 7, 2))
    assert (await other.handle(f"{PREFIX}/gw-a/obs", last.payload))["gw-a"].ok == [(7, 8)]


async def test_a_batch_the_store_fails_on_is_dead_lettered_and_the_rest_of_the_group_stored(
    tmp_path: Path,
) -> None:
    db = tmp_path / "twin.db"
    receiver = Receiver(ReceiverSettings(store_path=db))
    await receiver.open()  # creates the schema
    # a real database failure tied to one batch's data: a trigger refusing one sensor
    sqlite3.connect(db).executescript(
        "CREATE TRIGGER boom BEFORE INSERT ON stream WHEN NEW.sensor = 'boom' "
        "BEGIN SELECT RAISE(ABORT, 'sensor boom is not allowed here'); END;")
    group = [
        (f"{PREFIX}/gw-a/obs", encode_batch(make_batch("gw-a", 1, 5))),
        (f"{PREFIX}/gw-b/obs", encode_batch(make_batch("gw-b", 1, 5, sensor="boom"))),
        (f"{PREFIX}/gw-c/obs", encode_batch(make_batch("gw-c", 1, 5))),
    ]
    acks = await receiver.handle_group(group)
    assert acks["gw-a"].ok == [(1, 5)] and acks["gw-c"].ok == [(1, 5)]
    assert not acks["gw-b"].ok and acks["gw-b"].x[0][:2] == (1, 5)
    assert "sensor boom is not allowed here" in acks["gw-b"].x[0][2]
    assert stored(db, "gw-a") == stored(db, "gw-c") == [1, 2, 3, 4, 5]
    assert stored(db, "gw-b") == []
    assert receiver.counters.store_dead_letters == 1
    # no transaction was left open: the next message stores normally
    acks = await receiver.handle(f"{PREFIX}/gw-a/obs", encode_batch(make_batch("gw-a", 6, 5)))
    assert acks["gw-a"].ok == [(6, 10)]
    assert "sensor boom" in dead_letters(db)[0][1]


def test_an_unavailable_store_acknowledges_nothing_and_loses_nothing(
    tmp_path: Path, mosquitto: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "twin.db"
    gws = Gateways(mosquitto.port)
    caplog.set_level(logging.WARNING, logger="duet.ingest")
    try:
        with ReceiverThread(mosquitto.port, db, share_group=None,
                            twin_store=SqliteStore(db, busy_timeout_s=0.2)):
            gws.send(make_batch("gw-a", 1, 5))
            wait_until(lambda: gws.ok("gw-a") == {1, 2, 3, 4, 5}, 10, "first ack")
            locker = sqlite3.connect(db, isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")  # another process holds the database
            gws.send(make_batch("gw-a", 6, 5))
            wait_until(lambda: "store" in _causes(caplog), 10, "store failure noticed")
            assert gws.ok("gw-a") == {1, 2, 3, 4, 5}  # nothing acknowledged meanwhile
            locker.execute("ROLLBACK")
            wait_until(lambda: gws.ok("gw-a") == set(range(1, 11)), 20, "redelivered and stored")
        assert stored(db, "gw-a") == list(range(1, 11))
        assert dead_letters(db) == []
    finally:
        gws.close()


def test_reconnect_backoff_starts_again_after_a_healthy_session(
    tmp_path: Path, mosquitto: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="duet.ingest")
    with ReceiverThread(mosquitto.port, tmp_path / "twin.db", healthy_after_s=1.0) as rx:
        for _outage in range(4):
            time.sleep(1.5)  # a healthy session
            mosquitto.stop()
            time.sleep(3.0)  # several failed attempts: the backoff grows
            began = time.monotonic()
            mosquitto.start()
            wait_until(rx.receiver.subscribed.is_set, 10, "re-subscribed")
            assert time.monotonic() - began < 3.5
    first_retries = [
        r.__dict__["retry_in_s"] for r in caplog.records
        if r.__dict__.get("event") == "ingest_disconnected"
        and r.__dict__.get("after_healthy_session")
    ]
    assert len(first_retries) == 4
    assert all(delay <= 0.5 for delay in first_retries), first_retries
    assert _causes(caplog) == {"broker"}


def _causes(caplog: pytest.LogCaptureFixture) -> set[str]:
    return {r.__dict__["cause"] for r in caplog.records
            if r.__dict__.get("event") == "ingest_disconnected"}




def test_poison_queued_while_the_receiver_was_down_is_answered_once_after_restart(
    tmp_path: Path, mosquitto: Broker
) -> None:
    """The campaign's worst case: poison waiting in the receiver's persistent session came back
    on every reconnect and stopped everyone. Now it is dead-lettered once and acknowledged."""
    db = tmp_path / "twin.db"
    gws = Gateways(mosquitto.port)
    poison = poison_payloads("gw-evil")
    try:
        with ReceiverThread(mosquitto.port, db, share_group=None):
            pass  # the persistent session (and its subscription) now exists on the broker
        expected = []
        for i, (_name, payload) in enumerate(poison):
            gws.publish(f"{PREFIX}/gw-evil/obs", payload)
            batch = make_batch("gw-a", 1 + 5 * i, 5)
            gws.send(batch, full=True)
            expected += batch.sequences
        with ReceiverThread(mosquitto.port, db, share_group=None) as rx:
            wait_until(lambda: gws.ok("gw-a") >= set(expected), 30, "the queued good batches")
            assert rx.receiver.counters.rejected_messages == len(poison)
        with ReceiverThread(mosquitto.port, db, share_group=None) as rx:
            time.sleep(1.0)  # nothing comes back: everything was acknowledged
            assert rx.receiver.counters.messages == 0
        assert stored(db, "gw-a") == expected
        assert len(dead_letters(db)) == len(poison)
    finally:
        gws.close()


V1_SCHEMA = """
CREATE TABLE observation(
    id TEXT PRIMARY KEY, gateway TEXT NOT NULL, seq INTEGER NOT NULL, sensor TEXT NOT NULL,
    quantity TEXT NOT NULL, unit TEXT NOT NULL, phenomenon_ms INTEGER NOT NULL, phenomenon_end_ms INTEGER,
    result_ms INTEGER NOT NULL, result REAL NOT NULL, raw_result REAL, quality TEXT, provenance TEXT NOT NULL,
    received_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX observation_gw_seq ON observation(gateway, seq);
CREATE TABLE gap(gateway TEXT, first_seq INTEGER, last_seq INTEGER, count INTEGER, reason TEXT,
    received_ms INTEGER, PRIMARY KEY(gateway, first_seq));
CREATE TABLE rejected_message(received_ms INTEGER, topic TEXT, size INTEGER, reason TEXT);
INSERT INTO observation VALUES('id-1', 'gw-a', 1, 'sds', 'pm2_5', 'ug/m3', 1, NULL, 1, 12.5,
    NULL, NULL, '{}', 1);
INSERT INTO gap VALUES('gw-a', 100, 200, 101, 'evicted:size', 1);
"""


async def test_a_store_written_by_the_v1_receiver_is_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "twin.db"
    sqlite3.connect(db).executescript(V1_SCHEMA)
    receiver = Receiver(ReceiverSettings(store_path=db))
    acks = await receiver.handle(f"{PREFIX}/gw-a/obs", encode_batch(make_batch("gw-a", 1, 3)))
    await receiver.close()
    assert acks["gw-a"].ok == [(1, 3)]
    assert (receiver.counters.observations_new, receiver.counters.duplicates) == (2, 1)
    rows = sqlite3.connect(db).execute(
        "SELECT gateway, seq, result FROM observations ORDER BY seq").fetchall()
    assert rows[0] == ("gw-a", 1, 12.5) and [r[1] for r in rows] == [1, 2, 3]


async def test_gaps_starting_at_the_same_number_are_all_kept(tmp_path: Path) -> None:
    """Found by the chaos harness (hil/chaos): gaps were once keyed by (gateway, first number),
    so a later, wider announcement from the same number (restart:unclean 1..2,000,000, then
    moved-aside:corrupt 1..3,000,000 after a zero-length database) was dropped, and the
    observations only the second covered looked lost."""
    db = tmp_path / "twin.db"
    receiver = Receiver(ReceiverSettings(store_path=db))
    topic = f"{PREFIX}/gw-a/obs"
    await receiver.handle(topic, encode_batch(make_batch("gw-a", 10, 2),
                                              [(1, 5, -1, "restart:unclean")]))
    await receiver.handle(topic, encode_batch(make_batch("gw-a", 20, 2),
                                              [(1, 15, -1, "moved-aside:corrupt")]))
    await receiver.handle(topic, encode_batch(make_batch("gw-a", 30, 2),
                                              [(1, 15, -1, "moved-aside:corrupt")]))  # again
    await receiver.close()
    assert sqlite3.connect(db).execute(
        "SELECT first_seq, last_seq, reason FROM gap ORDER BY last_seq").fetchall() == [
        (1, 5, "restart:unclean"), (1, 15, "moved-aside:corrupt")]


class WindowProbe(Receiver):
    """A receiver whose store stalls until released, and that shows its MQTT client."""

    def __init__(self, settings: ReceiverSettings) -> None:
        super().__init__(settings)
        self.release = asyncio.Event()
        self.mqtt: SubscriberClient | None = None
        self.handling = 0

    def _client(self) -> SubscriberClient:
        self.mqtt = super()._client()
        return self.mqtt

    def queued(self) -> int:
        return 0 if self.mqtt is None else self.mqtt.queued

    async def handle_group(self, messages: Sequence[tuple[str, bytes]]) -> dict[str, Ack]:
        self.handling = len(messages)
        await self.release.wait()
        return await super().handle_group(messages)


async def test_a_busy_receiver_holds_at_most_its_receive_maximum(
    tmp_path: Path, mosquitto: Broker
) -> None:
    """A burst waits at the broker, not in the receiver's memory (MQTT 5 Receive Maximum):
    with the store stalled, no more than ``receive_maximum`` messages reach the process, and
    everything is stored once the store goes on."""
    receiver = WindowProbe(ReceiverSettings(
        port=mosquitto.port, store_path=tmp_path / "twin.db", share_group=None,
        client_id="rx-window", receive_maximum=4, max_group=2, group_linger_s=0))
    stop = asyncio.Event()
    task = asyncio.create_task(receiver.run_forever(stop))
    gws = Gateways(mosquitto.port)
    try:
        await asyncio.to_thread(wait_until, receiver.subscribed.is_set, 10, "subscribed")
        for first in range(1, 61, 2):
            await asyncio.to_thread(gws.publish, f"{PREFIX}/gw-w/obs",
                                    encode_batch(make_batch("gw-w", first, 2)))
        await asyncio.sleep(1.5)
        # the group being handled and what waits in the client's queue: 4, not 30
        assert receiver.handling + receiver.queued() == 4
        receiver.release.set()
        await asyncio.to_thread(wait_until, lambda: receiver.counters.observations_new == 60,
                                30, "all 60 observations stored")
    finally:
        gws.close()
        receiver.release.set()
        stop.set()
        await asyncio.wait_for(task, 15)
        await receiver.close()
