"""The production twin store: PostgreSQL (with PostGIS), shared by any number of receivers.

Append-friendly by design (the numbers are in docs/benchmarks.md):

- ``observation`` is partitioned by day on ``phenomenon_time`` (native range partitioning,
  partitions created on demand) with a BRIN index on time only: inserts append to the end of
  the day's heap and touch no B-tree.
- A row is (gateway, stream, seq, time, result, …) in small fixed-width columns: the stream
  (sensor, quantity, unit, provenance) and the per-test quality flags are stored once in
  ``stream`` and ``quality_profile`` and referenced by integer.
- Rows are written with binary ``COPY``; all messages the receiver hands over in one call share
  one transaction.
- **Idempotent by (gateway, seq)** without a unique index: ``seq_ledger`` holds, per gateway,
  the sequence numbers stored as an ``int8multirange`` (one range while nothing is missing).
  A transaction reads the ledgers of its gateways, copies only rows outside them, then locks
  those ledger rows (in gateway order: no deadlock) and checks that no other receiver stored
  any of the same numbers meanwhile (if one did — a redelivery race — the transaction is
  retried with the locks taken first), and writes the new ranges. Ledger and rows commit
  together.

A unique index on (gateway, seq) would have to include the partition key and would cost more
disk writes per observation than the row itself; the ledger costs one small row update per
gateway per transaction.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import LiteralString

import psycopg
from psycopg.types.multirange import Multirange

from edge.ingest.rows import IngestBatch, QualityProfile, StreamDef, from_cbor, to_cbor
from edge.ingest.store import (
    DictionaryRow,
    ForwardItem,
    GatewayView,
    JsonValue,
    Rejection,
    StoredObservation,
    StoreOutcome,
    StoreTotals,
    StoreUnavailable,
)
from edge.ingest.store_common import (
    DAY_MS,
    DEAD_LETTER_PAYLOAD_MAX,
    compact_json,
    day_of,
    finite_or_none,
    nonfinite_note,
    result_from_store,
    status_fields,
)

log = logging.getLogger("duet.ingest.pg")

FORWARD_LEASE_MS = 300_000  # a claimed gateway is another worker's again after 5 min

# Day partitions are insert-only. PostgreSQL's defaults would visit each page three times:
# written when filled, written again when a vacuum marks it all-visible, and rewritten (with a
# full-page image in the WAL) when an anti-wraparound vacuum freezes it months later. Freezing
# on every insert-triggered vacuum, every 50,000 new rows, catches most pages while they are
# still dirty in shared buffers, so they reach the disk once, already frozen, and closed days
# are never written again (docs/twin.md, "Write volume").
PARTITION_OPTIONS = ("autovacuum_freeze_min_age = 0, autovacuum_vacuum_insert_threshold = 50000, "
                     "autovacuum_vacuum_insert_scale_factor = 0")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway(
    id serial PRIMARY KEY, name text NOT NULL UNIQUE,
    first_seen timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS seq_ledger(
    gateway_id int PRIMARY KEY REFERENCES gateway(id),
    seqs int8multirange NOT NULL DEFAULT '{}', observations bigint NOT NULL DEFAULT 0,
    last_data timestamptz) WITH (fillfactor = 50);
CREATE TABLE IF NOT EXISTS stream(
    id serial PRIMARY KEY, gateway_id int NOT NULL REFERENCES gateway(id),
    sensor text NOT NULL, quantity text NOT NULL, unit text NOT NULL,
    provenance jsonb NOT NULL, provenance_key text NOT NULL,
    UNIQUE (gateway_id, sensor, quantity, provenance_key));
CREATE TABLE IF NOT EXISTS quality_profile(
    id serial PRIMARY KEY, tests jsonb NOT NULL, tests_key text NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS observation(
    gateway_id int4 NOT NULL, stream_id int4 NOT NULL, seq int8 NOT NULL,
    phenomenon_time timestamptz NOT NULL, result float8,
    duration_ms int8, result_offset_ms int8, raw_result float8, quality_flag int2,
    quality_profile_id int4, anomaly_milli int2, other_scores text, nonfinite text
) PARTITION BY RANGE (phenomenon_time);
--MIGRATE-NONFINITE;
CREATE INDEX IF NOT EXISTS observation_time_brin ON observation USING brin (phenomenon_time);
CREATE TABLE IF NOT EXISTS gap(
    gateway_id int NOT NULL REFERENCES gateway(id), first_seq int8 NOT NULL,
    last_seq int8 NOT NULL, count int8 NOT NULL, reason text NOT NULL,
    received timestamptz NOT NULL, PRIMARY KEY (gateway_id, first_seq, last_seq));
CREATE TABLE IF NOT EXISTS dead_letter(
    received timestamptz NOT NULL, topic text NOT NULL, gateway text, first_seq int8,
    last_seq int8, reason text NOT NULL, payload bytea);
CREATE TABLE IF NOT EXISTS dictionary(
    gateway_id int NOT NULL REFERENCES gateway(id), ref bytea NOT NULL, body bytea NOT NULL,
    PRIMARY KEY (gateway_id, ref));
CREATE TABLE IF NOT EXISTS gateway_status(
    gateway_id int PRIMARY KEY REFERENCES gateway(id), received timestamptz NOT NULL,
    state text NOT NULL, version text NOT NULL, backlog int8, oldest_unsent timestamptz,
    body jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS gateway_event(
    gateway_id int NOT NULL REFERENCES gateway(id), received timestamptz NOT NULL,
    kind text NOT NULL, body jsonb);
CREATE INDEX IF NOT EXISTS gateway_event_gw ON gateway_event(gateway_id, received);
CREATE TABLE IF NOT EXISTS forward_queue(
    id bigserial PRIMARY KEY, gateway_id int NOT NULL REFERENCES gateway(id),
    body bytea NOT NULL, attempts int NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS forward_queue_gw ON forward_queue(gateway_id, id);
CREATE TABLE IF NOT EXISTS forward_state(
    gateway_id int PRIMARY KEY REFERENCES gateway(id), parked_until timestamptz NOT NULL,
    error text NOT NULL, lease_until timestamptz);
CREATE TABLE IF NOT EXISTS forward_dead_letter(
    gateway_id int NOT NULL REFERENCES gateway(id), seq int8 NOT NULL, reason text NOT NULL,
    received timestamptz NOT NULL, PRIMARY KEY (gateway_id, seq));
CREATE OR REPLACE VIEW observations AS
SELECT g.name AS gateway, o.seq, s.sensor, s.quantity, s.unit, o.phenomenon_time,
       o.phenomenon_time + o.duration_ms * interval '1 millisecond' AS phenomenon_end,
       o.phenomenon_time + (coalesce(o.duration_ms, 0) + coalesce(o.result_offset_ms, 0))
           * interval '1 millisecond' AS result_time,
       o.result, o.raw_result, o.quality_flag, q.tests AS quality_tests,
       o.anomaly_milli / 1000.0 AS anomaly_score, o.other_scores, s.provenance, o.nonfinite
FROM observation o JOIN gateway g ON g.id = o.gateway_id JOIN stream s ON s.id = o.stream_id
LEFT JOIN quality_profile q ON q.id = o.quality_profile_id;
"""

_POSTGIS = """
CREATE EXTENSION IF NOT EXISTS postgis;
ALTER TABLE gateway ADD COLUMN IF NOT EXISTS location geometry(PointZ, 4326);
"""

_COPY = ("COPY observation (gateway_id, stream_id, seq, phenomenon_time, result, duration_ms, "
         "result_offset_ms, raw_result, quality_flag, quality_profile_id, anomaly_milli, "
         "other_scores, nonfinite) FROM STDIN (FORMAT binary)")
_COPY_TYPES = ["int4", "int4", "int8", "timestamptz", "float8", "int8", "int8", "float8", "int2",
               "int4", "int2", "text", "text"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Ranges = list[tuple[int, int]]  # sorted, disjoint, inclusive


class LedgerRace(Exception):
    """Another receiver stored some of the same (gateway, seq) meanwhile: retry locked."""


def ms_to_datetime(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _ms(value: datetime | None) -> int | None:
    return None if value is None else int((value - _EPOCH) / timedelta(milliseconds=1))


def _ranges(multirange: object) -> Ranges:
    if not isinstance(multirange, Multirange):
        return []
    out: Ranges = []
    for r in multirange:
        lower, upper = _int(r.lower), _int(r.upper)
        out.append((lower if r.lower_inc else lower + 1, upper if r.upper_inc else upper - 1))
    return out


def _int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError(f"expected an integer from PostgreSQL, got {value!r}")


def _opt_int(value: object) -> int | None:
    return None if value is None else _int(value)


def _float(value: object) -> float:
    if isinstance(value, float | int) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"expected a number from PostgreSQL, got {value!r}")


def _opt_float(value: object) -> float | None:
    return None if value is None else _float(value)


def _opt_str(value: object) -> str | None:
    return None if value is None else _str(value)


def _str(value: object) -> str:
    if isinstance(value, str):
        return value
    raise TypeError(f"expected text from PostgreSQL, got {value!r}")


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"expected bytea from PostgreSQL, got {value!r}")


def _dt_ms(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return _ms(value)
    raise TypeError(f"expected a timestamp from PostgreSQL, got {value!r}")


def _multirange_text(ranges: Ranges) -> str:
    """``{[1,11),[15,16)}``: PostgreSQL's text form of an int8multirange."""
    return "{" + ",".join(f"[{lo},{hi + 1})" for lo, hi in ranges) + "}"


def _contains(ranges: Ranges, seq: int) -> bool:
    i = bisect.bisect_right(ranges, (seq, 2**63)) - 1
    return i >= 0 and ranges[i][0] <= seq <= ranges[i][1]


def _merge(ranges: Ranges, seqs: Sequence[int]) -> Ranges:
    """The union of ``ranges`` and the numbers in ``seqs``."""
    pieces = sorted([*ranges, *((s, s) for s in seqs)])
    out: Ranges = []
    for lo, hi in pieces:
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _overlaps(ranges: Ranges, seqs: Sequence[int]) -> bool:
    return any(_contains(ranges, s) for s in seqs)


class PgStore:
    """:class:`edge.ingest.store.TwinStore` on PostgreSQL (psycopg 3, async)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._gateways: dict[str, int] = {}
        self._streams: dict[tuple[int, StreamDef], int] = {}
        self._profiles: dict[QualityProfile, int] = {}
        self._days: set[int] = set()
        self.has_postgis = False

    @property
    def conn(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self._conn is None:
            raise RuntimeError("store is not open")
        return self._conn

    async def open(self) -> None:
        if self._conn is not None:
            return
        self._conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        async with self.conn.transaction():
            await self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('duet-edge schema'))")
            for statement in _SCHEMA.split(";"):
                if statement.strip() == "--MIGRATE-NONFINITE":
                    await self._add_nonfinite_column()
                elif statement.strip():
                    await self.conn.execute(statement)
        try:
            async with self.conn.transaction():
                await self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('duet-edge "
                                        "schema'))")
                for statement in _POSTGIS.split(";"):
                    if statement.strip():
                        await self.conn.execute(statement)
            self.has_postgis = True
        except psycopg.Error as exc:
            log.warning("PostGIS not available (%s): gateway locations are not stored",
                        str(exc).splitlines()[0])

    async def _add_nonfinite_column(self) -> None:
        """Stores of an earlier release kept NaN and ±Infinity in a NOT NULL ``result`` and had
        no ``nonfinite`` column (checked first: ALTER TABLE locks the table even when it would
        change nothing)."""
        cur = await self.conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = 'observation' AND column_name = 'nonfinite'")
        if await cur.fetchone() is None:
            await self.conn.execute("ALTER TABLE observation ALTER COLUMN result DROP NOT NULL")
            await self.conn.execute("ALTER TABLE observation ADD COLUMN nonfinite text")

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _alive(self) -> None:
        """Reconnect after PostgreSQL restarted (the failed call raised; the receiver retries)."""
        c = self._conn
        if c is not None and (c.closed or c.broken):
            with contextlib.suppress(psycopg.Error):
                await c.close()
            self._conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            log.info("reconnected to PostgreSQL", extra={"event": "store_reconnected"})

    # -- ids of normalised things (autocommit, cached) -----------------------------------

    async def _insert_or_select(self, insert: LiteralString, select: LiteralString,
                                insert_args: tuple[object, ...],
                                select_args: tuple[object, ...]) -> int:
        """The id of a row inserted now or by anyone before (a concurrent insert included:
        the SELECT is a separate statement, so it sees what the other transaction committed)."""
        cur = await self.conn.execute(insert, insert_args)
        row = await cur.fetchone()
        if row is None:
            cur = await self.conn.execute(select, select_args)
            row = await cur.fetchone()
        if row is None:
            raise RuntimeError(f"row vanished after insert: {select} {select_args}")
        return _int(row[0])

    async def _gateway_id(self, name: str) -> int:
        gid = self._gateways.get(name)
        if gid is None:
            gid = await self._insert_or_select(
                "INSERT INTO gateway(name) VALUES (%s) ON CONFLICT DO NOTHING RETURNING id",
                "SELECT id FROM gateway WHERE name = %s", (name,), (name,))
            await self.conn.execute("INSERT INTO seq_ledger(gateway_id) VALUES (%s) "
                                    "ON CONFLICT DO NOTHING", (gid,))
            self._gateways[name] = gid
        return gid

    async def _stream_id(self, gid: int, sdef: StreamDef) -> int:
        key = (gid, sdef)
        sid = self._streams.get(key)
        if sid is None:
            prov = sdef.provenance_json()
            args = (gid, sdef.sensor, sdef.quantity, sdef.unit, prov, prov)
            sid = self._streams[key] = await self._insert_or_select(
                "INSERT INTO stream(gateway_id, sensor, quantity, unit, provenance, "
                "provenance_key) VALUES (%s, %s, %s, %s, %s::jsonb, %s) ON CONFLICT DO NOTHING "
                "RETURNING id",
                "SELECT id FROM stream WHERE gateway_id = %s AND sensor = %s AND quantity = %s "
                "AND provenance_key = %s", args, (gid, sdef.sensor, sdef.quantity, prov))
        return sid

    async def _profile_id(self, profile: QualityProfile) -> int:
        pid = self._profiles.get(profile)
        if pid is None:
            text = profile.as_json()
            pid = self._profiles[profile] = await self._insert_or_select(
                "INSERT INTO quality_profile(tests, tests_key) VALUES (%s::jsonb, %s) "
                "ON CONFLICT DO NOTHING RETURNING id",
                "SELECT id FROM quality_profile WHERE tests_key = %s", (text, text), (text,))
        return pid

    async def _ensure_partitions(self, days: set[int]) -> None:
        missing = days - self._days
        if not missing:
            return
        async with self.conn.transaction():
            await self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('duet-edge "
                                    "partitions'))")
            for day in sorted(missing):
                start = date(1970, 1, 1) + timedelta(days=day)
                name = f"observation_{start:%Y%m%d}"
                await self.conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF observation "
                    f"FOR VALUES FROM ('{start.isoformat()}') "
                    f"TO ('{(start + timedelta(days=1)).isoformat()}')")
                # also on a day an earlier release created (closed days see no inserts, so no
                # vacuum: only the days still written are touched)
                await self.conn.execute(f"ALTER TABLE {name} SET ({PARTITION_OPTIONS})")
        self._days |= missing

    # -- observations -------------------------------------------------------------------

    async def store_batches(
        self, batches: Sequence[IngestBatch], received_ms: int, forward: bool = False,
        dictionaries: Sequence[DictionaryRow] = (),
    ) -> list[StoreOutcome]:
        if not batches and not dictionaries:
            return []
        try:
            await self._alive()
            await self._register_gateways({d.gateway for d in dictionaries})
            prepared = await self._prepare(batches)
            try:
                return await self._transaction(batches, prepared, received_ms, forward,
                                               dictionaries, locked=False)
            except LedgerRace:
                log.info("concurrent receiver stored some of the same rows; retrying locked")
                return await self._transaction(batches, prepared, received_ms, forward,
                                               dictionaries, locked=True)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise StoreUnavailable(f"PostgreSQL: {str(exc).strip().splitlines()[0]}") from exc

    async def _register_gateways(self, gateways: set[str]) -> None:
        """Gateways never seen before, with their ledger rows: two statements for any number."""
        names = sorted(gateways - self._gateways.keys())
        if not names:
            return
        await self.conn.execute("INSERT INTO gateway(name) SELECT unnest(%s::text[]) "
                                "ON CONFLICT DO NOTHING", (names,))
        cur = await self.conn.execute("SELECT name, id FROM gateway WHERE name = ANY(%s)",
                                      (names,))
        found = {_str(n): _int(i) for n, i in await cur.fetchall()}
        await self.conn.execute("INSERT INTO seq_ledger(gateway_id) SELECT unnest(%s::int[]) "
                                "ON CONFLICT DO NOTHING", (list(found.values()),))
        self._gateways.update(found)

    async def _register_new(self, batches: Sequence[IngestBatch]) -> None:
        """Gateways and streams never seen before, registered with a few set-wise statements
        (a twin meeting 20,000 gateways at once must not pay a round trip per stream)."""
        await self._register_gateways({b.gateway for b in batches})
        known = self._streams
        wanted = {key for b in batches for s in b.streams
                  if (key := (self._gateways[b.gateway], s)) not in known}
        if len(wanted) < 2:
            return
        rows = sorted(((g, s.sensor, s.quantity, s.unit, s.provenance_json())
                       for g, s in wanted))
        columns = [list(c) for c in zip(*rows, strict=True)]
        await self.conn.execute(
            "INSERT INTO stream(gateway_id, sensor, quantity, unit, provenance, provenance_key) "
            "SELECT g, se, q, u, p::jsonb, p FROM unnest(%s::int[], %s::text[], %s::text[], "
            "%s::text[], %s::text[]) AS v(g, se, q, u, p) ON CONFLICT DO NOTHING", columns)
        cur = await self.conn.execute(
            "SELECT s.id, s.gateway_id, s.sensor, s.quantity, s.provenance_key FROM stream s "
            "JOIN unnest(%s::int[], %s::text[], %s::text[], %s::text[]) AS v(g, se, q, p) "
            "ON s.gateway_id = v.g AND s.sensor = v.se AND s.quantity = v.q "
            "AND s.provenance_key = v.p",
            [columns[0], columns[1], columns[2], columns[4]])
        by_key = {(g, s.sensor, s.quantity, s.provenance_json()): s for g, s in wanted}
        for sid, g, sensor, qty, prov in await cur.fetchall():
            sdef = by_key.get((_int(g), _str(sensor), _str(qty), _str(prov)))
            if sdef is not None:
                self._streams[(_int(g), sdef)] = _int(sid)

    async def _prepare(self, batches: Sequence[IngestBatch]) -> list[tuple[int, list[int],
                                                                            list[int | None]]]:
        """Gateway id, stream ids and quality profile ids per batch; partitions exist."""
        known = self._streams
        if any(b.gateway not in self._gateways for b in batches) or any(
                (self._gateways[b.gateway], sdef) not in known
                for b in batches for sdef in b.streams):
            await self._register_new(batches)
        out = []
        days: set[int] = set()
        streams, profiles = self._streams, self._profiles
        for batch in batches:
            gid = self._gateways.get(batch.gateway)
            if gid is None:
                gid = await self._gateway_id(batch.gateway)
            sids = []
            for sdef in batch.streams:
                sid = streams.get((gid, sdef))
                sids.append(sid if sid is not None else await self._stream_id(gid, sdef))
            pids: list[int | None] = []
            for p in batch.quality_profile:
                if p is None:
                    pids.append(None)
                else:
                    pid = profiles.get(p)
                    pids.append(pid if pid is not None else await self._profile_id(p))
            days.update({day_of(t) for t in batch.phenomenon_ms})
            out.append((gid, sids, pids))
        if days:
            await self._ensure_partitions(days)
        return out

    async def _ledgers(self, gids: list[int], lock: bool) -> dict[int, Ranges]:
        sql = "SELECT gateway_id, seqs FROM seq_ledger WHERE gateway_id = ANY(%s)"
        if lock:
            sql += " ORDER BY gateway_id FOR UPDATE"
        cur = await self.conn.execute(sql, (gids,))
        return {_int(g): _ranges(m) for g, m in await cur.fetchall()}

    async def _transaction(
        self,
        batches: Sequence[IngestBatch],
        prepared: list[tuple[int, list[int], list[int | None]]],
        received_ms: int,
        forward: bool,
        dictionaries: Sequence[DictionaryRow],
        locked: bool,
    ) -> list[StoreOutcome]:
        conn = self.conn
        gids = sorted({gid for gid, _, _ in prepared})
        async with conn.transaction():
            seen = await self._ledgers(gids, lock=locked)
            working = {g: list(r) for g, r in seen.items()}
            added: dict[int, list[int]] = {g: [] for g in gids}
            outcomes: list[StoreOutcome] = []
            fresh_rows: list[tuple[int, IngestBatch, list[int]]] = []
            for batch, (gid, _sids, _pids) in zip(batches, prepared, strict=True):
                ranges = working[gid]
                if not batch.seq:
                    keep = []  # gaps only
                elif not ranges or ranges[-1][1] < min(batch.seq):
                    keep = _unique_positions(batch.seq)
                else:
                    keep = [i for i in _unique_positions(batch.seq)
                            if not _contains(ranges, batch.seq[i])]
                new_seqs = [batch.seq[i] for i in keep]
                working[gid] = _merge(ranges, new_seqs)
                added[gid].extend(new_seqs)
                outcomes.append(StoreOutcome(len(keep), len(batch.seq) - len(keep)))
                fresh_rows.append((gid, batch, keep))
            async with conn.cursor() as cur, cur.copy(_COPY) as copy:
                copy.set_types(_COPY_TYPES)
                for (gid, batch, keep), (_g, sids, pids) in zip(fresh_rows, prepared,
                                                                 strict=True):
                    await _write_rows(copy, gid, batch, keep, sids, pids)
            touched = [g for g in gids if added[g]]
            if touched:
                if not locked:
                    current = await self._ledgers(touched, lock=True)
                    for g in touched:
                        if current[g] != seen[g]:
                            if _overlaps(current[g], added[g]):
                                raise LedgerRace()
                            working[g] = _merge(current[g], added[g])
                await conn.execute(
                    "UPDATE seq_ledger AS l SET seqs = v.seqs::int8multirange, "
                    "observations = l.observations + v.n, last_data = %s "
                    "FROM unnest(%s::int[], %s::text[], %s::int8[]) AS v(g, seqs, n) "
                    "WHERE l.gateway_id = v.g",
                    (ms_to_datetime(received_ms), touched,
                     [_multirange_text(working[g]) for g in touched],
                     [len(added[g]) for g in touched]))
            await self._write_side_tables(batches, prepared, fresh_rows, received_ms, forward)
            if dictionaries:
                await self._write_dictionaries(dictionaries)
        return outcomes

    async def _write_dictionaries(self, dictionaries: Sequence[DictionaryRow]) -> None:
        rows = {(self._gateways[d.gateway], d.ref): d.body for d in dictionaries}
        await self.conn.execute(
            "INSERT INTO dictionary SELECT * FROM unnest(%s::int[], %s::bytea[], %s::bytea[]) "
            "ON CONFLICT DO NOTHING",
            ([g for g, _ in rows], [r for _, r in rows], list(rows.values())))

    async def _write_side_tables(
        self,
        batches: Sequence[IngestBatch],
        prepared: list[tuple[int, list[int], list[int | None]]],
        fresh_rows: list[tuple[int, IngestBatch, list[int]]],
        received_ms: int,
        forward: bool,
    ) -> None:
        now = ms_to_datetime(received_ms)
        gaps = [(gid, *gap, now) for batch, (gid, _, _) in zip(batches, prepared, strict=True)
                for gap in batch.gaps]
        async with self.conn.cursor() as cur:
            if gaps:
                await cur.executemany(
                    "INSERT INTO gap VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    gaps)
            if forward:
                queued = [(gid, to_cbor(batch.select(keep)))
                          for gid, batch, keep in fresh_rows if keep]
                if queued:
                    await cur.executemany(
                        "INSERT INTO forward_queue(gateway_id, body) VALUES (%s, %s)", queued)

    # -- dead letters, dictionaries, status, events ---------------------------------------

    async def reject(self, rejection: Rejection, received_ms: int) -> None:
        try:
            await self._alive()
            r = rejection
            await self.conn.execute(
                "INSERT INTO dead_letter VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (ms_to_datetime(received_ms), r.topic, r.gateway, r.first_seq, r.last_seq,
                 r.reason[:1000], r.payload[:DEAD_LETTER_PAYLOAD_MAX]))
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise StoreUnavailable(f"PostgreSQL: {str(exc).strip().splitlines()[0]}") from exc

    async def get_dictionary(self, gateway: str, ref: bytes) -> bytes | None:
        try:
            await self._alive()
            cur = await self.conn.execute(
                "SELECT d.body FROM dictionary d JOIN gateway g ON g.id = d.gateway_id "
                "WHERE g.name = %s AND d.ref = %s", (gateway, ref))
            row = await cur.fetchone()
            return None if row is None else _bytes(row[0])
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise StoreUnavailable(f"PostgreSQL: {str(exc).strip().splitlines()[0]}") from exc

    async def put_dictionary(self, gateway: str, ref: bytes, table: bytes) -> None:
        try:
            await self._alive()
            gid = await self._gateway_id(gateway)
            await self.conn.execute("INSERT INTO dictionary VALUES (%s, %s, %s) "
                                    "ON CONFLICT DO NOTHING", (gid, ref, table))
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise StoreUnavailable(f"PostgreSQL: {str(exc).strip().splitlines()[0]}") from exc

    async def put_status(self, gateway: str, status: Mapping[str, JsonValue],
                         received_ms: int) -> None:
        try:
            await self._alive()
            f = status_fields(status)
            gid = await self._gateway_id(gateway)
            await self.conn.execute(
                "INSERT INTO gateway_status VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb) "
                "ON CONFLICT (gateway_id) DO UPDATE SET received = excluded.received, "
                "state = excluded.state, version = CASE WHEN excluded.version = '' "
                "THEN gateway_status.version ELSE excluded.version END, "
                "backlog = excluded.backlog, oldest_unsent = excluded.oldest_unsent, "
                "body = excluded.body",
                (gid, ms_to_datetime(received_ms), f.state, f.version, f.backlog,
                 None if f.oldest_unsent_ms is None else ms_to_datetime(f.oldest_unsent_ms),
                 compact_json(dict(status))))
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise StoreUnavailable(f"PostgreSQL: {str(exc).strip().splitlines()[0]}") from exc

    async def add_event(self, gateway: str, kind: str, payload: JsonValue,
                        received_ms: int) -> None:
        try:
            await self._alive()
            gid = await self._gateway_id(gateway)
            await self.conn.execute("INSERT INTO gateway_event VALUES (%s, %s, %s, %s::jsonb)",
                                    (gid, ms_to_datetime(received_ms), kind, compact_json(payload)))
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise StoreUnavailable(f"PostgreSQL: {str(exc).strip().splitlines()[0]}") from exc

    async def set_location(self, gateway: str, lon: float, lat: float,
                           alt: float | None = None) -> None:
        """Record a gateway's position (PostGIS point, WGS84)."""
        await self._alive()
        if not self.has_postgis:
            log.warning("PostGIS not installed: the location of %s is not stored", gateway)
            return
        gid = await self._gateway_id(gateway)
        await self.conn.execute(
            "UPDATE gateway SET location = ST_SetSRID(ST_MakePoint(%s, %s, %s), 4326) "
            "WHERE id = %s", (lon, lat, 0.0 if alt is None else alt, gid))

    async def locations(self) -> dict[str, tuple[float, float, float | None]]:
        await self._alive()
        if not self.has_postgis:
            return {}
        cur = await self.conn.execute(
            "SELECT name, ST_X(location), ST_Y(location), ST_Z(location) FROM gateway "
            "WHERE location IS NOT NULL")
        return {_str(n): (_float(x), _float(y), _opt_float(z))
                for n, x, y, z in await cur.fetchall()}

    # -- fleet ----------------------------------------------------------------------------

    async def fleet(self, now_ms: int) -> list[GatewayView]:
        await self._alive()
        since = ms_to_datetime(now_ms - DAY_MS)
        cur = await self.conn.execute("""
            SELECT g.name, coalesce(s.state, 'unknown'), coalesce(s.version, ''), l.last_data,
                   s.received, coalesce(l.observations, 0), s.backlog, s.oldest_unsent,
                   (SELECT count(*) FROM gateway_event e
                     WHERE e.gateway_id = g.id AND e.received >= %s),
                   coalesce((SELECT kind FROM gateway_event e WHERE e.gateway_id = g.id
                     ORDER BY received DESC LIMIT 1), ''),
                   nullif(f.parked_until, to_timestamp(0)), coalesce(f.error, '')
            FROM gateway g LEFT JOIN seq_ledger l ON l.gateway_id = g.id
            LEFT JOIN gateway_status s ON s.gateway_id = g.id
            LEFT JOIN forward_state f ON f.gateway_id = g.id
            ORDER BY g.name""", (since,))
        out = []
        for (name, state, version, last_data, last_status, n, backlog, oldest, events,
             last_event, parked, error) in await cur.fetchall():
            out.append(GatewayView(
                _str(name), _str(state), _str(version), _dt_ms(last_data), _dt_ms(last_status),
                _int(n), _opt_int(backlog), _dt_ms(oldest), _int(events), _str(last_event),
                _dt_ms(parked), _str(error)))
        return out

    async def totals(self) -> StoreTotals:
        await self._alive()
        async def one(sql: str) -> int:
            cur = await self.conn.execute(sql)
            row = await cur.fetchone()
            return _int(row[0] or 0) if row else 0

        cur = await self.conn.execute(
            "SELECT first_seq, last_seq, count, reason FROM gap ORDER BY gateway_id, first_seq")
        gaps = [(_int(a), _int(b), _int(c), _str(d)) for a, b, c, d in await cur.fetchall()]
        return StoreTotals(
            observations=await one("SELECT sum(observations)::int8 FROM seq_ledger"),
            gateways=await one("SELECT count(*) FROM gateway"),
            dead_letters=await one("SELECT count(*) FROM dead_letter"),
            forward_queued=await one("SELECT count(*) FROM forward_queue"),
            forward_dead_letters=await one("SELECT count(*) FROM forward_dead_letter"),
            gaps=gaps,
        )

    async def read_observations(self, gateway: str | None, since_ms: int | None,
                                until_ms: int | None, limit: int) -> list[StoredObservation]:
        await self._alive()
        since = None if since_ms is None else ms_to_datetime(since_ms)
        until = None if until_ms is None else ms_to_datetime(until_ms)
        cur = await self.conn.execute("""
            SELECT g.name, o.seq, s.sensor, s.quantity, s.unit, s.provenance_key,
                   o.phenomenon_time, o.duration_ms, o.result_offset_ms, o.result,
                   o.raw_result, o.quality_flag, o.nonfinite
            FROM observation o JOIN gateway g ON g.id = o.gateway_id
            JOIN stream s ON s.id = o.stream_id
            WHERE (%(gw)s::text IS NULL OR g.name = %(gw)s)
              AND (%(since)s::timestamptz IS NULL OR o.phenomenon_time >= %(since)s)
              AND (%(until)s::timestamptz IS NULL OR o.phenomenon_time < %(until)s)
            ORDER BY o.phenomenon_time, g.name, o.seq LIMIT %(limit)s""",
            {"gw": gateway, "since": since, "until": until, "limit": limit})
        out = []
        for (gw, seq, sensor, qty, unit, prov, t, dur, off, res, raw, flag,
             note) in await cur.fetchall():
            provenance = json.loads(_str(prov))
            t_ms = _dt_ms(t)
            assert t_ms is not None
            out.append(StoredObservation(
                _str(gw), _int(seq), _str(sensor), _str(qty), _str(unit), provenance, t_ms,
                _opt_int(dur), _opt_int(off), result_from_store(_opt_float(res), _opt_str(note)),
                _opt_float(raw), _opt_int(flag)))
        return out

    # -- forward queue --------------------------------------------------------------------

    async def forward_claim(self, now_ms: int, limit: int) -> list[ForwardItem]:
        """The oldest item of each free gateway, leased to this worker for ``FORWARD_LEASE_MS``
        (several workers may forward: a gateway is forwarded by one at a time, in order)."""
        await self._alive()
        now = ms_to_datetime(now_ms)
        cur = await self.conn.execute("""
            WITH heads AS (
                SELECT DISTINCT ON (gateway_id) id, gateway_id FROM forward_queue
                ORDER BY gateway_id, id),
            free AS (
                SELECT h.id, h.gateway_id FROM heads h
                LEFT JOIN forward_state f ON f.gateway_id = h.gateway_id
                WHERE (f.parked_until IS NULL OR f.parked_until <= %(now)s)
                  AND (f.lease_until IS NULL OR f.lease_until <= %(now)s)
                ORDER BY h.id LIMIT %(limit)s),
            leased AS (
                INSERT INTO forward_state(gateway_id, parked_until, error, lease_until)
                SELECT gateway_id, to_timestamp(0), '', %(lease)s FROM free
                ON CONFLICT (gateway_id) DO UPDATE SET lease_until = excluded.lease_until
                WHERE (forward_state.lease_until IS NULL OR forward_state.lease_until <= %(now)s)
                  AND forward_state.parked_until <= %(now)s
                RETURNING gateway_id)
            SELECT q.id, g.name, q.body, q.attempts FROM free
            JOIN leased ON leased.gateway_id = free.gateway_id
            JOIN forward_queue q ON q.id = free.id JOIN gateway g ON g.id = q.gateway_id
            ORDER BY q.id""",
            {"now": now, "limit": limit, "lease": ms_to_datetime(now_ms + FORWARD_LEASE_MS)})
        return [ForwardItem(_int(i), _str(gw), from_cbor(_bytes(body)), _int(att))
                for i, gw, body, att in await cur.fetchall()]

    async def forward_settle(
        self, item: ForwardItem, rejected: Mapping[int, str], now_ms: int,
        remaining: IngestBatch | None = None,
    ) -> None:
        await self._alive()
        gid = await self._gateway_id(item.gateway)
        now = ms_to_datetime(now_ms)
        async with self.conn.transaction(), self.conn.cursor() as cur:
            if rejected:
                await cur.executemany(
                    "INSERT INTO forward_dead_letter VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    [(gid, seq, reason[:1000], now) for seq, reason in rejected.items()])
            if remaining is not None and len(remaining):
                await cur.execute("UPDATE forward_queue SET body = %s WHERE id = %s",
                                  (to_cbor(remaining), item.item_id))
            else:
                await cur.execute("DELETE FROM forward_queue WHERE id = %s", (item.item_id,))
                await cur.execute("DELETE FROM forward_state WHERE gateway_id = %s", (gid,))
            if remaining is not None and len(remaining):
                await cur.execute("UPDATE forward_state SET lease_until = NULL "
                                  "WHERE gateway_id = %s", (gid,))

    async def forward_park(self, gateway: str, until_ms: int, error: str) -> None:
        await self._alive()
        gid = await self._gateway_id(gateway)
        async with self.conn.transaction():
            await self.conn.execute(
                "INSERT INTO forward_state VALUES (%s, %s, %s, NULL) ON CONFLICT (gateway_id) DO "
                "UPDATE SET parked_until = excluded.parked_until, error = excluded.error, "
                "lease_until = NULL",
                (gid, ms_to_datetime(until_ms), error[:1000]))
            await self.conn.execute(
                "UPDATE forward_queue SET attempts = attempts + 1 WHERE id = (SELECT min(id) "
                "FROM forward_queue WHERE gateway_id = %s)", (gid,))


def _unique_positions(seqs: list[int]) -> list[int]:
    """Positions of the first occurrence of each sequence number (a batch never repeats one,
    but a store must not write a row twice even then)."""
    if len(seqs) < 2 or all(a < b for a, b in itertools.pairwise(seqs)):
        return list(range(len(seqs)))
    seen: set[int] = set()
    out = []
    for i, s in enumerate(seqs):
        if s not in seen:
            seen.add(s)
            out.append(i)
    return out


async def _write_rows(
    copy: psycopg.AsyncCopy,
    gid: int,
    batch: IngestBatch,
    keep: list[int],
    sids: list[int],
    pids: list[int | None],
) -> None:
    """Hand rows to COPY (psycopg encodes them in C)."""
    write = copy.write_row
    seq, si, t, res = batch.seq, batch.stream_index, batch.phenomenon_ms, batch.result
    dur, off, raw = batch.duration_ms, batch.result_offset_ms, batch.raw_result
    flag, milli, other = batch.quality_flag, batch.anomaly_milli, batch.other_scores
    for i in keep:
        value = res[i]
        await write((gid, sids[si[i]], seq[i], _EPOCH + timedelta(milliseconds=t[i]),
                     finite_or_none(value), dur[i], off[i], finite_or_none(raw[i]), flag[i],
                     pids[i], milli[i], other[i], nonfinite_note(value)))

