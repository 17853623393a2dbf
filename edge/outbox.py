"""The durable outbox: the only owner of the gateway's durable state.

Observations are appended by the ingest path and committed in groups (at most
``commit_interval_s`` or ``commit_rows``, whichever comes first) in one SQLite transaction in
WAL mode; an observation counts as received only once its group is committed. Uplinks take
batches with :meth:`Outbox.next_batch` and report back with :meth:`Outbox.settle`; an
observation is deleted only when every uplink has confirmed it.

Guarantees (see docs/architecture.md):
- sequence numbers only grow, across restarts and even across a corrupt database being
  replaced (a reserved high-water mark lives in a side file ``<db>.seq``);
- after ``kill -9`` at any moment at most the last uncommitted group is lost;
- a corrupt database file is moved aside, reported, and replaced by a new one;
- bounded on disk: when over ``max_bytes`` the eviction policy runs (default: delete the
  oldest groups) and every evicted observation is counted, logged and recorded as a gap that
  uplinks report to the twin; optional TTL works the same way;
- observations an uplink rejects permanently go to a dead-letter table, never silently away.

On-disk layout (why it is not one row per observation)
------------------------------------------------------
An SD card wears with every page written. One SQLite row per observation costs ~85 bytes of
writes to insert and ~67 more to delete (WAL frame + checkpoint, measured in
bench/bench_spine.py). Here one **group row** holds a whole group commit: a compact CBOR
record of columns (datastream and provenance indices, time deltas, float64 values, sparse
optional fields). Confirmations are kept as merged sequence ranges per uplink (table
``done``); a group row is deleted once every uplink has confirmed all of it. Inserting and
deleting a group of 500 observations touches a handful of pages instead of ~30.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import sqlite3
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cbor2

from edge.config import BufferSettings
from edge.model import Batch, Datastream, Delivery, Observation, Provenance, Quality

log = logging.getLogger("duet.outbox")

SCHEMA_VERSION = 2
SEQ_RESERVE = 1_000_000  # sequence numbers reserved per write of the side file
GROUP_FORMAT = 1
_DECODED_CACHE = 16  # decoded groups kept in memory for draining

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS datastream(
    id INTEGER PRIMARY KEY, sensor TEXT NOT NULL, quantity TEXT NOT NULL, UNIQUE(sensor, quantity));
CREATE TABLE IF NOT EXISTS provenance(id INTEGER PRIMARY KEY, doc TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS grp(
    id INTEGER PRIMARY KEY,
    first_seq INTEGER NOT NULL,  -- lowest sequence number in the group
    last_seq INTEGER NOT NULL,   -- highest
    n INTEGER NOT NULL,          -- observations in the group
    t_min INTEGER NOT NULL,      -- earliest / latest phenomenon time, ms since epoch UTC
    t_max INTEGER NOT NULL,
    data BLOB NOT NULL           -- the group's columns, see _encode_group
);
CREATE TABLE IF NOT EXISTS done(
    uplink INTEGER NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL,
    PRIMARY KEY(uplink, lo)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letter(
    seq INTEGER PRIMARY KEY, ds INTEGER, prov INTEGER, t INTEGER, dur INTEGER, rt INTEGER,
    v REAL, raw REAL, q BLOB, uplink TEXT, reason TEXT, at INTEGER);
CREATE TABLE IF NOT EXISTS gap(
    first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, count INTEGER NOT NULL,
    reason TEXT NOT NULL, at INTEGER NOT NULL, pending INTEGER NOT NULL);
"""

Ranges = list[tuple[int, int]]


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


@dataclass(slots=True)
class _Group:
    row_id: int
    first: int
    last: int
    n: int
    t_min: int
    t_max: int


def merge(ranges: Iterable[tuple[int, int]]) -> Ranges:
    """Sorted, merged closed integer ranges."""
    out: Ranges = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def subtract(ranges: Ranges, points: Iterable[int]) -> Ranges:
    """Remove single integers from merged ranges."""
    out = list(ranges)
    for p in sorted(set(points)):
        for i, (a, b) in enumerate(out):
            if a <= p <= b:
                pieces = [(a, p - 1)] if a < p else []
                pieces += [(p + 1, b)] if p < b else []
                out[i : i + 1] = pieces
                break
    return out


def intersect(x: Ranges, y: Ranges) -> Ranges:
    out: Ranges = []
    i = j = 0
    while i < len(x) and j < len(y):
        lo, hi = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return out


def covers(ranges: Ranges, lo: int, hi: int) -> bool:
    """True when [lo, hi] lies inside one of the merged ranges."""
    i = bisect.bisect_right(ranges, (lo, sys.maxsize)) - 1
    return i >= 0 and ranges[i][0] <= lo and hi <= ranges[i][1]


def contains(ranges: Ranges, seq: int) -> bool:
    return covers(ranges, seq, seq)


def complement(ranges: Ranges, top: int) -> Ranges:
    """Ranges of [1, top] not in ``ranges``."""
    out: Ranges = []
    lo = 1
    for a, b in ranges:
        if a > lo:
            out.append((lo, min(a - 1, top)))
        lo = max(lo, b + 1)
        if lo > top:
            break
    if lo <= top:
        out.append((lo, top))
    return [(a, b) for a, b in out if a <= b]


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
        self._index = {name: i for i, name in enumerate(self.uplinks)}
        self._all_bits = (1 << len(self.uplinks)) - 1
        self._clock = clock
        self.counters = OutboxCounters()
        self._pending: list[Observation] = []
        self._first_pending_at: float | None = None
        self._ds_ids: dict[tuple[str, str], int] = {}
        self._prov_ids: dict[Provenance, int] = {}
        self._ds_by_id: dict[int, Datastream] = {}
        self._prov_by_id: dict[int, Provenance] = {}
        self._groups: list[_Group] = []  # ascending by first sequence number
        self._done: dict[str, Ranges] = {name: [] for name in self.uplinks}
        self._handed: dict[str, Ranges] = {name: [] for name in self.uplinks}
        self._decoded: dict[int, list[Observation]] = {}
        self._ids_by_identity: dict[int, tuple[object, int]] = {}
        self._staged_state: dict[str, str | bytes] = {}
        self._next_seq = 1
        self._reserved_to = 0
        self._last_ttl_check = 0.0
        self.on_commit: list[Callable[[list[Observation]], None]] = []
        self._db = self._open()

    # ------------------------------------------------------------------ opening
    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = self._connect()
            self._check_integrity(db)
            self._load(db)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise  # another process holds it: never move a healthy database aside
            self._move_aside(str(exc))
            db = self._connect()
            self._check_integrity(db)
            self._load(db)
        except (sqlite3.DatabaseError, OutboxError) as exc:
            self._move_aside(str(exc))
            db = self._connect()
            self._check_integrity(db)
            self._load(db)
        return db

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=15)
        db.execute("PRAGMA journal_mode=WAL")
        sync = "FULL" if self.settings.durability == "full" else "NORMAL"
        db.execute(f"PRAGMA synchronous={sync}")
        db.execute("PRAGMA secure_delete=OFF")  # freed pages need not be zeroed: fewer writes
        db.execute("PRAGMA wal_autocheckpoint=1000")
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
        for name in self.uplinks:
            self._done[name] = []
            self._handed[name] = []
        self._groups = []
        log.error(
            "outbox database unusable, moved aside; continuing on a new one",
            extra={"event": "outbox_corrupt", "reason": reason, "moved_to": str(moved)},
        )

    def _load(self, db: sqlite3.Connection) -> None:
        self._ids_by_identity = {}
        self._ds_ids.clear()
        self._ds_by_id.clear()
        self._prov_ids.clear()
        self._prov_by_id.clear()
        for ds_id, sensor, qty in db.execute("SELECT id, sensor, quantity FROM datastream"):
            self._ds_ids[(sensor, qty)] = ds_id
            self._ds_by_id[ds_id] = Datastream(self.gateway_id, sensor, qty)
        for prov_id, doc in db.execute("SELECT id, doc FROM provenance"):
            prov = Provenance.from_dict(json.loads(doc))
            self._prov_ids[prov] = prov_id
            self._prov_by_id[prov_id] = prov
        self._groups = [
            _Group(*row)
            for row in db.execute(
                "SELECT id, first_seq, last_seq, n, t_min, t_max FROM grp ORDER BY first_seq, id"
            )
        ]
        for name, i in self._index.items():
            self._done[name] = merge(
                (lo, hi) for lo, hi in db.execute("SELECT lo, hi FROM done WHERE uplink=?", (i,))
            )
            self._handed[name] = list(self._done[name])
        meta = dict(db.execute("SELECT key, value FROM meta"))
        self.counters.evicted = int(meta.get("evicted", 0))
        self.counters.dead_lettered = int(meta.get("dead_lettered", 0))
        max_seq = max(
            int(meta.get("last_seq", 0)),
            max((g.last for g in self._groups), default=0),
            db.execute("SELECT coalesce(max(seq), 0) FROM dead_letter").fetchone()[0],
        )
        side = self._read_seq_file()
        if side > max_seq and not self._groups and meta.get("last_seq") is None:
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

    def stage_state(self, key: str, value: str | bytes) -> None:
        """Persist ``key = value`` atomically with the next group commit.

        A source that must remember what it has received (a firmware node's last batch
        sequence) stages it right before emitting the observations: both land in the same
        transaction, so no crash can separate them.
        """
        self._staged_state[key] = value

    def state(self, key: str) -> str | bytes | None:
        """A value committed with :meth:`stage_state` (None if never)."""
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (f"state:{key}",)).fetchone()
        if row is None:
            return None
        return row[0] if isinstance(row[0], bytes) else str(row[0])

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
        """Commit the pending group in one transaction; returns the number of observations written."""
        pending, self._pending = self._pending, []
        self._first_pending_at = None
        if not pending:
            return 0
        staged, self._staged_state = self._staged_state, {}
        if self.settings.eviction == "newest" and self._over_size_limit():
            self.counters.refused += len(pending)
            log.warning("outbox full, refusing new observations", extra={"refused": len(pending)})
            return 0
        first = self._next_seq
        last = first + len(pending) - 1
        self._reserve(last)
        db = self._db
        db.execute("BEGIN")
        try:
            data, t_min, t_max = self._encode_group(pending, None)
            cur = db.execute(
                "INSERT INTO grp(first_seq, last_seq, n, t_min, t_max, data) VALUES(?,?,?,?,?,?)",
                (first, last, len(pending), t_min, t_max, data),
            )
            db.executemany(
                "INSERT OR REPLACE INTO meta VALUES(?, ?)",
                [(f"state:{k}", v) for k, v in staged.items()],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._load(db)  # forget datastream/provenance ids that were never committed
            raise
        assert cur.lastrowid is not None
        self._groups.append(_Group(cur.lastrowid, first, last, len(pending), t_min, t_max))
        self._next_seq = last + 1
        for seq, obs in enumerate(pending, first):
            obs.sequence = seq
        self.counters.received += len(pending)
        self.counters.committed_groups += 1
        for hook in self.on_commit:
            hook(pending)
        self._enforce_limits()
        return len(pending)

    def _encode_group(
        self, obs: list[Observation], seqs: list[int] | None
    ) -> tuple[bytes, int, int]:
        """One group as a CBOR array of columns (values as raw float64, exact)."""
        ds_ids, prov_ids = self._ds_ids, self._prov_ids
        # Sources intern their Datastream/Provenance objects: look them up by identity first
        # (hashing a frozen dataclass per observation costs more than the rest of the row).
        by_identity = self._ids_by_identity
        ds_col: list[int] = []
        prov_col: list[int] = []
        t_col: list[int] = []
        values = array("d")
        dur: dict[int, int] = {}
        rt: dict[int, int] = {}
        raw: dict[int, float] = {}
        qual: dict[int, dict[str, object]] = {}
        t_base = obs[0].phenomenon_ms
        t_min = t_max = t_base
        for i, o in enumerate(obs):
            stream = o.stream
            known = by_identity.get(id(stream))
            if known is None or known[0] is not stream:
                ds = ds_ids.get((stream.sensor_id, stream.quantity_code))
                if ds is None:
                    ds = self._new_datastream(stream)
                by_identity[id(stream)] = (stream, ds)
            else:
                ds = known[1]
            provenance = o.provenance
            known = by_identity.get(id(provenance))
            if known is None or known[0] is not provenance:
                prov = prov_ids.get(provenance)
                if prov is None:
                    prov = self._new_provenance(provenance)
                by_identity[id(provenance)] = (provenance, prov)
            else:
                prov = known[1]
            ds_col.append(ds)
            prov_col.append(prov)
            t = o.phenomenon_ms
            t_col.append(t - t_base)
            t_min = t if t < t_min else t_min
            t_max = t if t > t_max else t_max
            values.append(o.result)
            if o.phenomenon_end_ms is not None:
                dur[i] = o.phenomenon_end_ms - t
            if o.result_ms is not None:
                rt[i] = o.result_ms
            if o.raw_result is not None:
                raw[i] = o.raw_result
            if o.quality is not None:
                qual[i] = o.quality.as_dict()
        if sys.byteorder != "little":
            values.byteswap()
        record = [
            GROUP_FORMAT,
            seqs,
            t_base,
            ds_col,
            prov_col,
            t_col,
            values.tobytes(),
            dur,
            rt,
            raw,
            qual,
        ]
        return cbor2.dumps(record), t_min, t_max

    def _decode_group(self, group: _Group) -> list[Observation]:
        cached = self._decoded.get(group.row_id)
        if cached is not None:
            return cached
        (data,) = self._db.execute("SELECT data FROM grp WHERE id=?", (group.row_id,)).fetchone()
        out = self._observations_from(group, data)
        if len(self._decoded) >= _DECODED_CACHE:
            self._decoded.pop(next(iter(self._decoded)))
        self._decoded[group.row_id] = out
        return out

    def _observations_from(self, group: _Group, data: bytes) -> list[Observation]:
        fmt, seqs, t_base, ds_col, prov_col, t_col, raw_values, dur, rt, raw, qual = cbor2.loads(
            data
        )
        if fmt != GROUP_FORMAT:
            raise OutboxError(f"group format {fmt} not supported")
        values = array("d")
        values.frombytes(raw_values)
        if sys.byteorder != "little":
            values.byteswap()
        seq_list = seqs if seqs is not None else range(group.first, group.first + group.n)
        ds_by_id, prov_by_id = self._ds_by_id, self._prov_by_id
        out = []
        for i, seq in enumerate(seq_list):
            t = t_base + t_col[i]
            q = qual.get(i)
            d = dur.get(i)
            out.append(
                Observation(
                    ds_by_id[ds_col[i]],
                    values[i],
                    t,
                    prov_by_id[prov_col[i]],
                    None if d is None else t + d,
                    rt.get(i),
                    raw.get(i),
                    None if q is None else Quality.from_dict(q),
                    seq,
                )
            )
        return out

    def _new_datastream(self, stream: Datastream) -> int:
        key = (stream.sensor_id, stream.quantity_code)
        self._db.execute("INSERT OR IGNORE INTO datastream(sensor, quantity) VALUES(?, ?)", key)
        (ds_id,) = self._db.execute(
            "SELECT id FROM datastream WHERE sensor=? AND quantity=?", key
        ).fetchone()
        self._ds_ids[key] = ds_id
        self._ds_by_id[ds_id] = Datastream(self.gateway_id, *key)
        return int(ds_id)

    def _new_provenance(self, prov: Provenance) -> int:
        doc = json.dumps(prov.as_dict(), sort_keys=True)
        self._db.execute("INSERT OR IGNORE INTO provenance(doc) VALUES(?)", (doc,))
        (prov_id,) = self._db.execute("SELECT id FROM provenance WHERE doc=?", (doc,)).fetchone()
        self._prov_ids[prov] = prov_id
        self._prov_by_id[prov_id] = prov
        return int(prov_id)

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
            expired = [g for g in self._groups if g.t_max < cutoff]
            if expired:
                self._evict(expired, "ttl")
        if self.settings.eviction != "oldest":
            return
        while self._over_size_limit() and len(self._groups) > 1:
            total = sum(g.n for g in self._groups)
            chunk: list[_Group] = []
            count = 0
            for g in self._groups[:-1]:  # never the group just written
                chunk.append(g)
                count += g.n
                if count >= max(self.settings.commit_rows, total // 20):
                    break
            self._evict(chunk, "size")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _undone_in(self, group: _Group) -> list[int]:
        """Sequence numbers of a group some uplink has not confirmed yet."""
        everyone = self._all_done()
        if covers(everyone, group.first, group.last):
            return []
        return [
            o.sequence
            for o in self._decode_group(group)
            if o.sequence is not None and not contains(everyone, o.sequence)
        ]

    def _evict(self, groups: list[_Group], reason: str) -> None:
        lost: list[int] = []
        for g in groups:
            lost.extend(self._undone_in(g))
        db = self._db
        db.execute("BEGIN")
        now_ms = int(self._clock() * 1000)
        for lo, hi, n in _runs(sorted(lost)):
            db.execute(
                "INSERT INTO gap VALUES(?,?,?,?,?,?)",
                (lo, hi, n, f"evicted:{reason}", now_ms, self._all_bits),
            )
        self._delete_groups(groups)
        self.counters.evicted += len(lost)
        db.execute("INSERT OR REPLACE INTO meta VALUES('evicted', ?)", (self.counters.evicted,))
        db.execute("COMMIT")
        if lost:
            log.warning(
                "outbox evicted unsent observations",
                extra={
                    "event": "outbox_evicted",
                    "reason": reason,
                    "count": len(lost),
                    "first_seq": lost[0],
                    "last_seq": lost[-1],
                    "evicted_total": self.counters.evicted,
                },
            )

    def _delete_groups(self, groups: list[_Group]) -> None:
        """Delete group rows (inside a transaction) and forget confirmations below them."""
        gone = {g.row_id for g in groups}
        self._db.executemany("DELETE FROM grp WHERE id=?", [(r,) for r in gone])
        self._groups = [g for g in self._groups if g.row_id not in gone]
        for r in gone:
            self._decoded.pop(r, None)
        self._db.execute("INSERT OR REPLACE INTO meta VALUES('last_seq', ?)", (self._next_seq - 1,))
        floor = self._groups[0].first if self._groups else self._next_seq
        for name, i in self._index.items():
            trimmed = [(max(a, floor), b) for a, b in self._done[name] if b >= floor]
            if trimmed != self._done[name]:
                self._done[name] = trimmed
                self._write_done(i, trimmed)

    def _write_done(self, index: int, ranges: Ranges) -> None:
        self._db.execute("DELETE FROM done WHERE uplink=?", (index,))
        self._db.executemany("INSERT INTO done VALUES(?,?,?)", [(index, a, b) for a, b in ranges])

    def _all_done(self) -> Ranges:
        names = iter(self.uplinks)
        ranges = self._done[next(names)]
        for name in names:
            ranges = intersect(ranges, self._done[name])
        return ranges

    # ------------------------------------------------------------------ draining
    def depth(self) -> int:
        """Committed observations some uplink has not confirmed, plus the uncommitted group."""
        everyone = self._all_done()
        total = sum(g.n for g in self._groups)
        spans = merge((g.first, g.last) for g in self._groups)
        done = sum(b - a + 1 for a, b in intersect(everyone, spans))
        return max(0, total - done) + len(self._pending)

    def oldest_unsent_ms(self) -> int | None:
        everyone = self._all_done()
        for g in self._groups:
            if not covers(everyone, g.first, g.last):
                return g.t_min
        return None

    def next_batch(self, uplink: str, limit: int) -> Batch:
        """The next observations this uplink has not been handed yet, in the configured drain order."""
        handed = self._handed[uplink]
        top = self._next_seq - 1
        newest_first = self.settings.drain_order == "newest-first"
        gaps = complement(handed, top)
        picked: list[Observation] = []
        spans: Ranges = []
        for lo, hi in reversed(gaps) if newest_first else gaps:
            found = self._pick(lo, hi, limit - len(picked), newest_first)
            if not found:
                spans.append((lo, hi))  # nothing stored there any more
                continue
            seqs = [o.sequence for o in found if o.sequence is not None]
            spans.append((min(seqs), hi) if newest_first else (lo, max(seqs)))
            picked.extend(found)
            if len(picked) >= limit:
                break
        self._handed[uplink] = merge([*handed, *spans])
        picked.sort(key=lambda o: o.sequence or 0)
        return Batch(self.gateway_id, tuple(picked))

    def _pick(self, lo: int, hi: int, limit: int, newest_first: bool) -> list[Observation]:
        """Up to ``limit`` stored observations with sequence in [lo, hi], nearest the chosen end."""
        groups = [g for g in self._groups if g.last >= lo and g.first <= hi]
        if newest_first:
            groups.sort(key=lambda g: -g.last)
        found: list[tuple[int, Observation]] = []
        low, high = sys.maxsize, -1
        for g in groups:
            # groups come in drain order; once enough are found, a group lying wholly beyond
            # what we have cannot contribute
            if len(found) >= limit and (
                (newest_first and g.last < low) or (not newest_first and g.first > high)
            ):
                break
            members = self._decode_group(g)  # ascending by sequence number
            a = bisect.bisect_left(members, lo, key=_seq_of)
            b = bisect.bisect_right(members, hi, key=_seq_of)
            # only the ``limit`` nearest the drain end can matter
            window = (
                members[max(a, b - limit) : b] if newest_first else members[a : min(b, a + limit)]
            )
            if window:
                found.extend((_seq_of(o), o) for o in window)
                low = min(low, _seq_of(window[0]))
                high = max(high, _seq_of(window[-1]))
        found.sort(key=lambda pair: pair[0])
        chosen = found[-limit:] if newest_first else found[:limit]
        return [o for _, o in chosen]

    def rewind(self, uplink: str) -> None:
        """Forget what was handed to this uplink: unconfirmed rows will be handed out again."""
        self._handed[uplink] = list(self._done[uplink])

    def settle(self, uplink: str, delivery: Delivery) -> None:
        """Apply an uplink's report: confirm delivered observations, dead-letter rejected ones."""
        if not delivery.confirmed and not delivery.rejected:
            return
        index = self._index[uplink]
        db = self._db
        db.execute("BEGIN")
        try:
            if delivery.rejected:
                self._dead_letter(uplink, delivery.rejected)
            new_done = [(s, s) for s in delivery.confirmed]
            self._done[uplink] = merge([*self._done[uplink], *new_done])
            self._write_done(index, self._done[uplink])
            for name, i in self._index.items():
                if name != uplink and delivery.rejected:
                    self._write_done(i, self._done[name])
            self._release_confirmed_groups()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._load(db)
            raise
        self.counters.confirmed += len(delivery.confirmed)

    def _dead_letter(self, uplink: str, rejected: dict[int, str]) -> None:
        now_ms = int(self._clock() * 1000)
        wanted = set(rejected)
        for g in self._groups:
            if not wanted:
                break
            if g.last < min(wanted) or g.first > max(wanted):
                continue
            for o in self._decode_group(g):
                if o.sequence in wanted:
                    wanted.discard(o.sequence)
                    self._db.execute(
                        "INSERT OR REPLACE INTO dead_letter VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            o.sequence,
                            self._ds_ids[(o.stream.sensor_id, o.stream.quantity_code)],
                            self._prov_ids[o.provenance],
                            o.phenomenon_ms,
                            None
                            if o.phenomenon_end_ms is None
                            else o.phenomenon_end_ms - o.phenomenon_ms,
                            o.result_ms,
                            o.result,
                            o.raw_result,
                            None if o.quality is None else cbor2.dumps(o.quality.as_dict()),
                            uplink,
                            rejected[o.sequence][:500],
                            now_ms,
                        ),
                    )
        gone = [(s, s) for s in rejected]
        for name in self.uplinks:  # a dead letter is done for everyone
            self._done[name] = merge([*self._done[name], *gone])
        self.counters.dead_lettered += len(rejected)
        self._db.execute(
            "INSERT OR REPLACE INTO meta VALUES('dead_lettered', ?)", (self.counters.dead_lettered,)
        )
        log.error(
            "uplink rejected observations; moved to dead letters",
            extra={
                "event": "dead_letter",
                "uplink": uplink,
                "count": len(rejected),
                "example": next(iter(rejected.values()))[:200],
            },
        )

    def _release_confirmed_groups(self) -> None:
        everyone = self._all_done()
        finished = [g for g in self._groups if covers(everyone, g.first, g.last)]
        if finished:
            self._delete_groups(finished)

    # ------------------------------------------------------------------ gaps and dead letters
    def pending_gaps(self, uplink: str) -> list[tuple[int, int, int, str]]:
        """Evicted ranges this uplink has not reported yet: (first_seq, last_seq, count, reason)."""
        bit = 1 << self._index[uplink]
        return [
            (a, b, n, r)
            for a, b, n, r in self._db.execute(
                "SELECT first_seq, last_seq, count, reason FROM gap WHERE pending & ? ORDER BY first_seq",
                (bit,),
            )
        ]

    def gaps_reported(self, uplink: str, gaps: Iterable[tuple[int, int, int, str]]) -> None:
        bit = 1 << self._index[uplink]
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
        """Move every dead letter back into the outbox, same sequence numbers (fix the twin first)."""
        rows = list(
            self._db.execute(
                "SELECT seq, ds, prov, t, dur, rt, v, raw, q FROM dead_letter ORDER BY seq"
            )
        )
        if not rows:
            return 0
        obs = [
            Observation(
                self._ds_by_id[ds],
                v,
                t,
                self._prov_by_id[prov],
                None if dur is None else t + dur,
                rt,
                raw,
                None if q is None else Quality.from_dict(cbor2.loads(q)),
                seq,
            )
            for seq, ds, prov, t, dur, rt, v, raw, q in rows
        ]
        seqs = [o.sequence for o in obs if o.sequence is not None]
        db = self._db
        db.execute("BEGIN")
        data, t_min, t_max = self._encode_group(obs, seqs)
        cur = db.execute(
            "INSERT INTO grp(first_seq, last_seq, n, t_min, t_max, data) VALUES(?,?,?,?,?,?)",
            (seqs[0], seqs[-1], len(seqs), t_min, t_max, data),
        )
        db.execute("DELETE FROM dead_letter")
        for name, i in self._index.items():
            self._done[name] = subtract(self._done[name], seqs)
            self._write_done(i, self._done[name])
        db.execute("COMMIT")
        assert cur.lastrowid is not None
        bisect.insort(
            self._groups,
            _Group(cur.lastrowid, seqs[0], seqs[-1], len(seqs), t_min, t_max),
            key=lambda g: (g.first, g.row_id),
        )
        for name in self.uplinks:
            self.rewind(name)
        return len(seqs)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Commit what is pending and close the database (clean shutdown)."""
        try:
            self.commit()
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES('last_seq', ?)", (self._next_seq - 1,)
            )
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()


def iter_unsent(path: Path, gateway_id: str | None = None) -> Iterator[Observation]:
    """Read-only iteration over every observation stored in an outbox file (for exports).

    Opens the file read-only, so it is safe while the gateway runs (WAL readers never block
    the writer).
    """
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta"))
        gw = gateway_id or str(meta.get("gateway", ""))
        reader = Outbox.__new__(Outbox)
        reader.gateway_id = gw
        reader._ds_by_id = {
            i: Datastream(gw, s, q)
            for i, s, q in db.execute("SELECT id, sensor, quantity FROM datastream")
        }
        reader._prov_by_id = {
            i: Provenance.from_dict(json.loads(doc))
            for i, doc in db.execute("SELECT id, doc FROM provenance")
        }
        for row_id, first, last, n, t_min, t_max, data in db.execute(
            "SELECT id, first_seq, last_seq, n, t_min, t_max, data FROM grp ORDER BY first_seq"
        ):
            yield from reader._observations_from(_Group(row_id, first, last, n, t_min, t_max), data)
    finally:
        db.close()


def _seq_of(obs: Observation) -> int:
    return obs.sequence or 0


def _runs(seqs: list[int]) -> Iterator[tuple[int, int, int]]:
    """Contiguous runs ``(first, last, count)`` of a sorted list of integers."""
    if not seqs:
        return
    start = prev = seqs[0]
    for s in seqs[1:]:
        if s != prev + 1:
            yield start, prev, prev - start + 1
            start = s
        prev = s
    yield start, prev, prev - start + 1
