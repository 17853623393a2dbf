"""What the gateway committed, read from its own commit log while it runs.

An observation counts as received by the gateway once its group commit appended one record to
the outbox's journal (``<data_dir>/outbox.db.j<NNNNNN>``, see :mod:`edge.outbox.journal`):
``commit`` returns only after that write. The :class:`JournalTap` follows those files from
outside, like ``tail -f``: it opens every new segment at once and keeps it open, so it reads
a segment to its end even after the gateway deleted it (online, segments are retired within
seconds; a segment lives at least until it is full, ~1 MiB, far longer than the tap's
50 ms poll). Each intact record (CRC-checked with the journal's own parser) is decoded with
the segment's own dictionary and written to the :class:`Ledger`.

Why this is the right "committed": it is independent of everything a fault can damage — the
database, its WAL, the broker, the twin. A power-cut-style WAL loss that rolls back spilled
groups cannot take them out of the ledger, so those sequence numbers must show up at the twin
or inside a gap the gateway announced; a number the gateway reuses shows up as two different
contents under one number. What the tap cannot see: a group committed in the last few
microseconds before a ``kill -9`` whose record the tap had not read yet is still read (the
file outlives the process); a record torn by the kill never validates and was never committed.
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge.outbox.groups import DictEntry, Dictionary, decode_group
from edge.outbox.journal import DICT, GROUP, parse_records
from edge.outbox.ranges import Ranges, merge

POLL_S = 0.05

_SCHEMA = """
CREATE TABLE IF NOT EXISTS commits(
    gw TEXT NOT NULL, seq INTEGER NOT NULL, sensor TEXT NOT NULL, quantity TEXT NOT NULL,
    t INTEGER NOT NULL, result REAL, nonfinite TEXT, run INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS groups(
    gw TEXT NOT NULL, first INTEGER NOT NULL, n INTEGER NOT NULL, digest BLOB NOT NULL,
    run INTEGER NOT NULL);
"""


def nonfinite(value: float) -> str | None:
    """How the twin's store notes a non-finite result (its ``nonfinite`` column)."""
    if math.isfinite(value):
        return None
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


class Ledger:
    """The harness's own record of committed observations (SQLite, one file per scenario)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=OFF")  # the harness's scratch data
        self.db.executescript(_SCHEMA)
        self.lock = threading.Lock()
        self.ranges: dict[str, Ranges] = {}  # committed sequence numbers per gateway
        self.records = 0
        self.unreadable = 0  # records the tap could not decode (reported: never expected)

    def add_group(self, gw: str, run: int, rows: list[tuple[int, str, str, int, float]]) -> None:
        if not rows:
            return
        digest = hashlib.blake2b(
            repr([r[1:] for r in rows]).encode(), digest_size=16
        ).digest()
        with self.lock:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO commits VALUES(?,?,?,?,?,?,?,?)",
                [(gw, seq, sensor, qty, t, value if math.isfinite(value) else None,
                  nonfinite(value), run) for seq, sensor, qty, t, value in rows],
            )
            self.db.execute("INSERT INTO groups VALUES(?,?,?,?,?)",
                            (gw, rows[0][0], len(rows), digest, run))
            self.db.execute("COMMIT")
            known = self.ranges.get(gw, [])
            self.ranges[gw] = merge([*known, *((r[0], r[0]) for r in rows)])
            self.records += 1

    def committed_ranges(self, gw: str) -> Ranges:
        with self.lock:
            return list(self.ranges.get(gw, []))

    def close(self) -> None:
        self.db.close()


@dataclass(slots=True)
class _Segment:
    number: int
    fd: int
    offset: int = 0
    dictionary: Dictionary | None = None
    gone: bool = False  # the gateway deleted it: close once read to its end


@dataclass(slots=True)
class JournalTap:
    """Follows ``<data_dir>/outbox.db.j*`` in a thread and writes commits to the ledger."""

    data_dir: Path
    gateway_id: str
    ledger: Ledger
    outbox_name: str = "outbox.db"
    run: int = 0  # which gateway start the records belong to (diagnostics)
    _open: dict[int, _Segment] = field(default_factory=dict)  # by inode
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _pass_lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> JournalTap:
        self._thread = threading.Thread(target=self._loop, name="journal-tap", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.read_all()
        for seg in self._open.values():
            os.close(seg.fd)
        self._open.clear()

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            self.read_all()

    def read_all(self) -> None:
        """One pass: open new segments, read what was appended, close deleted ones."""
        with self._pass_lock:
            seen = self._discover()
            for inode, seg in list(self._open.items()):
                seg.gone = inode not in seen
                self._read(seg)
                if seg.gone:
                    os.close(seg.fd)
                    del self._open[inode]

    def _discover(self) -> set[int]:
        prefix = self.outbox_name + ".j"
        seen: set[int] = set()
        try:
            entries = list(os.scandir(self.data_dir))
        except OSError:
            return seen
        for entry in entries:
            suffix = entry.name[len(prefix):] if entry.name.startswith(prefix) else ""
            if not suffix.isdigit():
                continue
            try:
                inode = entry.inode()
                if inode not in self._open:
                    fd = os.open(entry.path, os.O_RDONLY)
                    if os.fstat(fd).st_ino != inode:  # replaced between scan and open
                        os.close(fd)
                        continue
                    self._open[inode] = _Segment(int(suffix), fd)
            except FileNotFoundError:
                continue
            seen.add(inode)
        return seen

    def _read(self, seg: _Segment) -> None:
        size = os.fstat(seg.fd).st_size
        if size <= seg.offset:
            return
        base = seg.offset
        data = os.pread(seg.fd, size - base, base)
        for end, kind, payload in parse_records(seg.number, data):
            self._apply(seg, kind, payload)
            seg.offset = base + end

    def _apply(self, seg: _Segment, kind: int, payload: object) -> None:
        if not isinstance(payload, list):
            self.ledger.unreadable += 1
            return
        try:
            if kind == DICT:
                seg.dictionary = Dictionary(self.gateway_id)
                seg.dictionary.learn([_entry(e) for e in payload])
            elif kind == GROUP:
                first, n, data, _t_min, _t_max, _staged, entries = payload
                if seg.dictionary is None:
                    seg.dictionary = Dictionary(self.gateway_id)
                seg.dictionary.learn([_entry(e) for e in entries])
                if n:
                    rows = [(o.sequence or 0, o.stream.sensor_id, o.stream.quantity_code,
                             o.phenomenon_ms, o.result)
                            for o in decode_group(seg.dictionary, first, n, data)]
                    self.ledger.add_group(self.gateway_id, self.run, rows)
        except (KeyError, ValueError, TypeError) as exc:
            self.ledger.unreadable += 1
            if self.ledger.unreadable <= 3:
                print(f"journal tap: unreadable record in segment {seg.number}: {exc!r}")


def _entry(raw: object) -> DictEntry:
    if not isinstance(raw, list) or len(raw) != 4:
        raise ValueError(f"bad dictionary entry {raw!r}")
    return (str(raw[0]), int(raw[1]), str(raw[2]), str(raw[3]))


def wait_quiet(ledger: Ledger, quiet_s: float, timeout: float) -> bool:
    """Wait until no commit was tapped for ``quiet_s`` (False on timeout)."""
    deadline = time.monotonic() + timeout
    last, since = ledger.records, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if ledger.records != last:
            last, since = ledger.records, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return True
    return False
