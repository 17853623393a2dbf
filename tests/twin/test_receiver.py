"""The receiver's message path without a broker: what a group of messages does to the store."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.contract import SessionEncoder, encode_batch
from edge.ingest.receiver import Receiver, ReceiverSettings
from edge.model import Batch, Datastream, Observation, Provenance, Quality
from tests.sta.helpers import make_obs

T0 = 1_764_064_800_000


def payload(gw: str, seqs: range, t_ms: int | None = None) -> bytes:
    return encode_batch(Batch(gw, tuple(make_obs(gw, s, t_ms=t_ms) for s in seqs)))


async def test_a_group_stores_answers_and_keeps_status_and_events(tmp_path: Path) -> None:
    rx = Receiver(ReceiverSettings(store_path=tmp_path / "twin.db"))
    future = int(time.time() * 1000) + 3 * 86_400_000
    try:
        acks = await rx.handle_group([
            ("duet/v1/gw-a/obs", payload("gw-a", range(1, 4))),
            ("duet/v1/gw-a/obs", payload("gw-a", range(3, 6))),  # overlaps: 3 is held
            ("duet/v1/gw-b/obs", payload("gw-a", range(1, 2))),  # wrong topic
            ("duet/v1/gw-c/obs", b"\xff not cbor"),
            ("duet/v1/gw-d/obs", payload("gw-d", range(1, 2), t_ms=future)),  # from the future
            ("duet/v1/gw-a/status", b'{"state": "online", "version": "0.5.0", "backlog": 4}'),
            ("duet/v1/gw-a/events/disk_full", b'{"free_mb": 2}'),
        ])
        fleet = {g.gateway: g for g in await rx.store.fleet(int(time.time() * 1000))}
        totals = await rx.store.totals()
    finally:
        await rx.close()
    assert acks["gw-a"].ok == [(1, 5)] and not acks["gw-a"].x
    assert "gw-b" not in acks  # not its own batch: nothing to answer
    assert acks["gw-d"].x and acks["gw-d"].x[0][:2] == (1, 1)
    c = rx.counters
    assert (c.messages, c.observations_new, c.duplicates, c.rejected_messages, c.rejected_rows,
            c.transactions, c.status_messages, c.events) == (7, 5, 1, 2, 1, 1, 1, 1)
    assert (fleet["gw-a"].version, fleet["gw-a"].backlog, fleet["gw-a"].last_event) == (
        "0.5.0", 4, "disk_full")
    assert (totals.observations, totals.dead_letters) == (5, 3)


async def test_a_batch_the_database_refuses_is_dead_lettered_alone(pg_dsn: str) -> None:
    """A real PostgreSQL failure tied to one batch's data (a trigger refusing one sensor): that
    batch becomes a dead letter with an ``x`` answer; the other batches of the same group are
    stored and acknowledged, and nothing is redelivered forever."""
    import psycopg

    rx = Receiver(ReceiverSettings(store_path=pg_dsn))
    await rx.open()  # creates the schema
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute("CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN "
                  "RAISE EXCEPTION 'sensor boom is not allowed here'; END $$ LANGUAGE plpgsql")
        c.execute("CREATE TRIGGER boom BEFORE INSERT ON stream FOR EACH ROW "
                  "WHEN (NEW.sensor = 'boom') EXECUTE FUNCTION boom()")
    bad = encode_batch(Batch("gw-bad", (make_obs("gw-bad", 1, sensor_id="boom"),)))
    try:
        acks = await rx.handle_group([("duet/v1/gw-ok/obs", payload("gw-ok", range(1, 4))),
                                      ("duet/v1/gw-bad/obs", bad),
                                      ("duet/v1/gw-ok2/obs", payload("gw-ok2", range(1, 3)))])
        totals = await rx.store.totals()
    finally:
        await rx.close()
    assert acks["gw-ok"].ok == [(1, 3)] and acks["gw-ok2"].ok == [(1, 2)]
    assert not acks["gw-bad"].ok and acks["gw-bad"].x[0][:2] == (1, 1)
    assert "sensor boom is not allowed here" in acks["gw-bad"].x[0][2]
    assert (totals.observations, totals.dead_letters) == (5, 1)
    assert rx.counters.store_dead_letters == 1


def _write_transactions(dsn: str) -> int:
    """PostgreSQL's transaction id counter: each transaction that wrote anything took one."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute("SELECT pg_current_xact_id()::text::int8").fetchone()
    assert row is not None
    return int(row[0])


async def test_a_group_of_new_v2_gateways_costs_a_few_commits_not_some_per_gateway(
        pg_dsn: str) -> None:
    """60 gateways connect (each first batch carries its session dictionary): their gateways,
    streams, dictionaries and rows take a constant handful of commits (one fsync each), not a
    few per gateway — that was 3 commits per new dictionary, ~3.7 KB written per observation.
    A second worker with an empty cache then decodes their reference-only batches."""
    encoders = {f"gw-{i:02d}": SessionEncoder(f"gw-{i:02d}") for i in range(60)}

    def group(first_seq: int) -> list[tuple[str, bytes]]:
        return [(f"duet/v1/{gw}/obs", enc.encode(Batch(gw, tuple(
            make_obs(gw, s) for s in range(first_seq, first_seq + 10)))).payload)
            for gw, enc in encoders.items()]

    first = Receiver(ReceiverSettings(store_path=pg_dsn))
    await first.open()
    try:
        before = _write_transactions(pg_dsn)
        acks = await first.handle_group(group(1))
        spent = _write_transactions(pg_dsn) - before - 1
    finally:
        await first.close()
    assert all(ack.ok == [(1, 10)] for ack in acks.values()) and len(acks) == 60
    assert spent <= 6, f"{spent} write transactions for one group"
    second = Receiver(ReceiverSettings(store_path=pg_dsn))
    try:
        acks = await second.handle_group(group(11))  # references only: read from the store
        totals = await second.store.totals()
    finally:
        await second.close()
    assert all(ack.ok == [(11, 20)] and not ack.need for ack in acks.values())
    assert totals.observations == 1200


async def test_a_worker_holds_the_dictionaries_of_a_fleet_smaller_than_its_cache(
        pg_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    """Gateways take turns (each sends once a minute): with more gateways than the cache holds,
    an LRU cache misses on every message, and each miss is a read from the store. Above the
    fleet's size, nothing is read back; below it, the worker says so once in the log."""
    encoders = {f"gw-{i:02d}": SessionEncoder(f"gw-{i:02d}") for i in range(8)}

    def group(first_seq: int) -> list[tuple[str, bytes]]:
        return [(f"duet/v1/{gw}/obs", enc.encode(Batch(gw, tuple(
            make_obs(gw, s) for s in range(first_seq, first_seq + 2)))).payload)
            for gw, enc in encoders.items()]

    # the second worker meets the gateways after their dictionaries were sent: references only
    for cache, expected_loads in ((8, 0), (4, 24)):
        rx = Receiver(ReceiverSettings(store_path=pg_dsn, dictionary_cache=cache))
        caplog.clear()
        try:
            for round_ in range(3):
                for topic, body in group(1 + 2 * round_ + (0 if cache == 8 else 6)):
                    acks = await rx.handle_group([(topic, body)])
                    assert not any(a.need for a in acks.values())
        finally:
            await rx.close()
        assert rx.counters.dictionary_loads == expected_loads, cache
        warned = [r for r in caplog.records if "dictionary-cache" in r.getMessage()]
        assert len(warned) == (1 if expected_loads else 0)


quantities = st.sampled_from(["pm2_5", "pm10", "temperature", "co2", "car", "no_such_qty"])
provenances = st.builds(Provenance, st.sampled_from(["SDS011", "PMS5003", ""]),
                        st.sampled_from(["", "A1"]), st.sampled_from(["", "1.2"]),
                        st.sampled_from(["", "cal-7"]))
results = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                    st.integers(-10**6, 10**6).map(lambda i: i / 100))


@st.composite
def observation_lists(draw: st.DrawFn) -> list[Observation]:
    gw = "gw-h"
    n = draw(st.integers(1, 30))
    seq = draw(st.integers(1, 2**40))
    t = T0 + draw(st.integers(-10**6, 10**6))
    out = []
    for _ in range(n):
        seq += draw(st.integers(1, 3))
        t += draw(st.integers(0, 120_000))
        q = None
        if draw(st.booleans()):
            q = Quality()
            for test in draw(st.lists(st.sampled_from(["gross_range", "spike", "flat"]),
                                      max_size=3)):
                q.set(test, draw(st.sampled_from([1, 2, 3, 4, 9])))
            if draw(st.booleans()):
                q.scores["anomaly"] = draw(st.floats(0, 1))
            if draw(st.booleans()):
                q.scores["other"] = draw(st.floats(allow_nan=False, allow_infinity=False))
        interval = draw(st.one_of(st.none(), st.integers(0, 3_600_000)))
        out.append(Observation(
            stream=Datastream(gw, draw(st.sampled_from(["s1", "s2"])), draw(quantities)),
            result=draw(results), phenomenon_ms=t, provenance=draw(provenances),
            phenomenon_end_ms=None if interval is None else t + interval,
            result_ms=draw(st.one_of(st.none(), st.integers(T0, T0 + 10**7))),
            raw_result=draw(st.one_of(st.none(), results)), quality=q, sequence=seq))
    return out


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.one_of(st.text(max_size=4), st.integers(-2, 5)), inner, max_size=4),
    max_leaves=12)


keys = st.sampled_from(["ver", "gw", "st", "s0", "sd", "t0", "dt", "si", "val", "dur", "rt",
                        "raw", "q", "gaps", "sent"])
messages = st.one_of(
    observation_lists().map(lambda obs: ("valid", obs, None, None)),
    st.tuples(st.just("corrupt"), observation_lists(), keys, cbor_values),
    st.binary(max_size=40).map(lambda b: ("garbage", None, None, b)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(messages, min_size=1, max_size=6))
def test_no_message_can_break_the_receiver(
        group_spec: list[tuple[str, object, object, object]]) -> None:
    """Any mix of valid, corrupted and garbage messages: nothing raises, and the store holds
    exactly the sequence numbers the acks confirm."""
    group = []
    for kind, obs, key, junk in group_spec:
        if kind == "garbage":
            group.append(("duet/v1/gw-h/obs", junk))
            continue
        msg = cbor2.loads(encode_batch(Batch("gw-h", tuple(obs))))  # type: ignore[arg-type]
        if kind == "corrupt":
            msg[key] = junk
        group.append(("duet/v1/gw-h/obs", cbor2.dumps(msg)))
    with tempfile.TemporaryDirectory() as tmp:
        rx = Receiver(ReceiverSettings(store_path=Path(tmp) / "twin.db"))

        async def go() -> dict[str, object]:
            try:
                return await rx.handle_group(group)  # type: ignore[arg-type, return-value]
            finally:
                await rx.close()

        acks = asyncio.run(go())
        confirmed = {s for a, b in (acks["gw-h"].ok if "gw-h" in acks else [])  # type: ignore[attr-defined]
                     for s in range(a, b + 1)}
        db = Path(tmp) / "twin.db"
        held = {s for (s,) in sqlite3.connect(db).execute("SELECT seq FROM observation")}
        assert held == confirmed
