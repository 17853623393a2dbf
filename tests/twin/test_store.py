"""Both twin stores, real SQLite and real PostgreSQL, against the same expectations."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest

from edge.contract import decode_batch, encode_batch
from edge.ingest.rows import from_cbor, from_decoded, to_cbor, to_observations
from edge.ingest.store import Rejection, TwinStore, open_store
from edge.model import Batch
from tests.plugins.postgres import PgServer
from tests.twin.helpers import batch, execute, observations, query, stored_keys

pytestmark = pytest.mark.timeout(60)
NOW = 1_764_064_900_000


async def test_new_then_duplicates_by_gateway_and_seq(store: TwinStore, store_target: str) -> None:
    out = await store.store_batches([batch("gw-a", range(1, 11)), batch("gw-b", range(1, 6))], NOW)
    assert [(o.new, o.duplicates) for o in out] == [(10, 0), (5, 0)]
    # a redelivered message, and one overlapping it, in the same transaction
    out = await store.store_batches(
        [batch("gw-a", range(1, 11)), batch("gw-a", range(8, 15))], NOW)
    assert [(o.new, o.duplicates) for o in out] == [(0, 10), (4, 3)]
    keys = stored_keys(store_target)
    assert keys == sorted(set(keys))
    assert keys == [("gw-a", s) for s in range(1, 15)] + [("gw-b", s) for s in range(1, 6)]
    totals = await store.totals()
    assert (totals.observations, totals.gateways) == (19, 2)


async def test_rows_read_back_exactly(store: TwinStore, store_target: str) -> None:
    obs = observations("gw-r", range(1, 4), interval_s=60) + observations(
        "gw-r", range(4, 6), result=150.0)
    payload = encode_batch(Batch("gw-r", tuple(obs)), gaps=[(6, 9, 4, "evicted:size")])
    decoded = decode_batch(payload)
    await store.store_batches([from_decoded(decoded)], NOW)
    rows = query(store_target, "SELECT seq, sensor, quantity, unit, result, raw_result, "
                               "quality_flag, quality_tests, provenance FROM observations "
                               "ORDER BY seq")
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    for row, o in zip(rows, decoded.observations, strict=True):
        _seq, sensor, qty, unit, result, raw, flag, tests, prov = row
        assert (sensor, qty, unit) == ("sds011-1", "pm2_5", "ug/m3")
        assert result == o.result and raw == o.raw_result
        assert o.quality is not None and flag == o.quality.aggregate
        tests_d = tests if isinstance(tests, dict) else json.loads(str(tests))
        assert tests_d == o.quality.tests
        prov_d = prov if isinstance(prov, dict) else json.loads(str(prov))
        assert prov_d == o.provenance.as_dict()
    # one stream row, two quality profiles: nothing repeated per observation
    assert query(store_target, "SELECT count(*) FROM stream") == [(1,)]
    assert query(store_target, "SELECT count(*) FROM quality_profile") == [(2,)]
    totals = await store.totals()
    assert totals.gaps == [(6, 9, 4, "evicted:size")]


async def test_forward_queue_isolates_a_parked_gateway(store: TwinStore) -> None:
    await store.store_batches([batch("gw-bad", range(1, 4)), batch("gw-ok", range(1, 4))], NOW,
                              forward=True)
    # redelivered rows are not queued again
    await store.store_batches([batch("gw-ok", range(1, 4))], NOW, forward=True)
    items = await store.forward_claim(NOW, 10)
    assert sorted(i.gateway for i in items) == ["gw-bad", "gw-ok"]
    bad = next(i for i in items if i.gateway == "gw-bad")
    await store.forward_park("gw-bad", NOW + 60_000, "HTTP 400: no location")
    await store.store_batches([batch("gw-ok", range(4, 6))], NOW, forward=True)
    ok = next(i for i in items if i.gateway == "gw-ok")
    await store.forward_settle(ok, {2: "HTTP 400: bad value"}, NOW)
    later = await store.forward_claim(NOW + 1, 10)
    assert [(i.gateway, i.rows.seq) for i in later] == [("gw-ok", [4, 5])]
    fleet = {g.gateway: g for g in await store.fleet(NOW)}
    assert fleet["gw-bad"].forward_parked_until_ms == NOW + 60_000
    assert fleet["gw-bad"].forward_error == "HTTP 400: no location"
    after_backoff = await store.forward_claim(NOW + 60_000, 10)
    assert ("gw-bad", [1, 2, 3]) in [(i.gateway, i.rows.seq) for i in after_backoff]
    assert bad.attempts == 0
    totals = await store.totals()
    assert totals.forward_dead_letters == 1


async def test_status_events_and_fleet(store: TwinStore) -> None:
    await store.store_batches([batch("gw-1", range(1, 4))], NOW)
    await store.put_status("gw-1", {"state": "online", "version": "0.2.0", "backlog": 42,
                                    "oldest_unsent_ms": NOW - 5000}, NOW + 1)
    await store.put_status("gw-2", {"state": "offline"}, NOW + 2)  # last will: no version
    await store.put_status("gw-2", {"state": "online", "version": "0.1.0"}, NOW + 3)
    await store.put_status("gw-2", {"state": "offline"}, NOW + 4)
    await store.add_event("gw-2", "disk_full", {"free_mb": 3}, NOW + 5)
    fleet = {g.gateway: g for g in await store.fleet(NOW + 10)}
    g1, g2 = fleet["gw-1"], fleet["gw-2"]
    assert (g1.state, g1.version, g1.backlog, g1.observations) == ("online", "0.2.0", 42, 3)
    assert g1.oldest_unsent_ms == NOW - 5000 and g1.last_data_ms == NOW
    assert (g2.state, g2.version, g2.observations) == ("offline", "0.1.0", 0)
    assert (g2.events_24h, g2.last_event, g2.last_seen_ms) == (1, "disk_full", NOW + 4)


async def test_dictionaries_and_dead_letters(store: TwinStore) -> None:
    assert await store.get_dictionary("gw-d", b"\x01" * 8) is None
    await store.put_dictionary("gw-d", b"\x01" * 8, b"table-1")
    await store.put_dictionary("gw-d", b"\x01" * 8, b"table-1")  # idempotent
    assert await store.get_dictionary("gw-d", b"\x01" * 8) == b"table-1"
    assert await store.get_dictionary("gw-other", b"\x01" * 8) is None
    await store.reject(Rejection("duet/v1/gw-d/obs", "not CBOR", b"\xff\x00", "gw-d", 3, 9), NOW)
    assert (await store.totals()).dead_letters == 1


async def test_columns_round_trip_through_the_forward_queue_encoding() -> None:
    decoded = decode_batch(encode_batch(Batch("gw-q", tuple(
        observations("gw-q", range(1, 5), interval_s=300)))))
    cols = from_decoded(decoded)
    again = from_cbor(to_cbor(cols))
    assert again == cols
    rebuilt = to_observations(again)
    for a, b in zip(rebuilt, decoded.observations, strict=True):
        assert (a.stream, a.provenance, a.result, a.phenomenon_ms, a.phenomenon_end_ms,
                a.result_time_ms, a.raw_result, a.sequence) == (
            b.stream, b.provenance, b.result, b.phenomenon_ms, b.phenomenon_end_ms,
            b.result_time_ms, b.raw_result, b.sequence)
        assert a.quality is not None and b.quality is not None
        assert a.quality.as_dict() == b.quality.as_dict()


async def test_two_postgres_receivers_racing_on_the_same_rows_store_each_once(
        pg_dsn: str) -> None:
    """Shared subscriptions hand a redelivered message to another worker: the ledger holds."""
    stores = [open_store(pg_dsn) for _ in range(2)]
    for s in stores:
        await s.open()
    try:
        for round_ in range(20):
            seqs = range(round_ * 10 + 1, round_ * 10 + 11)
            results = await asyncio.gather(
                *(s.store_batches([batch("gw-race", seqs), batch(f"gw-{i}", seqs)], NOW)
                  for i, s in enumerate(stores)))
            assert sum(r[0].new for r in results) == 10
    finally:
        for s in stores:
            await s.close()
    keys = stored_keys(pg_dsn)
    assert len(keys) == len(set(keys)) == 600


async def test_partitions_are_per_day(pg_dsn: str) -> None:
    store = open_store(pg_dsn)
    await store.open()
    try:
        day = 86_400_000
        await store.store_batches([batch("gw-p", [1], t_ms=NOW), batch("gw-p", [2],
                                                                        t_ms=NOW + 3 * day)], NOW)
    finally:
        await store.close()
    parts = query(pg_dsn, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON "
                          "c.oid = i.inhrelid WHERE i.inhparent = 'observation'::regclass "
                          "AND c.relkind = 'r' ORDER BY 1")
    assert [p[0] for p in parts] == ["observation_20251125", "observation_20251128"]
    options = str(query(pg_dsn, "SELECT reloptions FROM pg_class WHERE relname = "
                                "'observation_20251125'")[0][0])
    # frozen by the insert-triggered vacuum, not months later by an anti-wraparound one
    assert "autovacuum_freeze_min_age=0" in options
    assert "autovacuum_vacuum_insert_scale_factor=0" in options


async def test_a_day_partition_of_an_earlier_release_gains_the_options(pg_dsn: str) -> None:
    store = open_store(pg_dsn)
    await store.open()
    try:
        execute(pg_dsn, "CREATE TABLE observation_20251125 PARTITION OF observation FOR VALUES "
                        "FROM ('2025-11-25') TO ('2025-11-26')")  # as an earlier release did
        await store.store_batches([batch("gw-o", [1], t_ms=NOW)], NOW)
    finally:
        await store.close()
    options = str(query(pg_dsn, "SELECT reloptions FROM pg_class WHERE relname = "
                                "'observation_20251125'")[0][0])
    assert "autovacuum_freeze_min_age=0" in options


async def test_sqlite_store_of_the_first_release_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE observation(id TEXT PRIMARY KEY, gateway TEXT NOT NULL, seq INTEGER NOT NULL,
          sensor TEXT NOT NULL, quantity TEXT NOT NULL, unit TEXT NOT NULL,
          phenomenon_ms INTEGER NOT NULL, phenomenon_end_ms INTEGER, result_ms INTEGER NOT NULL,
          result REAL NOT NULL, raw_result REAL, quality TEXT, provenance TEXT NOT NULL,
          received_ms INTEGER NOT NULL) WITHOUT ROWID;
        CREATE INDEX observation_gw_seq ON observation(gateway, seq);
        CREATE TABLE gap(gateway TEXT, first_seq INTEGER, last_seq INTEGER, count INTEGER,
          reason TEXT, received_ms INTEGER, PRIMARY KEY(gateway, first_seq));
        CREATE TABLE rejected_message(received_ms INTEGER, topic TEXT, size INTEGER, reason TEXT);
    """)
    old.execute("INSERT INTO observation VALUES('x','gw-old',7,'s1','pm10','ug/m3',1000,NULL,1000,"
                "3.5,NULL,'{\"agg\": 1, \"tests\": {\"spike\": 1}}','{\"sensorModel\": \"SDS011\"}',"
                "2000)")
    old.commit()
    old.close()
    store = open_store(path)
    await store.open()
    try:
        out = await store.store_batches([batch("gw-old", [7, 8])], NOW)
        assert [(o.new, o.duplicates) for o in out] == [(1, 1)]
    finally:
        await store.close()
    rows = query(str(path), "SELECT gateway, seq, result, quality_tests FROM observations "
                            "ORDER BY seq")
    assert rows[0] == ("gw-old", 7, 3.5, '{"spike":1}')
    assert [r[1] for r in rows] == [7, 8]


PREVIOUS_RELEASE_SCHEMA = """
CREATE TABLE observation(
    id TEXT NOT NULL, gateway TEXT NOT NULL, seq INTEGER NOT NULL, sensor TEXT NOT NULL,
    quantity TEXT NOT NULL, unit TEXT NOT NULL, phenomenon_ms INTEGER NOT NULL,
    phenomenon_end_ms INTEGER, result_ms INTEGER NOT NULL, result REAL, raw_result REAL,
    quality TEXT, provenance TEXT NOT NULL, received_ms INTEGER NOT NULL,
    nonfinite TEXT, PRIMARY KEY(gateway, seq)) WITHOUT ROWID;
CREATE TABLE gap(
    gateway TEXT, first_seq INTEGER, last_seq INTEGER, count INTEGER, reason TEXT,
    received_ms INTEGER, PRIMARY KEY(gateway, first_seq, last_seq, reason));
CREATE TABLE dead_letter(
    received_ms INTEGER NOT NULL, topic TEXT NOT NULL, gateway TEXT, ranges TEXT,
    reason TEXT NOT NULL, size INTEGER NOT NULL, payload BLOB);
CREATE TABLE dictionary(
    gateway TEXT NOT NULL, ref BLOB NOT NULL, body BLOB NOT NULL, received_ms INTEGER NOT NULL,
    PRIMARY KEY(gateway, ref)) WITHOUT ROWID;
INSERT INTO observation VALUES('i1', 'gw-prev', 1, 's1', 'pm10', 'ug/m3', 1000, NULL, 1000,
    4.5, NULL, NULL, '{"sensorModel": "SDS011"}', 2000, NULL);
INSERT INTO observation VALUES('i2', 'gw-prev', 2, 's1', 'pm10', 'ug/m3', 2000, NULL, 2000,
    NULL, NULL, NULL, '{"sensorModel": "SDS011"}', 2000, 'Infinity');
INSERT INTO gap VALUES('gw-prev', 3, 9, 7, 'restart:unclean', 2000);
INSERT INTO gap VALUES('gw-gone', 1, 5, 5, 'evicted:size', 2000);
INSERT INTO dead_letter VALUES(2000, 'duet/v1/gw-prev/obs', 'gw-prev', '[[10, 12]]', 'bad', 3,
    x'010203');
INSERT INTO dictionary VALUES('gw-prev', x'aa', x'bb', 2000);
"""


async def test_sqlite_store_of_the_previous_release_keeps_gaps_dictionaries_and_dead_letters(
    tmp_path: Path,
) -> None:
    """Upgrading a twin must not forget what it was told: announced gaps, v2 session
    dictionaries, dead letters and the kind of non-finite results all carry over, and the
    upgraded store takes new dictionaries and dead letters."""
    path = tmp_path / "prev.db"
    sqlite3.connect(path).executescript(PREVIOUS_RELEASE_SCHEMA)
    store = open_store(path)
    await store.open()
    try:
        assert await store.get_dictionary("gw-prev", b"\xaa") == b"\xbb"
        await store.put_dictionary("gw-prev", b"\xcc", b"\xdd")
        await store.reject(Rejection("duet/v1/gw-x/obs", "worse", b"", "gw-x", 1, 2), NOW)
        totals = await store.totals()
    finally:
        await store.close()
    assert sorted(totals.gaps) == [(1, 5, 5, "evicted:size"), (3, 9, 7, "restart:unclean")]
    assert query(str(path), "SELECT seq, result, nonfinite FROM observations ORDER BY seq") == [
        (1, 4.5, None), (2, None, "Infinity")]
    assert query(str(path), "SELECT gateway, first_seq, last_seq, reason FROM dead_letter "
                            "ORDER BY received_ms") == [("gw-prev", 10, 12, "bad"),
                                                        ("gw-x", 1, 2, "worse")]


async def test_gateway_locations(store: TwinStore, store_target: str) -> None:
    await store.set_location("gw-loc", 4.40, 51.22)
    assert await store.locations() == {"gw-loc": (4.40, 51.22, 0.0 if "postgres" in
                                                  store_target else None)}
    if "postgres" in store_target:  # a real PostGIS point, usable in spatial queries
        assert query(store_target, "SELECT ST_AsText(ST_Force2D(location)) FROM gateway "
                                   "WHERE name = 'gw-loc'") == [("POINT(4.4 51.22)",)]


async def test_two_forwarders_never_claim_the_same_gateway(pg_dsn: str) -> None:
    """Several workers may run the forward loop: a gateway is leased to one at a time."""
    stores = [open_store(pg_dsn) for _ in range(2)]
    for s in stores:
        await s.open()
    try:
        await stores[0].store_batches([batch(f"gw-f{i}", [1]) for i in range(6)], NOW,
                                      forward=True)
        a, b = await asyncio.gather(stores[0].forward_claim(NOW, 10),
                                    stores[1].forward_claim(NOW, 10))
        got = [i.gateway for i in a] + [i.gateway for i in b]
        assert sorted(got) == [f"gw-f{i}" for i in range(6)]  # each once, all of them
        assert await stores[1].forward_claim(NOW, 10) == []  # leased
        await stores[0].forward_settle((a or b)[0], {}, NOW)
        # the lease runs out: an unsettled gateway is free again for anyone
        again = await stores[1].forward_claim(NOW + 301_000, 10)
        assert len(again) == 5
        fleet = await stores[0].fleet(NOW)
        assert all(g.forward_parked_until_ms is None for g in fleet)  # a lease is not a park
    finally:
        for s in stores:
            await s.close()


async def test_non_finite_results_are_stored_not_dropped(store: TwinStore,
                                                        store_target: str) -> None:
    """A NaN or infinite result is a real observation ("no usable number"): stored and counted
    as new, with the result NULL (sums and averages over the column stay finite) and the kind
    in ``nonfinite``; read back as it was sent (docs/upload-contract.md)."""
    import math

    b = batch("gw-nan", [1, 2, 3, 4])
    b.result[1], b.result[2], b.result[3] = math.nan, math.inf, -math.inf
    out = await store.store_batches([b], NOW)
    assert [(o.new, o.duplicates) for o in out] == [(4, 0)]
    assert query(store_target, "SELECT seq, result, nonfinite FROM observations ORDER BY seq") == [
        (1, 12.5, None), (2, None, "NaN"), (3, None, "Infinity"), (4, None, "-Infinity")]
    assert query(store_target, "SELECT sum(result) FROM observations") == [(12.5,)]
    rows = await store.read_observations("gw-nan", None, None, 10)
    results = [r.result for r in sorted(rows, key=lambda r: r.seq)]
    assert results[0] == 12.5 and math.isnan(results[1]) and results[2:] == [math.inf, -math.inf]
    again = await store.store_batches([b], NOW)
    assert [(o.new, o.duplicates) for o in again] == [(0, 4)]


async def test_a_store_without_the_nonfinite_column_gains_it(store_target: str) -> None:
    """Stores of the previous release kept ±Infinity in a NOT NULL ``result`` column."""
    first = open_store(store_target)
    await first.open()
    await first.store_batches([batch("gw-old", [1])], NOW)
    await first.close()
    for sql in ("DROP VIEW observations", "ALTER TABLE observation DROP COLUMN nonfinite"):
        execute(store_target, sql)
    if not store_target.endswith(".db"):
        execute(store_target, "ALTER TABLE observation ALTER COLUMN result SET NOT NULL")
    again = open_store(store_target)
    await again.open()
    try:
        b = batch("gw-old", [2])
        b.result[0] = float("inf")
        await again.store_batches([b], NOW)
    finally:
        await again.close()
    assert query(store_target, "SELECT seq, result, nonfinite FROM observations ORDER BY seq") == [
        (1, 12.5, None), (2, None, "Infinity")]


@pytest.mark.timeout(180)
async def test_autovacuum_freezes_a_filling_day_partition(pg_private: PgServer) -> None:
    """The partition options at work: PostgreSQL's own autovacuum, not a VACUUM FREEZE, leaves
    a day's filled pages all-frozen, so they are not written again by an anti-wraparound
    vacuum months later (with the default options this vacuum freezes nothing)."""
    import psycopg

    dsn = pg_private.dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET autovacuum_naptime = 1")
        conn.execute("SELECT pg_reload_conf()")
    store = open_store(dsn)
    await store.open()
    try:
        for k in range(120):  # 60,000 rows of one day: past the 50,000-row vacuum threshold
            seqs = range(k * 500 + 1, k * 500 + 501)
            await store.store_batches([batch("gw-v", seqs, t_ms=NOW)], NOW)
    finally:
        await store.close()
    execute(dsn, "CREATE EXTENSION IF NOT EXISTS pg_visibility")
    part = "observation_20251125"
    deadline = time.monotonic() + 120
    frozen, pages = 0, 1
    while time.monotonic() < deadline:
        [(all_frozen, size)] = query(dsn, f"SELECT (SELECT all_frozen FROM "
                                          f"pg_visibility_map_summary('{part}')), "
                                          f"pg_relation_size('{part}') / 8192")
        frozen, pages = int(str(all_frozen)), int(str(size))
        if frozen >= pages - 1:  # the last, still filling page may be left
            break
        await asyncio.sleep(1)
    assert pages > 50
    assert frozen >= pages - 1, f"{frozen} of {pages} pages frozen"
