"""The embedded twin store: one SQLite file (WAL), for a twin on one machine.

Rows are keyed on (gateway, seq) in a WITHOUT ROWID table, so a gateway's rows land next to each
other (its sequence numbers only grow) and a redelivered row is one index probe. A row holds
small integers (gateway, stream, quality profile) instead of repeating names and provenance JSON;
the ``observations`` view joins them back for people and scripts::

    sqlite3 twin.db "SELECT gateway, seq, sensor, quantity, result, unit FROM observations LIMIT 5"

Many messages share one transaction (the receiver groups what arrived together). SQLite has
no NaN, and a sum over an infinite row is useless: a non-finite result ("the sensor gave no usable
number") is stored as NULL with its kind (``NaN``, ``Infinity``, ``-Infinity``) in ``nonfinite``.
Schema of an older release (observations keyed by a random UUID, one JSON per row) is migrated
on open.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

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
    finite_or_none,
    nonfinite_note,
    result_from_store,
    status_fields,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway(
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, first_seen_ms INTEGER NOT NULL,
    last_data_ms INTEGER, observations INTEGER NOT NULL DEFAULT 0,
    lon REAL, lat REAL, alt REAL);
CREATE TABLE IF NOT EXISTS stream(
    id INTEGER PRIMARY KEY, gateway_id INTEGER NOT NULL REFERENCES gateway(id),
    sensor TEXT NOT NULL, quantity TEXT NOT NULL, unit TEXT NOT NULL, provenance TEXT NOT NULL,
    UNIQUE(gateway_id, sensor, quantity, provenance));
CREATE TABLE IF NOT EXISTS quality_profile(id INTEGER PRIMARY KEY, tests TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS observation(
    gateway_id INTEGER NOT NULL, seq INTEGER NOT NULL, stream_id INTEGER NOT NULL,
    phenomenon_ms INTEGER NOT NULL, duration_ms INTEGER, result_offset_ms INTEGER,
    result REAL, raw_result REAL, quality_flag INTEGER, quality_profile_id INTEGER,
    anomaly_milli INTEGER, other_scores TEXT, nonfinite TEXT,
    PRIMARY KEY(gateway_id, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS observation_time ON observation(phenomenon_ms);
CREATE TABLE IF NOT EXISTS gap(
    gateway_id INTEGER NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL, reason TEXT NOT NULL, received_ms INTEGER NOT NULL,
    PRIMARY KEY(gateway_id, first_seq, last_seq));
CREATE TABLE IF NOT EXISTS dead_letter(
    received_ms INTEGER NOT NULL, topic TEXT NOT NULL, gateway TEXT, first_seq INTEGER,
    last_seq INTEGER, reason TEXT NOT NULL, payload BLOB);
CREATE TABLE IF NOT EXISTS dictionary(
    gateway_id INTEGER NOT NULL, ref BLOB NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY(gateway_id, ref));
CREATE TABLE IF NOT EXISTS gateway_status(
    gateway_id INTEGER PRIMARY KEY, received_ms INTEGER NOT NULL, state TEXT NOT NULL,
    version TEXT NOT NULL, backlog INTEGER, oldest_unsent_ms INTEGER, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS gateway_event(
    gateway_id INTEGER NOT NULL, received_ms INTEGER NOT NULL, kind TEXT NOT NULL, body TEXT);
CREATE INDEX IF NOT EXISTS gateway_event_gw ON gateway_event(gateway_id, received_ms);
CREATE TABLE IF NOT EXISTS forward_queue(
    id INTEGER PRIMARY KEY, gateway_id INTEGER NOT NULL, body BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS forward_queue_gw ON forward_queue(gateway_id, id);
CREATE TABLE IF NOT EXISTS forward_state(
    gateway_id INTEGER PRIMARY KEY, parked_until_ms INTEGER NOT NULL, error TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS forward_dead_letter(
    gateway_id INTEGER NOT NULL, seq INTEGER NOT NULL, reason TEXT NOT NULL,
    received_ms INTEGER NOT NULL, PRIMARY KEY(gateway_id, seq));
CREATE VIEW IF NOT EXISTS observations AS
SELECT g.name AS gateway, o.seq, s.sensor, s.quantity, s.unit, o.phenomenon_ms,
       o.phenomenon_ms + o.duration_ms AS phenomenon_end_ms,
       coalesce(o.phenomenon_ms + coalesce(o.duration_ms, 0) + o.result_offset_ms,
                o.phenomenon_ms + coalesce(o.duration_ms, 0)) AS result_ms,
       o.result, o.raw_result, o.quality_flag, q.tests AS quality_tests,
       o.anomaly_milli / 1000.0 AS anomaly_score, o.other_scores, s.provenance, o.nonfinite
FROM observation o JOIN gateway g ON g.id = o.gateway_id JOIN stream s ON s.id = o.stream_id
LEFT JOIN quality_profile q ON q.id = o.quality_profile_id;
"""

_INSERT = "INSERT OR IGNORE INTO observation VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)"


class SqliteStore:
    """:class:`edge.ingest.store.TwinStore` on one SQLite file."""

    def __init__(self, path: Path, busy_timeout_s: float = 10.0) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._db: sqlite3.Connection | None = None
        self._gateways: dict[str, int] = {}
        self._streams: dict[tuple[int, StreamDef], int] = {}
        self._profiles: dict[QualityProfile, int] = {}

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def open(self) -> None:
        if self._db is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                             timeout=self.busy_timeout_s)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        _migrate_v1(db)
        _create_schema(db)
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextlib.contextmanager
    def _unavailable(self) -> Iterator[None]:
        """A locked or failing database is StoreUnavailable (the receiver retries later)."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite {self.path}: {exc}") from exc

    # -- ids of normalised things -----------------------------------------------------

    def _gateway_id(self, name: str, now_ms: int) -> int:
        gid = self._gateways.get(name)
        if gid is None:
            db = self.db
            db.execute("INSERT OR IGNORE INTO gateway(name, first_seen_ms) VALUES(?,?)",
                       (name, now_ms))
            gid = int(db.execute("SELECT id FROM gateway WHERE name=?", (name,)).fetchone()[0])
            self._gateways[name] = gid
        return gid

    def _stream_id(self, gid: int, sdef: StreamDef) -> int:
        key = (gid, sdef)
        sid = self._streams.get(key)
        if sid is None:
            prov = sdef.provenance_json()
            args = (gid, sdef.sensor, sdef.quantity, sdef.unit, prov)
            self.db.execute("INSERT OR IGNORE INTO stream(gateway_id, sensor, quantity, unit, "
                            "provenance) VALUES(?,?,?,?,?)", args)
            sid = int(self.db.execute(
                "SELECT id FROM stream WHERE gateway_id=? AND sensor=? AND quantity=? "
                "AND provenance=?", (gid, sdef.sensor, sdef.quantity, prov)).fetchone()[0])
            self._streams[key] = sid
        return sid

    def _profile_id(self, profile: QualityProfile | None) -> int | None:
        if profile is None:
            return None
        pid = self._profiles.get(profile)
        if pid is None:
            text = profile.as_json()
            self.db.execute("INSERT OR IGNORE INTO quality_profile(tests) VALUES(?)", (text,))
            pid = int(self.db.execute("SELECT id FROM quality_profile WHERE tests=?",
                                      (text,)).fetchone()[0])
            self._profiles[profile] = pid
        return pid

    # -- observations -------------------------------------------------------------------

    async def store_batches(
        self, batches: Sequence[IngestBatch], received_ms: int, forward: bool = False,
        dictionaries: Sequence[DictionaryRow] = (),
    ) -> list[StoreOutcome]:
        db = self.db
        outcomes: list[StoreOutcome] = []
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # locked, disk I/O error, read-only
            raise StoreUnavailable(f"SQLite {self.path}: {exc}") from exc
        try:
            for batch in batches:
                outcomes.append(self._store_one(batch, received_ms, forward))
            if dictionaries:
                db.executemany("INSERT OR IGNORE INTO dictionary VALUES(?,?,?)", [
                    (self._gateway_id(d.gateway, received_ms), d.ref, d.body)
                    for d in dictionaries])
            db.execute("COMMIT")
        except BaseException as exc:
            db.execute("ROLLBACK")
            # ids cached during the failed transaction may not exist: look them up again
            self._gateways.clear()
            self._streams.clear()
            self._profiles.clear()
            if isinstance(exc, sqlite3.OperationalError):  # locked, disk full: not the data
                raise StoreUnavailable(f"SQLite {self.path}: {exc}") from exc
            raise
        return outcomes

    def _store_one(self, batch: IngestBatch, now_ms: int, forward: bool) -> StoreOutcome:
        db = self.db
        gid = self._gateway_id(batch.gateway, now_ms)
        sids = [self._stream_id(gid, s) for s in batch.streams]
        profile_id = self._profile_id
        rows = [
            (gid, seq, sids[si], t, dur, off, finite_or_none(res), finite_or_none(raw), flag,
             profile_id(prof), milli, other, nonfinite_note(res))
            for seq, si, t, dur, off, res, raw, flag, prof, milli, other in zip(
                batch.seq, batch.stream_index, batch.phenomenon_ms, batch.duration_ms,
                batch.result_offset_ms, batch.result, batch.raw_result, batch.quality_flag,
                batch.quality_profile, batch.anomaly_milli, batch.other_scores, strict=True)
        ]
        before = db.total_changes
        if forward:
            new_rows = [i for i, row in enumerate(rows)
                        if db.execute(_INSERT, row).rowcount == 1]
            new = len(new_rows)
            if new_rows:
                db.execute("INSERT INTO forward_queue(gateway_id, body) VALUES(?,?)",
                           (gid, to_cbor(batch.select(new_rows))))
        else:
            db.executemany(_INSERT, rows)
            new = db.total_changes - before
        if new:
            db.execute("UPDATE gateway SET last_data_ms=?, observations=observations+? "
                       "WHERE id=?", (now_ms, new, gid))
        for first, last, count, reason in batch.gaps:
            db.execute("INSERT OR IGNORE INTO gap VALUES(?,?,?,?,?,?)",
                       (gid, first, last, count, reason, now_ms))
        return StoreOutcome(new, len(rows) - new)

    # -- dead letters, dictionaries, status, events ---------------------------------------

    async def reject(self, rejection: Rejection, received_ms: int) -> None:
        with self._unavailable():
            self._reject(rejection, received_ms)

    def _reject(self, rejection: Rejection, received_ms: int) -> None:
        r = rejection
        self.db.execute("INSERT INTO dead_letter VALUES(?,?,?,?,?,?,?)", (
            received_ms, r.topic, r.gateway, r.first_seq, r.last_seq, r.reason[:1000],
            r.payload[:DEAD_LETTER_PAYLOAD_MAX]))

    async def get_dictionary(self, gateway: str, ref: bytes) -> bytes | None:
        row = self.db.execute(
            "SELECT d.body FROM dictionary d JOIN gateway g ON g.id=d.gateway_id "
            "WHERE g.name=? AND d.ref=?", (gateway, ref)).fetchone()
        return None if row is None else bytes(row[0])

    async def put_dictionary(self, gateway: str, ref: bytes, table: bytes) -> None:
        with self._unavailable():
            gid = self._gateway_id(gateway, 0)
            self.db.execute("INSERT OR IGNORE INTO dictionary VALUES(?,?,?)", (gid, ref, table))

    async def put_status(self, gateway: str, status: Mapping[str, JsonValue],
                         received_ms: int) -> None:
        with self._unavailable():
            self._put_status(gateway, status, received_ms)

    def _put_status(self, gateway: str, status: Mapping[str, JsonValue],
                    received_ms: int) -> None:
        f = status_fields(status)
        gid = self._gateway_id(gateway, received_ms)
        self.db.execute(
            "INSERT INTO gateway_status VALUES(?,?,?,?,?,?,?) ON CONFLICT(gateway_id) DO UPDATE "
            "SET received_ms=excluded.received_ms, state=excluded.state, "
            "version=CASE WHEN excluded.version='' THEN version ELSE excluded.version END, "
            "backlog=excluded.backlog, oldest_unsent_ms=excluded.oldest_unsent_ms, "
            "body=excluded.body",
            (gid, received_ms, f.state, f.version, f.backlog, f.oldest_unsent_ms,
             compact_json(dict(status))))

    async def add_event(self, gateway: str, kind: str, payload: JsonValue,
                        received_ms: int) -> None:
        with self._unavailable():
            gid = self._gateway_id(gateway, received_ms)
            self.db.execute("INSERT INTO gateway_event VALUES(?,?,?,?)",
                            (gid, received_ms, kind, compact_json(payload)))

    # -- fleet ----------------------------------------------------------------------------

    async def fleet(self, now_ms: int) -> list[GatewayView]:
        since = now_ms - DAY_MS
        rows = self.db.execute("""
            SELECT g.name, coalesce(s.state, 'unknown'), coalesce(s.version, ''), g.last_data_ms,
                   s.received_ms, g.observations, s.backlog, s.oldest_unsent_ms,
                   (SELECT count(*) FROM gateway_event e
                     WHERE e.gateway_id = g.id AND e.received_ms >= ?),
                   coalesce((SELECT kind FROM gateway_event e WHERE e.gateway_id = g.id
                     ORDER BY received_ms DESC LIMIT 1), ''),
                   f.parked_until_ms, coalesce(f.error, '')
            FROM gateway g LEFT JOIN gateway_status s ON s.gateway_id = g.id
            LEFT JOIN forward_state f ON f.gateway_id = g.id
            ORDER BY g.name""", (since,)).fetchall()
        return [GatewayView(*row) for row in rows]

    async def totals(self) -> StoreTotals:
        db = self.db

        def one(sql: str) -> int:
            return int(db.execute(sql).fetchone()[0] or 0)

        return StoreTotals(
            observations=one("SELECT sum(observations) FROM gateway"),
            gateways=one("SELECT count(*) FROM gateway"),
            dead_letters=one("SELECT count(*) FROM dead_letter"),
            forward_queued=one("SELECT count(*) FROM forward_queue"),
            forward_dead_letters=one("SELECT count(*) FROM forward_dead_letter"),
            gaps=[(int(a), int(b), int(c), str(d)) for a, b, c, d in db.execute(
                "SELECT first_seq, last_seq, count, reason FROM gap ORDER BY gateway_id, "
                "first_seq")],
        )

    async def read_observations(self, gateway: str | None, since_ms: int | None,
                                until_ms: int | None, limit: int) -> list[StoredObservation]:
        rows = self.db.execute("""
            SELECT g.name, o.seq, s.sensor, s.quantity, s.unit, s.provenance, o.phenomenon_ms,
                   o.duration_ms, o.result_offset_ms, o.result, o.raw_result, o.quality_flag,
                   o.nonfinite
            FROM observation o JOIN gateway g ON g.id = o.gateway_id
            JOIN stream s ON s.id = o.stream_id
            WHERE (?1 IS NULL OR g.name = ?1) AND (?2 IS NULL OR o.phenomenon_ms >= ?2)
              AND (?3 IS NULL OR o.phenomenon_ms < ?3)
            ORDER BY o.phenomenon_ms, g.name, o.seq LIMIT ?4""",
            (gateway, since_ms, until_ms, limit)).fetchall()
        return [StoredObservation(gw, seq, sensor, qty, unit, json.loads(prov), t, dur, off,
                                  result_from_store(res, note), raw, flag)
                for gw, seq, sensor, qty, unit, prov, t, dur, off, res, raw, flag, note in rows]

    async def set_location(self, gateway: str, lon: float, lat: float,
                           alt: float | None = None) -> None:
        gid = self._gateway_id(gateway, 0)
        self.db.execute("UPDATE gateway SET lon=?, lat=?, alt=? WHERE id=?", (lon, lat, alt, gid))

    async def locations(self) -> dict[str, tuple[float, float, float | None]]:
        return {str(n): (float(x), float(y), None if z is None else float(z))
                for n, x, y, z in self.db.execute(
                    "SELECT name, lon, lat, alt FROM gateway WHERE lon IS NOT NULL")}

    # -- forward queue --------------------------------------------------------------------

    async def forward_claim(self, now_ms: int, limit: int) -> list[ForwardItem]:
        rows = self.db.execute("""
            SELECT q.id, g.name, q.body, q.attempts FROM forward_queue q
            JOIN gateway g ON g.id = q.gateway_id
            LEFT JOIN forward_state f ON f.gateway_id = q.gateway_id
            WHERE q.id = (SELECT min(id) FROM forward_queue q2 WHERE q2.gateway_id = q.gateway_id)
              AND (f.parked_until_ms IS NULL OR f.parked_until_ms <= ?)
            ORDER BY q.id LIMIT ?""", (now_ms, limit)).fetchall()
        return [ForwardItem(int(i), str(gw), from_cbor(bytes(body)), int(att))
                for i, gw, body, att in rows]

    async def forward_settle(
        self, item: ForwardItem, rejected: Mapping[int, str], now_ms: int,
        remaining: IngestBatch | None = None,
    ) -> None:
        db = self.db
        gid = self._gateway_id(item.gateway, now_ms)
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR IGNORE INTO forward_dead_letter VALUES(?,?,?,?)",
                           [(gid, seq, reason[:1000], now_ms) for seq, reason in rejected.items()])
            if remaining is not None and len(remaining):
                db.execute("UPDATE forward_queue SET body=? WHERE id=?",
                           (to_cbor(remaining), item.item_id))
            else:
                db.execute("DELETE FROM forward_queue WHERE id=?", (item.item_id,))
                db.execute("DELETE FROM forward_state WHERE gateway_id=?", (gid,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def forward_park(self, gateway: str, until_ms: int, error: str) -> None:
        gid = self._gateway_id(gateway, 0)
        self.db.execute(
            "INSERT INTO forward_state VALUES(?,?,?) ON CONFLICT(gateway_id) DO UPDATE SET "
            "parked_until_ms=excluded.parked_until_ms, error=excluded.error",
            (gid, until_ms, error[:1000]))
        self.db.execute("UPDATE forward_queue SET attempts=attempts+1 WHERE id=(SELECT min(id) "
                        "FROM forward_queue WHERE gateway_id=?)", (gid,))


def _create_schema(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip().startswith("CREATE VIEW"):
            _add_nonfinite_column(db)
        if statement.strip():
            db.execute(statement)


def _add_nonfinite_column(db: sqlite3.Connection) -> None:
    """Stores of an earlier release kept ±Infinity in ``result`` and had no ``nonfinite``
    column: add it (NULL for their rows) and rebuild the view over it."""
    columns = [r[1] for r in db.execute("PRAGMA table_info(observation)")]
    if "nonfinite" in columns:
        return
    db.execute("ALTER TABLE observation ADD COLUMN nonfinite TEXT")
    db.execute("DROP VIEW IF EXISTS observations")


def _migrate_v1(db: sqlite3.Connection) -> None:
    """Move rows of the first schema (``observation.id`` a UUID, JSON per row) into this one."""
    columns = [r[1] for r in db.execute("PRAGMA table_info(observation)")]
    if "id" not in columns:
        return
    db.execute("BEGIN IMMEDIATE")
    db.execute("ALTER TABLE observation RENAME TO observation_v1")
    db.execute("DROP INDEX IF EXISTS observation_gw_seq")
    gap_columns = [r[1] for r in db.execute("PRAGMA table_info(gap)")]
    if "gateway" in gap_columns:
        db.execute("ALTER TABLE gap RENAME TO gap_v1")
    if db.execute("SELECT 1 FROM sqlite_master WHERE name='rejected_message'").fetchone():
        db.execute("ALTER TABLE rejected_message RENAME TO rejected_message_v1")
    for table, marker in (("dead_letter", "ranges"), ("dictionary", "gateway")):
        if marker in [r[1] for r in db.execute(f"PRAGMA table_info({table})")]:
            db.execute(f"ALTER TABLE {table} RENAME TO {table}_v1")
    _create_schema(db)
    gateways: dict[str, int] = {}
    streams: dict[tuple[int, str, str, str], int] = {}
    profiles: dict[str, int] = {}
    has_note = "nonfinite" in columns
    cur = db.execute("SELECT gateway, seq, sensor, quantity, unit, phenomenon_ms, "
                     "phenomenon_end_ms, result_ms, result, raw_result, quality, provenance, "
                     f"received_ms, {'nonfinite' if has_note else 'NULL'} FROM observation_v1")
    for (gw, seq, sensor, qty, unit, t, end, res_ms, res, raw, quality, prov,
         received, note) in cur.fetchall():
        gid = gateways.get(gw)
        if gid is None:
            db.execute("INSERT OR IGNORE INTO gateway(name, first_seen_ms) VALUES(?,?)",
                       (gw, received))
            gid = gateways[gw] = int(db.execute("SELECT id FROM gateway WHERE name=?",
                                                (gw,)).fetchone()[0])
        canon = json.dumps(json.loads(prov), sort_keys=True, separators=(",", ":"))
        skey = (gid, sensor, qty, canon)
        sid = streams.get(skey)
        if sid is None:
            db.execute("INSERT OR IGNORE INTO stream(gateway_id, sensor, quantity, unit, "
                       "provenance) VALUES(?,?,?,?,?)", (gid, sensor, qty, unit, canon))
            sid = streams[skey] = int(db.execute(
                "SELECT id FROM stream WHERE gateway_id=? AND sensor=? AND quantity=? AND "
                "provenance=?", skey).fetchone()[0])
        flag = profile_id = milli = None
        other = None
        if quality:
            q = json.loads(quality)
            flag = q.get("agg")
            tests = q.get("tests")
            if tests:
                text = json.dumps(tests, sort_keys=True, separators=(",", ":"))
                if text not in profiles:
                    db.execute("INSERT OR IGNORE INTO quality_profile(tests) VALUES(?)", (text,))
                    profiles[text] = int(db.execute("SELECT id FROM quality_profile WHERE "
                                                    "tests=?", (text,)).fetchone()[0])
                profile_id = profiles[text]
            scores = dict(q.get("scores") or {})
            anomaly = scores.pop("anomaly", None)
            if isinstance(anomaly, int | float) and 0 <= anomaly <= 1:
                milli = round(anomaly * 1000)
            other = json.dumps(scores, sort_keys=True) if scores else None
        base_end = end if end is not None else t
        db.execute(_INSERT, (gid, seq, sid, t, None if end is None else end - t,
                             None if res_ms == base_end else res_ms - base_end, res, raw,
                             flag, profile_id, milli, other, note))
        db.execute("UPDATE gateway SET observations=observations+1, last_data_ms="
                   "max(coalesce(last_data_ms, 0), ?) WHERE id=?", (received, gid))
    _carry_over_v1(db, gateways)
    db.execute("COMMIT")


def _carry_over_v1(db: sqlite3.Connection, gateways: dict[str, int]) -> None:
    """Gap announcements, session dictionaries and dead letters of an earlier release's store
    (keyed by gateway name) into this schema; the old tables stay, renamed ``…_v1``."""

    def gateway_id(name: str, received_ms: int) -> int:
        if name not in gateways:
            db.execute("INSERT OR IGNORE INTO gateway(name, first_seen_ms) VALUES(?,?)",
                       (name, received_ms))
            gateways[name] = int(db.execute("SELECT id FROM gateway WHERE name=?",
                                            (name,)).fetchone()[0])
        return gateways[name]

    def exists(table: str) -> bool:
        return db.execute("SELECT 1 FROM sqlite_master WHERE name=?", (table,)).fetchone() is not None

    if exists("gap_v1"):
        for gw, first, last, count, reason, received in db.execute(
                "SELECT gateway, first_seq, last_seq, count, reason, received_ms FROM gap_v1"
                ).fetchall():
            db.execute("INSERT OR IGNORE INTO gap VALUES(?,?,?,?,?,?)",
                       (gateway_id(gw, received or 0), first, last, count, reason, received or 0))
    if exists("dictionary_v1"):
        for gw, ref, body, received in db.execute(
                "SELECT gateway, ref, body, received_ms FROM dictionary_v1").fetchall():
            db.execute("INSERT OR IGNORE INTO dictionary VALUES(?,?,?)",
                       (gateway_id(gw, received), ref, body))
    if exists("dead_letter_v1"):
        for received, topic, gw, ranges, reason, payload in db.execute(
                "SELECT received_ms, topic, gateway, ranges, reason, payload FROM dead_letter_v1"
                ).fetchall():
            try:
                bounds = [int(x) for pair in json.loads(ranges or "[]") for x in pair]
            except (ValueError, TypeError):
                bounds = []
            db.execute("INSERT INTO dead_letter VALUES(?,?,?,?,?,?,?)",
                       (received, topic, gw, min(bounds, default=None),
                        max(bounds, default=None), reason, payload))


def latest_rows(path: Path, limit: int = 20) -> list[sqlite3.Row]:
    """The newest observations (by gateway sequence) from an SQLite twin store, for displays:
    columns of the ``observations`` view plus ``quality`` (the per-test flags as JSON)."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        return list(db.execute(
            "SELECT *, quality_tests AS quality FROM observations ORDER BY seq DESC LIMIT ?",
            (limit,)))
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        db.close()


def count_rows(path: Path) -> int:
    """How many observations an SQLite twin store holds."""
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT coalesce(sum(observations), 0) FROM gateway").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()
