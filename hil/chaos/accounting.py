"""Committed against delivered: the figures every scenario prints.

* **committed**: every (sequence number, content) the gateway's outbox committed, from the
  harness's ledger (:mod:`hil.chaos.tap`), per gateway;
* **delivered**: committed observations the twin's store holds under the same
  (gateway, sequence) *with the same content* (sensor, quantity, phenomenon time, result);
* **gaps**: committed, not delivered, inside a gap the gateway announced to the twin (table
  ``gap`` of the store), per reason — "will never come", said out loud;
* **refused**: committed, not delivered, inside ranges the twin dead-lettered (``x`` acks);
* **lost**: committed, not delivered, and neither announced nor refused — silent loss. A
  number the twin holds with *other* content (a reused number: the twin kept the first and
  dropped the second as a duplicate) is a **conflict** and counts as lost;
* **duplicated**: one observation stored twice at the twin: two rows under one
  (gateway, sequence), or one committed group stored again under other numbers (the gateway
  committed the same data twice).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from edge.outbox.ranges import Ranges, complement, intersect, merge

_SAME = """(s.sensor = c.sensor AND s.quantity = c.quantity AND o.phenomenon_ms = c.t AND
    CASE WHEN c.result IS NULL
         THEN o.result IS NULL AND coalesce(o.nonfinite, '') = coalesce(c.nonfinite, '')
         ELSE o.result IS NOT NULL AND abs(o.result - c.result) <= 2e-6 * max(1.0, abs(c.result))
    END)"""


@dataclass(slots=True)
class Tally:
    gateway: str
    committed: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    conflicts: int = 0
    refused: int = 0
    gap_covered: dict[str, int] = field(default_factory=dict)  # reason -> committed obs
    gaps_announced: dict[str, int] = field(default_factory=dict)  # reason -> ranges at the twin
    untapped: int = 0  # twin rows the ledger never saw committed (a blind spot of the tap)
    lost_examples: list[int] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.conflicts == 0

    def as_dict(self) -> dict[str, object]:
        return {
            "gateway": self.gateway, "committed": self.committed, "delivered": self.delivered,
            "lost": self.lost, "duplicated": self.duplicated, "conflicts": self.conflicts,
            "refused": self.refused, "gap_covered": self.gap_covered,
            "gaps_announced": self.gaps_announced, "untapped": self.untapped,
            "lost_examples": self.lost_examples,
        }


@contextmanager
def _twin(path: Path) -> Iterator[sqlite3.Connection | None]:
    if not path.exists():
        yield None
        return
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        yield db
    finally:
        db.close()


def _has_tables(db: sqlite3.Connection, schema: str = "main") -> bool:
    names = {r[0] for r in db.execute(f"SELECT name FROM {schema}.sqlite_master")}
    return {"observation", "gap", "dead_letter", "gateway", "stream"} <= names


def _gateway_id(db: sqlite3.Connection, gw: str, schema: str = "main") -> int:
    """The twin store's number for a gateway name (-1 when it never stored anything)."""
    row = db.execute(f"SELECT id FROM {schema}.gateway WHERE name=?", (gw,)).fetchone()
    return -1 if row is None else int(row[0])


def twin_held(twin: Path, gw: str) -> Ranges:
    """Sequence ranges the twin holds for ``gw`` or will never get (announced gaps, refused)."""
    with _twin(twin) as db:
        if db is None or not _has_tables(db):
            return []
        gid = _gateway_id(db, gw)
        held = list(db.execute(
            "SELECT min(seq), max(seq) FROM (SELECT seq, seq - row_number() OVER (ORDER BY seq)"
            " AS g FROM observation WHERE gateway_id=?) GROUP BY g", (gid,)))
        held += db.execute("SELECT first_seq, last_seq FROM gap WHERE gateway_id=?", (gid,))
        held += _refused_ranges(db, gw)
    return merge((int(a), int(b)) for a, b in held)


def outstanding(committed: Ranges, twin: Path, gw: str) -> int:
    """Committed numbers the twin neither holds nor was told will never come."""
    if not committed:
        return 0
    top = committed[-1][1]
    missing = intersect(committed, complement(twin_held(twin, gw), top))
    return sum(b - a + 1 for a, b in missing)


def _refused_ranges(db: sqlite3.Connection, gw: str, schema: str = "main") -> Ranges:
    out: Ranges = []
    for first, last in db.execute(
        f"SELECT first_seq, last_seq FROM {schema}.dead_letter WHERE gateway=?"
        " AND first_seq IS NOT NULL AND last_seq IS NOT NULL", (gw,)
    ):
        out.append((int(first), int(last)))
    return merge(out)


def tally(ledger: Path, twin: Path, gw: str) -> Tally:
    """The figures of one gateway (run after the scenario ended and the tap stopped)."""
    result = Tally(gw)
    db = sqlite3.connect(f"file:{ledger}", uri=True)
    try:
        db.execute("CREATE TEMP TABLE c AS SELECT DISTINCT seq, sensor, quantity, t, result,"
                   " nonfinite FROM commits WHERE gw=?", (gw,))
        db.execute("CREATE INDEX temp.c_seq ON c(seq)")
        result.committed = db.execute("SELECT count(*) FROM temp.c").fetchone()[0]
        twin_ok = twin.exists()
        if twin_ok:
            db.execute("ATTACH ? AS twin", (f"file:{twin}?mode=ro",))
            twin_ok = _has_tables(db, "twin")
        if not twin_ok:
            missing = [r[0] for r in db.execute("SELECT seq FROM temp.c ORDER BY seq")]
            _classify(result, missing, [], [])
            return result
        gid = _gateway_id(db, gw, "twin")
        delivered, conflicts = db.execute(
            f"SELECT coalesce(sum({_SAME}), 0), coalesce(sum(NOT {_SAME}), 0) FROM temp.c c"
            " JOIN twin.observation o ON o.gateway_id=? AND o.seq=c.seq"
            " JOIN twin.stream s ON s.id=o.stream_id", (gid,)).fetchone()
        result.delivered, result.conflicts = int(delivered), int(conflicts)
        missing = [r[0] for r in db.execute(
            "SELECT c.seq FROM temp.c c WHERE NOT EXISTS (SELECT 1 FROM twin.observation o"
            " WHERE o.gateway_id=? AND o.seq=c.seq) ORDER BY c.seq", (gid,))]
        gaps = [(int(a), int(b), str(r)) for a, b, r in db.execute(
            "SELECT first_seq, last_seq, reason FROM twin.gap WHERE gateway_id=?", (gid,))]
        _classify(result, missing, gaps, _refused_ranges(db, gw, "twin"))
        result.lost += result.conflicts
        result.duplicated = _duplicated(db, gw, gid)
        result.untapped = db.execute(
            "SELECT count(*) FROM twin.observation o WHERE o.gateway_id=? AND NOT EXISTS"
            " (SELECT 1 FROM temp.c c WHERE c.seq=o.seq)", (gid,)).fetchone()[0]
        for (reason,) in db.execute("SELECT reason FROM twin.gap WHERE gateway_id=?", (gid,)):
            result.gaps_announced[reason] = result.gaps_announced.get(reason, 0) + 1
    finally:
        db.close()
    return result


def _classify(result: Tally, missing: list[int], gaps: list[tuple[int, int, str]],
              refused: Ranges) -> None:
    """Sort committed numbers the twin lacks into refused, announced (by reason) and lost."""
    for seq in missing:
        if any(a <= seq <= b for a, b in refused):
            result.refused += 1
            continue
        reason = next((r for a, b, r in gaps if a <= seq <= b), None)
        if reason is None:
            result.lost += 1
            if len(result.lost_examples) < 10:
                result.lost_examples.append(seq)
        else:
            result.gap_covered[reason] = result.gap_covered.get(reason, 0) + 1


def _duplicated(db: sqlite3.Connection, gw: str, gid: int) -> int:
    """Rows stored twice: under one key, or a whole group committed again under other numbers."""
    same_key = db.execute(
        "SELECT count(*) - count(DISTINCT seq) FROM twin.observation WHERE gateway_id=?", (gid,)
    ).fetchone()[0]
    again = 0
    copies = db.execute(
        "SELECT digest, group_concat(first || ':' || n) FROM groups WHERE gw=? GROUP BY digest"
        " HAVING count(DISTINCT first) > 1", (gw,)).fetchall()
    for _digest, spans in copies:
        stored = []
        for span in sorted(set(str(spans).split(","))):
            first, n = (int(x) for x in span.split(":"))
            stored.append(db.execute(
                "SELECT count(*) FROM twin.observation WHERE gateway_id=? AND seq BETWEEN ? AND ?",
                (gid, first, first + n - 1)).fetchone()[0])
        again += sum(stored) - max(stored)
    return int(same_key) + again
