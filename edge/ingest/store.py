"""The receiver's local store: observations keyed by their deterministic id (duplicates ignored)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from edge.contract import DecodedBatch
from edge.quantities import QUANTITIES

_SCHEMA = """
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE IF NOT EXISTS observation(
    id TEXT PRIMARY KEY, gateway TEXT NOT NULL, seq INTEGER NOT NULL, sensor TEXT NOT NULL,
    quantity TEXT NOT NULL, unit TEXT NOT NULL, phenomenon_ms INTEGER NOT NULL, phenomenon_end_ms INTEGER,
    result_ms INTEGER NOT NULL, result REAL NOT NULL, raw_result REAL, quality TEXT, provenance TEXT NOT NULL,
    received_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS observation_gw_seq ON observation(gateway, seq);
CREATE TABLE IF NOT EXISTS gap(
    gateway TEXT, first_seq INTEGER, last_seq INTEGER, count INTEGER, reason TEXT, received_ms INTEGER,
    PRIMARY KEY(gateway, first_seq));
CREATE TABLE IF NOT EXISTS rejected_message(received_ms INTEGER, topic TEXT, size INTEGER, reason TEXT);
"""


class ReceiverStore:
    """SQLite store for received observations. ``store`` returns (new, duplicates)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.executescript(_SCHEMA)

    def store(self, batch: DecodedBatch) -> tuple[int, int]:
        now = time.time_ns() // 1_000_000
        rows = []
        for obs, obs_id in zip(batch.observations, batch.ids, strict=True):
            q = QUANTITIES.get(obs.stream.quantity_code)
            rows.append(
                (
                    obs_id,
                    batch.gateway_id,
                    obs.sequence,
                    obs.stream.sensor_id,
                    obs.stream.quantity_code,
                    q.unit if q else "",
                    obs.phenomenon_ms,
                    obs.phenomenon_end_ms,
                    obs.result_time_ms,
                    obs.result,
                    obs.raw_result,
                    None
                    if obs.quality is None
                    else json.dumps(obs.quality.as_dict(), sort_keys=True),
                    json.dumps(obs.provenance.as_dict(), sort_keys=True),
                    now,
                )
            )
        db = self.db
        db.execute("BEGIN")
        before = db.total_changes
        db.executemany(
            "INSERT OR IGNORE INTO observation VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows
        )
        new = db.total_changes - before
        for first, last, count, reason in batch.gaps:
            db.execute(
                "INSERT OR IGNORE INTO gap VALUES(?,?,?,?,?,?)",
                (batch.gateway_id, first, last, count, reason, now),
            )
        db.execute("COMMIT")
        return new, len(rows) - new

    def unknown(self, batch: DecodedBatch) -> DecodedBatch:
        """The part of a batch whose ids are not stored yet."""
        known = {
            row[0]
            for row in self.db.execute(
                "SELECT id FROM observation WHERE gateway=? AND seq BETWEEN ? AND ?",
                (batch.gateway_id, batch.observations[0].sequence, batch.observations[-1].sequence),
            )
        }
        keep = [i for i, obs_id in enumerate(batch.ids) if obs_id not in known]
        return DecodedBatch(
            batch.gateway_id,
            [batch.observations[i] for i in keep],
            [batch.ids[i] for i in keep],
            batch.gaps,
            batch.sent_ms,
        )

    def reject(self, topic: str, size: int, reason: str) -> None:
        self.db.execute(
            "INSERT INTO rejected_message VALUES(?,?,?,?)",
            (time.time_ns() // 1_000_000, topic, size, reason[:500]),
        )

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
