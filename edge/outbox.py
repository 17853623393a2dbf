"""The durable outbox: the only owner of the gateway's durable state.

Observations are appended by the ingest path and committed in groups (at most
``commit_interval_s`` or ``commit_rows``, whichever comes first) in one SQLite transaction in
WAL mode; an observation counts as received only once its group is committed. Uplinks take
batches with :meth:`Outbox.next_batch` and report back with :meth:`Outbox.settle`; rows are
deleted only when every uplink has confirmed them.

Guarantees (see docs/architecture.md):
- sequence numbers only grow, across restarts and even across a corrupt database being
  replaced (a reserved high-water mark lives in a side file ``<db>.seq``);
- after ``kill -9`` at any moment at most the last uncommitted group is lost;
- a corrupt database file is moved aside, reported, and replaced by a new one;
- bounded on disk: when over ``max_bytes`` the eviction policy runs (default: delete the
  oldest rows) and every evicted row is counted, logged and recorded as a gap that uplinks
  report to the twin; optional TTL works the same way;
- rows an uplink rejects permanently go to a dead-letter table, never silently away.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cbor2

from edge.config import BufferSettings
from edge.model import Batch, Datastream, Delivery, Observation, Provenance, Quality

log = logging.getLogger("duet.outbox")

SCHEMA_VERSION = 1
SEQ_RESERVE = 1_000_000  # sequence numbers reserved per write of the side file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS datastream(
    id INTEGER PRIMARY KEY, sensor TEXT NOT NULL, quantity TEXT NOT NULL, UNIQUE(sensor, quantity));
CREATE TABLE IF NOT EXISTS provenance(id INTEGER PRIMARY KEY, doc TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS obs(
    seq INTEGER PRIMARY KEY,  -- per-gateway sequence number
    ds INTEGER NOT NULL,      -- datastream id
    prov INTEGER NOT NULL,    -- provenance id
    t INTEGER NOT NULL,       -- phenomenon time (start), ms since epoch UTC
    dur INTEGER,              -- interval length in ms, NULL for an instant
    rt INTEGER,               -- result time ms, NULL when equal to the phenomenon end
    v REAL NOT NULL,          -- result
    raw REAL,                 -- uncalibrated result, NULL when not calibrated
    q BLOB,                   -- quality (CBOR), NULL when not evaluated
    pending INTEGER NOT NULL  -- bit i set: uplink i has not confirmed the row yet
);
CREATE TABLE IF NOT EXISTS dead_letter(
    seq INTEGER PRIMARY KEY, ds INTEGER, prov INTEGER, t INTEGER, dur INTEGER, rt INTEGER,
    v REAL, raw REAL, q BLOB, pending INTEGER, uplink TEXT, reason TEXT, at INTEGER);
CREATE TABLE IF NOT EXISTS gap(
    first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, count INTEGER NOT NULL,
    reason TEXT NOT NULL, at INTEGER NOT NULL, pending INTEGER NOT NULL);
"""

_COLUMNS = "seq, ds, prov, t, dur, rt, v, raw, q, pending"


@dataclass(slots=True)
class OutboxCounters:
    """Counters the runtime exports; ``evicted`` and ``dead_lettered`` are also persisted."""

    received: int = 0
    committed_groups: int = 0
    confirmed: int = 0
    evicted: int = 0
    refused: int = 0
    dead_lettered: int = 0
    recovered_corrupt: int = 0
    lost_on_restart_estimate: int = 0


@dataclass(slots=True)
class _Cursor:
    """Which sequence ranges an uplink has been handed since its last rewind."""

    handed: list[tuple[int, int]] = field(default_factory=list)

    def add(self, lo: int, hi: int) -> None:
        ranges = sorted([*self.handed, (lo, hi)])
        merged: list[tuple[int, int]] = []
        for a, b in ranges:
            if merged and a <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        self.handed = merged

    def gaps(self, top: int) -> list[tuple[int, int]]:
        """Unhanded ranges ``[lo, hi]`` in ascending order, the last one open-ended (``top``)."""
        out: list[tuple[int, int]] = []
        lo = 0
        for a, b in self.handed:
            if a > lo:
                out.append((lo, a - 1))
            lo = b + 1
        out.append((lo, top))
        return out


class OutboxError(Exception):
    pass


class Outbox:
    """SQLite-backed outbox. Not thread-safe: use it from one thread (the event loop)."""

    def __init__(
        self,
        path: Path,
        settings: BufferSettings,
        gateway_id: str,
        uplinks: Sequence[str] = ("default",),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 1 <= len(uplinks) <= 30:
            raise ValueError("between 1 and 30 uplinks")
        self.path = Path(path)
        self.settings = settings
        self.gateway_id = gateway_id
        self.uplinks = list(uplinks)
        self._bit = {name: 1 << i for i, name in enumerate(self.uplinks)}
        self._all_bits = (1 << len(self.uplinks)) - 1
        self._clock = clock
        self.counters = OutboxCounters()
        self._pending: list[Observation] = []
        self._first_pending_at: float | None = None
        self._ds_ids: dict[tuple[str, str], int] = {}
        self._prov_ids: dict[Provenance, int] = {}
        self._ds_by_id: dict[int, Datastream] = {}
        self._prov_by_id: dict[int, Provenance] = {}
        self._cursors = {name: _Cursor() for name in self.uplinks}
        self._next_seq = 1
        self._reserved_to = 0
        self._last_size_check = 0.0
        self._last_ttl_check = 0.0
        self.on_commit: list[Callable[[list[Observation]], None]] = []
        self._db = self._open()

    # ------------------------------------------------------------------ opening
    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = self._connect()
            self._check_integrity(db)
        except (sqlite3.DatabaseError, OutboxError) as exc:
            self._move_aside(str(exc))
            db = self._connect()
        self._load(db)
        return db

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        sync = "FULL" if self.settings.durability == "full" else "NORMAL"
        db.execute(f"PRAGMA synchronous={sync}")
        db.execute("PRAGMA wal_autocheckpoint=2000")
        db.executescript(_SCHEMA)
        return db

    def _check_integrity(self, db: sqlite3.Connection) -> None:
        result = db.execute("PRAGMA quick_check").fetchone()
        if not result or result[0] != "ok":
            db.close()
            raise OutboxError(f"integrity check failed: {result[0] if result else 'no answer'}")
        version = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if version is None:
            db.execute("INSERT INTO meta VALUES('schema', ?)", (SCHEMA_VERSION,))
            db.execute("INSERT OR IGNORE INTO meta VALUES('gateway', ?)", (self.gateway_id,))
        elif version[0] != SCHEMA_VERSION:
            db.close()
            raise OutboxError(f"schema version {version[0]} not supported")
        owner = db.execute("SELECT value FROM meta WHERE key='gateway'").fetchone()
        if owner is not None and owner[0] != self.gateway_id:
            db.close()
            raise OutboxError(f"outbox belongs to gateway {owner[0]!r}, not {self.gateway_id!r}")

    def _move_aside(self, reason: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._clock()))
        moved = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(moved) + suffix))
        self.counters.recovered_corrupt += 1
        log.error(
            "outbox database unusable, moved aside; continuing on a new one",
            extra={"event": "outbox_corrupt", "reason": reason, "moved_to": str(moved)},
        )

    def _load(self, db: sqlite3.Connection) -> None:
        for ds_id, sensor, qty in db.execute("SELECT id, sensor, quantity FROM datastream"):
            self._ds_ids[(sensor, qty)] = ds_id
            self._ds_by_id[ds_id] = Datastream(self.gateway_id, sensor, qty)
        for prov_id, doc in db.execute("SELECT id, doc FROM provenance"):
            prov = Provenance.from_dict(json.loads(doc))
            self._prov_ids[prov] = prov_id
            self._prov_by_id[prov_id] = prov
        meta = dict(db.execute("SELECT key, value FROM meta"))
        self.counters.evicted = int(meta.get("evicted", 0))
        self.counters.dead_lettered = int(meta.get("dead_lettered", 0))
        max_seq = max(
            int(meta.get("last_seq", 0)),
            db.execute("SELECT coalesce(max(seq), 0) FROM obs").fetchone()[0],
            db.execute("SELECT coalesce(max(seq), 0) FROM dead_letter").fetchone()[0],
        )
        side = self._read_seq_file()
        if side > max_seq and meta.get("last_seq") is None:
            # A new database after a corrupt one: skip past every number that may have been used.
            log.warning("outbox sequence resumes after reserved mark", extra={"seq": side + 1})
            max_seq = side
        self._next_seq = max_seq + 1
        self._reserved_to = max(side, max_seq)

    # ------------------------------------------------------------------ sequence reservation
    @property
    def _seq_file(self) -> Path:
        return Path(str(self.path) + ".seq")

    def _read_seq_file(self) -> int:
        try:
            return int(self._seq_file.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _reserve(self, upto: int) -> None:
        if upto <= self._reserved_to:
            return
        target = upto + SEQ_RESERVE
        tmp = self._seq_file.with_suffix(".seq.tmp")
        with open(tmp, "w") as fh:
            fh.write(str(target))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._seq_file)
        self._reserved_to = target

    # ------------------------------------------------------------------ ingest
    def append(self, observations: Iterable[Observation]) -> None:
        """Queue observations for the next group commit (commits at once if the group is full)."""
        if self._first_pending_at is None:
            self._first_pending_at = self._clock()
        self._pending.extend(observations)
        if len(self._pending) >= self.settings.commit_rows:
            self.commit()

    def commit_due(self) -> bool:
        """True when the oldest uncommitted observation has waited ``commit_interval_s``."""
        return (
            self._first_pending_at is not None
            and self._clock() - self._first_pending_at >= self.settings.commit_interval_s
        )

    @property
    def uncommitted(self) -> int:
        return len(self._pending)

    def commit(self) -> int:
        """Commit the pending group in one transaction; returns the number of rows written."""
        pending, self._pending = self._pending, []
        self._first_pending_at = None
        if not pending:
            return 0
        if self.settings.eviction == "newest" and self._over_size_limit():
            self.counters.refused += len(pending)
            log.warning("outbox full, refusing new observations", extra={"refused": len(pending)})
            return 0
        first = self._next_seq
        self._reserve(first + len(pending))
        rows = self._rows(pending, first)
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany(f"INSERT INTO obs({_COLUMNS}) VALUES(?,?,?,?,?,?,?,?,?,?)", rows)
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES('last_seq', ?)", (first + len(pending) - 1,)
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._forget_uncommitted_ids()
            raise
        self._next_seq = first + len(pending)
        for obs, seq in zip(pending, range(first, self._next_seq), strict=True):
            obs.sequence = seq
        self.counters.received += len(pending)
        self.counters.committed_groups += 1
        for hook in self.on_commit:
            hook(pending)
        self._enforce_limits()
        return len(pending)

    def _rows(self, pending: list[Observation], first: int) -> list[tuple[object, ...]]:
        ds_ids, prov_ids, bits = self._ds_ids, self._prov_ids, self._all_bits
        rows: list[tuple[object, ...]] = []
        seq = first
        for o in pending:
            stream = o.stream
            ds = ds_ids.get((stream.sensor_id, stream.quantity_code))
            if ds is None:
                ds = self._new_datastream(stream)
            prov = prov_ids.get(o.provenance)
            if prov is None:
                prov = self._new_provenance(o.provenance)
            end = o.phenomenon_end_ms
            q = o.quality
            rows.append(
                (
                    seq,
                    ds,
                    prov,
                    o.phenomenon_ms,
                    None if end is None else end - o.phenomenon_ms,
                    o.result_ms,
                    o.result,
                    o.raw_result,
                    None if q is None else cbor2.dumps(q.as_dict()),
                    bits,
                )
            )
            seq += 1
        return rows

    def _new_datastream(self, stream: Datastream) -> int:
        key = (stream.sensor_id, stream.quantity_code)
        cur = self._db.execute(
            "INSERT OR IGNORE INTO datastream(sensor, quantity) VALUES(?, ?)", key
        )
        ds_id = (
            cur.lastrowid
            if cur.rowcount
            else self._db.execute(
                "SELECT id FROM datastream WHERE sensor=? AND quantity=?", key
            ).fetchone()[0]
        )
        assert ds_id is not None
        self._ds_ids[key] = ds_id
        self._ds_by_id[ds_id] = Datastream(self.gateway_id, *key)
        return ds_id

    def _new_provenance(self, prov: Provenance) -> int:
        doc = json.dumps(prov.as_dict(), sort_keys=True)
        self._db.execute("INSERT OR IGNORE INTO provenance(doc) VALUES(?)", (doc,))
        prov_id = self._db.execute("SELECT id FROM provenance WHERE doc=?", (doc,)).fetchone()[0]
        self._prov_ids[prov] = prov_id
        self._prov_by_id[prov_id] = prov
        return int(prov_id)

    def _forget_uncommitted_ids(self) -> None:
        """After a rollback, forget ids of datastreams/provenance that were never committed."""
        self._ds_ids.clear()
        self._prov_ids.clear()
        self._ds_by_id.clear()
        self._prov_by_id.clear()
        self._load(self._db)

    # ------------------------------------------------------------------ limits
    def size_bytes(self) -> int:
        """Bytes of the database in use (free pages excluded) plus the WAL file."""
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        try:
            wal = os.path.getsize(str(self.path) + "-wal")
        except OSError:
            wal = 0
        return int((pages - free) * page_size + wal)

    def _over_size_limit(self) -> bool:
        return self.size_bytes() > self.settings.max_bytes

    def _enforce_limits(self) -> None:
        now = self._clock()
        if self.settings.ttl_s is not None and now - self._last_ttl_check >= 1.0:
            self._last_ttl_check = now
            cutoff = int((now - self.settings.ttl_s) * 1000)
            self._evict("SELECT seq FROM obs WHERE t < ? ORDER BY seq", (cutoff,), "ttl")
        if self.settings.eviction != "oldest":
            return
        while self._over_size_limit():
            total = self._db.execute("SELECT count(*) FROM obs").fetchone()[0]
            if total == 0:
                break
            chunk = max(self.settings.commit_rows, total // 20)
            self._evict("SELECT seq FROM obs ORDER BY seq LIMIT ?", (chunk,), "size")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _evict(self, select_sql: str, params: tuple[object, ...], reason: str) -> int:
        seqs = [r[0] for r in self._db.execute(select_sql, params)]
        if not seqs:
            return 0
        db = self._db
        db.execute("BEGIN")
        db.executemany("DELETE FROM obs WHERE seq=?", ((s,) for s in seqs))
        now_ms = int(self._clock() * 1000)
        for lo, hi, n in _runs(seqs):
            db.execute(
                "INSERT INTO gap VALUES(?,?,?,?,?,?)",
                (lo, hi, n, f"evicted:{reason}", now_ms, self._all_bits),
            )
        self.counters.evicted += len(seqs)
        db.execute("INSERT OR REPLACE INTO meta VALUES('evicted', ?)", (self.counters.evicted,))
        db.execute("COMMIT")
        log.warning(
            "outbox evicted unsent observations",
            extra={
                "event": "outbox_evicted",
                "reason": reason,
                "count": len(seqs),
                "first_seq": seqs[0],
                "last_seq": seqs[-1],
                "evicted_total": self.counters.evicted,
            },
        )
        return len(seqs)

    # ------------------------------------------------------------------ draining
    def depth(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM obs").fetchone()[0]) + len(self._pending)

    def oldest_unsent_ms(self) -> int | None:
        row = self._db.execute("SELECT min(t) FROM obs").fetchone()
        return None if row[0] is None else int(row[0])

    def next_batch(self, uplink: str, limit: int) -> Batch:
        """The next rows this uplink has not been handed yet, in the configured drain order."""
        bit = self._bit[uplink]
        cursor = self._cursors[uplink]
        top = self._next_seq
        gaps = cursor.gaps(top)
        newest_first = self.settings.drain_order == "newest-first"
        order = "DESC" if newest_first else "ASC"
        for lo, hi in reversed(gaps) if newest_first else gaps:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM obs WHERE seq BETWEEN ? AND ? AND (pending & ?) "
                f"ORDER BY seq {order} LIMIT ?",
                (lo, hi, bit, limit),
            ).fetchall()
            if not rows:
                cursor.add(lo, hi) if hi < top else None
                continue
            seqs = [r[0] for r in rows]
            if newest_first:
                rows.reverse()
                cursor.add(min(seqs), hi if hi < top else max(seqs))
            else:
                cursor.add(lo, max(seqs))
            return Batch(self.gateway_id, tuple(self._observation(r) for r in rows))
        return Batch(self.gateway_id, ())

    def _observation(self, row: tuple[object, ...]) -> Observation:
        seq, ds, prov, t, dur, rt, v, raw, q, _pending = row
        assert isinstance(t, int) and isinstance(seq, int)
        return Observation(
            stream=self._ds_by_id[ds],  # type: ignore[index]
            result=float(v),  # type: ignore[arg-type]
            phenomenon_ms=t,
            provenance=self._prov_by_id[prov],  # type: ignore[index]
            phenomenon_end_ms=None if dur is None else t + dur,  # type: ignore[operator]
            result_ms=rt,  # type: ignore[arg-type]
            raw_result=raw,  # type: ignore[arg-type]
            quality=None if q is None else Quality.from_dict(cbor2.loads(q)),  # type: ignore[arg-type]
            sequence=seq,
        )

    def rewind(self, uplink: str) -> None:
        """Forget what was handed to this uplink: unconfirmed rows will be handed out again."""
        self._cursors[uplink] = _Cursor()

    def settle(self, uplink: str, delivery: Delivery) -> None:
        """Apply an uplink's report: delete confirmed rows, dead-letter rejected ones."""
        bit = self._bit[uplink]
        db = self._db
        db.execute("BEGIN")
        try:
            if delivery.confirmed:
                params = [(s,) for s in delivery.confirmed]
                if self._all_bits == bit:
                    db.executemany("DELETE FROM obs WHERE seq=?", params)
                else:
                    db.executemany(f"UPDATE obs SET pending = pending & {~bit} WHERE seq=?", params)
                    db.executemany("DELETE FROM obs WHERE seq=? AND pending=0", params)
            if delivery.rejected:
                now_ms = int(self._clock() * 1000)
                for seq, reason in delivery.rejected.items():
                    db.execute(
                        f"INSERT OR REPLACE INTO dead_letter SELECT {_COLUMNS}, ?, ?, ? FROM obs WHERE seq=?",
                        (uplink, reason[:500], now_ms, seq),
                    )
                    db.execute("DELETE FROM obs WHERE seq=?", (seq,))
                self.counters.dead_lettered += len(delivery.rejected)
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES('dead_lettered', ?)",
                    (self.counters.dead_lettered,),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.counters.confirmed += len(delivery.confirmed)
        if delivery.rejected:
            log.error(
                "uplink rejected observations; moved to dead letters",
                extra={
                    "event": "dead_letter",
                    "uplink": uplink,
                    "count": len(delivery.rejected),
                    "example": next(iter(delivery.rejected.values()))[:200],
                },
            )

    # ------------------------------------------------------------------ gaps and dead letters
    def pending_gaps(self, uplink: str) -> list[tuple[int, int, int, str]]:
        """Evicted ranges this uplink has not reported yet: (first_seq, last_seq, count, reason)."""
        bit = self._bit[uplink]
        return [
            (a, b, n, r)
            for a, b, n, r in self._db.execute(
                "SELECT first_seq, last_seq, count, reason FROM gap WHERE pending & ? ORDER BY first_seq",
                (bit,),
            )
        ]

    def gaps_reported(self, uplink: str, gaps: Iterable[tuple[int, int, int, str]]) -> None:
        bit = self._bit[uplink]
        db = self._db
        db.execute("BEGIN")
        for first, _last, _n, _r in gaps:
            db.execute(f"UPDATE gap SET pending = pending & {~bit} WHERE first_seq=?", (first,))
        db.execute("DELETE FROM gap WHERE pending=0")
        db.execute("COMMIT")

    def dead_letters(self, limit: int = 100) -> list[tuple[int, str, str, int]]:
        return list(
            self._db.execute(
                "SELECT seq, uplink, reason, at FROM dead_letter ORDER BY seq LIMIT ?", (limit,)
            )
        )

    def requeue_dead_letters(self) -> int:
        """Move every dead letter back into the outbox (after fixing the cause at the twin)."""
        db = self._db
        db.execute("BEGIN")
        cur = db.execute(
            f"INSERT OR IGNORE INTO obs({_COLUMNS}) SELECT {_COLUMNS.replace('pending', '?')} FROM dead_letter",
            (self._all_bits,),
        )
        db.execute("DELETE FROM dead_letter")
        db.execute("COMMIT")
        for name in self.uplinks:
            self.rewind(name)
        return cur.rowcount

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Commit what is pending and close the database (clean shutdown)."""
        try:
            self.commit()
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()


def _runs(seqs: list[int]) -> Iterable[tuple[int, int, int]]:
    """Contiguous runs ``(first, last, count)`` of a sorted list of integers."""
    start = prev = seqs[0]
    for s in seqs[1:]:
        if s != prev + 1:
            yield start, prev, prev - start + 1
            start = s
        prev = s
    yield start, prev, prev - start + 1
