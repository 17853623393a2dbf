"""The outbox's SQLite file: schema, pragmas, integrity check, moving a bad file aside.

Owns ``<outbox>`` (and its ``-wal``/``-shm``). Every write goes through
:meth:`Store.transaction`, which commits or rolls back — never leaves a transaction open.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("duet.outbox")

SCHEMA_VERSION = 2

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
    data BLOB NOT NULL           -- the group's columns, see edge.outbox.groups
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


class OutboxError(Exception):
    pass


def storage_full(exc: BaseException) -> bool:
    """True for "no space left": SQLite's SQLITE_FULL / an I/O error, or ENOSPC/EDQUOT."""
    if isinstance(exc, sqlite3.Error):
        code = exc.sqlite_errorcode & 0xFF
        return code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class Store:
    """One open outbox database. Not thread-safe (the event loop's thread only)."""

    def __init__(self, path: Path, gateway_id: str, durability: str) -> None:
        self.path = path
        self.gateway_id = gateway_id
        self.durability = durability
        self.db = self._connect()

    # ------------------------------------------------------------------ opening
    def _connect(self) -> sqlite3.Connection:
        if self.path.exists() and self.path.stat().st_size == 0:
            raise OutboxError("zero-length database file")
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=15)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            sync = "FULL" if self.durability == "full" else "NORMAL"
            db.execute(f"PRAGMA synchronous={sync}")
            db.execute("PRAGMA secure_delete=OFF")  # freed pages need not be zeroed: fewer writes
            db.execute("PRAGMA wal_autocheckpoint=1000")
            db.executescript(_SCHEMA)
            self._check(db)
        except BaseException:
            db.close()
            raise
        return db

    def _check(self, db: sqlite3.Connection) -> None:
        result = db.execute("PRAGMA quick_check").fetchone()
        if not result or result[0] != "ok":
            raise OutboxError(f"integrity check failed: {result[0] if result else 'no answer'}")
        version = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if version is None:
            with _tx(db):
                db.execute("INSERT INTO meta VALUES('schema', ?)", (SCHEMA_VERSION,))
                db.execute("INSERT OR IGNORE INTO meta VALUES('gateway', ?)", (self.gateway_id,))
        elif version[0] != SCHEMA_VERSION:
            raise OutboxError(f"schema version {version[0]} not supported")
        owner = db.execute("SELECT value FROM meta WHERE key='gateway'").fetchone()
        if owner is not None and owner[0] != self.gateway_id:
            raise OutboxError(f"outbox belongs to gateway {owner[0]!r}, not {self.gateway_id!r}")

    @classmethod
    def open(cls, path: Path, gateway_id: str, durability: str, now: float) -> tuple[Store, str]:
        """Open (or create) the database; a bad file is moved aside and replaced.

        Returns the store and, when a file was moved aside, where it went ("" otherwise).
        A database locked by another process is never moved aside (the error propagates).
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return cls(path, gateway_id, durability), ""
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc) or storage_full(exc):
                raise  # another process holds it, or no space: never move a good file aside
            reason = str(exc)
        except (sqlite3.DatabaseError, OutboxError) as exc:
            reason = str(exc)
        moved = move_aside(path, reason, now)
        return cls(path, gateway_id, durability), moved

    # ------------------------------------------------------------------ writing
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; any error rolls back and propagates."""
        with _tx(self.db):
            yield self.db

    def meta(self) -> dict[str, object]:
        return dict(self.db.execute("SELECT key, value FROM meta"))

    def size_bytes(self) -> int:
        """Bytes of the database in use (free pages excluded) plus the WAL file."""
        page_size = self.db.execute("PRAGMA page_size").fetchone()[0]
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        try:
            wal = os.path.getsize(str(self.path) + "-wal")
        except OSError:
            wal = 0
        return int((pages - free) * page_size + wal)

    def checkpoint(self) -> None:
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        self.db.close()


@contextmanager
def _tx(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def move_aside(path: Path, reason: str, now: float) -> str:
    """Keep a bad database (with its -wal/-shm) for forensics under a new name; log it."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    moved = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while moved.exists():
        n += 1
        moved = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            os.replace(src, Path(str(moved) + suffix))
    log.error(
        "outbox database unusable, moved aside; continuing on a new one",
        extra={"event": "outbox_corrupt", "reason": reason, "moved_to": str(moved)},
    )
    return str(moved)
