"""The receiver's SQLite store (implements :class:`edge.ingest.ports.TwinStore`).

Observations are keyed by their deterministic id (duplicates are counted, never stored twice).
A non-finite result is stored as ``result`` NULL with ``nonfinite`` = ``NaN``, ``Infinity`` or
``-Infinity``. Refused messages go to ``dead_letter`` with their reason and payload; session
dictionaries to ``dictionary``.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from edge.contract import ContractError, DecodedBatch, SessionDictionary
from edge.ingest.ports import Rejection, StoredBatch, StoreUnavailable
from edge.model import Observation
from edge.quantities import QUANTITIES

SCHEMA_VERSION = 3
_SCHEMA = """
CREATE TABLE IF NOT EXISTS observation(
    id TEXT NOT NULL, gateway TEXT NOT NULL, seq INTEGER NOT NULL, sensor TEXT NOT NULL,
    quantity TEXT NOT NULL, unit TEXT NOT NULL, phenomenon_ms INTEGER NOT NULL,
    phenomenon_end_ms INTEGER, result_ms INTEGER NOT NULL, result REAL, raw_result REAL,
    quality TEXT, provenance TEXT NOT NULL, received_ms INTEGER NOT NULL,
    nonfinite TEXT, PRIMARY KEY(gateway, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gap(
    gateway TEXT, first_seq INTEGER, last_seq INTEGER, count INTEGER, reason TEXT,
    received_ms INTEGER, PRIMARY KEY(gateway, first_seq, last_seq, reason));
CREATE TABLE IF NOT EXISTS dead_letter(
    received_ms INTEGER NOT NULL, topic TEXT NOT NULL, gateway TEXT, ranges TEXT,
    reason TEXT NOT NULL, size INTEGER NOT NULL, payload BLOB);
CREATE TABLE IF NOT EXISTS dictionary(
    gateway TEXT NOT NULL, ref BLOB NOT NULL, body BLOB NOT NULL, received_ms INTEGER NOT NULL,
    PRIMARY KEY(gateway, ref)) WITHOUT ROWID;
"""
# v1 stores had ``result REAL NOT NULL``, no ``nonfinite`` and the id as key: rebuilt once,
# rows kept. Keyed by (gateway, seq) — the id is derived from them — a gateway's rows are
# appended in order instead of scattered by a random UUID (5× faster inserts).
_MIGRATE_1 = """
DROP INDEX IF EXISTS observation_gw_seq;
ALTER TABLE observation RENAME TO observation_v1;
{schema}
INSERT OR IGNORE INTO observation SELECT *, NULL FROM observation_v1;
DROP TABLE observation_v1;
"""
# Stores before the chaos campaign keyed gaps by (gateway, first_seq) and dropped a later,
# wider announcement that started at the same number: rebuilt once with every gap kept.
_MIGRATE_GAP_KEY = """
ALTER TABLE gap RENAME TO gap_v2;
{schema}
INSERT OR IGNORE INTO gap SELECT * FROM gap_v2;
DROP TABLE gap_v2;
"""
MAX_KEPT_PAYLOAD = 1 << 20  # a dead letter keeps at most this much of its payload


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _nonfinite(value: float) -> str | None:
    if math.isfinite(value):
        return None
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


class ReceiverStore:
    """SQLite store for received observations."""

    def __init__(self, path: Path, busy_timeout_s: float = 30.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                  timeout=busy_timeout_s)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        with self._transaction():
            self._migrate()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        columns = [r[1] for r in self.db.execute("PRAGMA table_info(observation)")]
        script = _SCHEMA
        if columns and "nonfinite" not in columns:
            script = _MIGRATE_1.format(schema=_SCHEMA)
        self._run(script)
        gap_key = [r[1] for r in sorted(self.db.execute("PRAGMA table_info(gap)"),
                                        key=lambda r: int(r[5])) if r[5]]
        if gap_key == ["gateway", "first_seq"]:
            self._run(_MIGRATE_GAP_KEY.format(schema=_SCHEMA))
        if version != SCHEMA_VERSION:
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _run(self, script: str) -> None:
        for statement in script.split(";"):
            if statement.strip():
                self.db.execute(statement)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN … COMMIT, or ROLLBACK and re-raise: never a transaction left open.

        SQLite's operational errors (disk full, I/O error, locked) become StoreUnavailable.
        """
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLite may have rolled back by itself (disk full)
                    db.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc

    @contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc

    # ------------------------------------------------------------------------ TwinStore
    def store_batches(self, batches: Sequence[DecodedBatch]) -> list[StoredBatch]:
        now = _now_ms()
        results = []
        with self._transaction() as db:
            for batch in batches:
                if batch.dictionary is not None:
                    db.execute(
                        "INSERT OR IGNORE INTO dictionary VALUES(?,?,?,?)",
                        (batch.gateway_id, batch.dictionary.ref, batch.dictionary.body, now),
                    )
                before = db.total_changes
                db.executemany(
                    "INSERT INTO observation VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT(gateway, seq) DO NOTHING",
                    (self._row(batch.gateway_id, o, i, now)
                     for o, i in zip(batch.observations, batch.ids, strict=True)),
                )
                new = db.total_changes - before
                db.executemany(
                    "INSERT OR IGNORE INTO gap VALUES(?,?,?,?,?,?)",
                    ((batch.gateway_id, a, b, n, r, now) for a, b, n, r in batch.gaps),
                )
                results.append(StoredBatch(new, len(batch.observations) - new))
        return results

    @staticmethod
    def _row(gw: str, obs: Observation, obs_id: str, now: int) -> tuple[object, ...]:
        q = QUANTITIES.get(obs.stream.quantity_code)
        note = _nonfinite(obs.result)
        raw = obs.raw_result
        return (
            obs_id, gw, obs.sequence, obs.stream.sensor_id, obs.stream.quantity_code,
            q.unit if q else "", obs.phenomenon_ms, obs.phenomenon_end_ms, obs.result_time_ms,
            None if note else obs.result,
            None if raw is None or not math.isfinite(raw) else raw,
            None if obs.quality is None else json.dumps(obs.quality.as_dict(), sort_keys=True),
            json.dumps(obs.provenance.as_dict(), sort_keys=True), now, note,
        )

    def reject(self, rejections: Sequence[Rejection]) -> None:
        now = _now_ms()
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO dead_letter VALUES(?,?,?,?,?,?,?)",
                (
                    (now, r.topic[:300], r.gateway_id,
                     json.dumps([list(x) for x in r.ranges]) if r.ranges else None,
                     r.reason[:2000], len(r.payload), r.payload[:MAX_KEPT_PAYLOAD])
                    for r in rejections
                ),
            )

    def dictionary(self, gateway_id: str, ref: bytes) -> SessionDictionary | None:
        with self._reading():
            row = self.db.execute(
                "SELECT body FROM dictionary WHERE gateway=? AND ref=?", (gateway_id, ref)
            ).fetchone()
        if row is None:
            return None
        try:
            return SessionDictionary.from_body(row[0])
        except ContractError:
            return None  # unreadable: the gateway will be asked to send it again

    def unknown(self, batch: DecodedBatch) -> DecodedBatch:
        """The part of a batch whose ids are not stored yet."""
        if not batch.observations:
            return batch
        with self._reading():
            known = {
                row[0]
                for row in self.db.execute(
                    "SELECT id FROM observation WHERE gateway=? AND seq BETWEEN ? AND ?",
                    (batch.gateway_id, batch.observations[0].sequence,
                     batch.observations[-1].sequence),
                )
            }
        keep = [i for i, obs_id in enumerate(batch.ids) if obs_id not in known]
        return DecodedBatch(
            batch.gateway_id,
            [batch.observations[i] for i in keep],
            [batch.ids[i] for i in keep],
            batch.gaps,
            batch.sent_ms,
            batch.version,
        )

    # ------------------------------------------------------------------------ queries
    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM observation").fetchone()[0])

    def latest(self, limit: int = 20) -> list[sqlite3.Row]:
        cur = self.db.cursor()
        cur.row_factory = sqlite3.Row
        return list(
            cur.execute(
                "SELECT * FROM observation ORDER BY received_ms DESC, seq DESC LIMIT ?", (limit,)
            )
        )

    def close(self) -> None:
        self.db.close()
