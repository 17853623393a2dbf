"""The campaign's accounting on hand-made data: a real ledger and a real twin store holding
one example of every outcome, so a harness that could not see a loss would fail here."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from edge.contract import decode_batch, encode_batch
from edge.ingest.rows import from_decoded
from edge.ingest.sqlite_store import SqliteStore
from edge.ingest.store import Rejection
from edge.model import Batch, Datastream, Observation, Provenance
from hil.chaos.accounting import outstanding, tally
from hil.chaos.tap import Ledger

GW = "gw-acct"
PM = Datastream(GW, "sds0", "pm2_5")
T0 = int(time.time() * 1000) - 60_000


def row(seq: int, value: float) -> tuple[int, str, str, int, float]:
    return (seq, "sds0", "pm2_5", T0 + seq, value)


def store(twin: SqliteStore, rows: list[tuple[int, str, str, int, float]],
          gaps: list[tuple[int, int, int, str]] | None = None) -> None:
    batch = Batch(GW, tuple(Observation(PM, v, t, Provenance("SDS011"), sequence=s)
                            for s, _sensor, _q, t, v in rows))
    decoded = from_decoded(decode_batch(encode_batch(batch, gaps or [])))
    asyncio.run(twin.store_batches([decoded], int(time.time() * 1000)))


def open_twin(path: Path) -> SqliteStore:
    twin = SqliteStore(path)
    asyncio.run(twin.open())
    return twin


def test_every_outcome_is_counted_where_it_belongs(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    for first in range(1, 11, 2):  # 1..10 in groups of two, distinct values
        ledger.add_group(GW, 0, [row(first, first * 1.5), row(first + 1, first * 1.5 + 0.5)])
    ledger.add_group(GW, 1, [row(11, 7.0), row(12, 8.0)])
    # the same two observations committed again under other numbers (a re-commit)
    ledger.add_group(GW, 1, [(13, "sds0", "pm2_5", T0 + 11, 7.0),
                             (14, "sds0", "pm2_5", T0 + 12, 8.0)])
    ledger.add_group(GW, 1, [row(15, 2.0)])
    twin = open_twin(tmp_path / "twin.db")
    store(twin, [row(s, s * 1.5 if s % 2 else (s - 1) * 1.5 + 0.5) for s in (1, 2, 3, 4, 5, 6, 8)])
    store(twin, [row(7, 99.0)])  # number 7 held with other content: a reused number
    store(twin, [row(11, 7.0), row(12, 8.0), (13, "sds0", "pm2_5", T0 + 11, 7.0),
                 (14, "sds0", "pm2_5", T0 + 12, 8.0)],
          gaps=[(9, 9, -1, "restart:unclean")])
    asyncio.run(twin.reject(Rejection("duet/v1/gw-acct/obs", "bad", b"", GW, 15, 15), 0))
    asyncio.run(twin.close())

    t = tally(ledger.path, tmp_path / "twin.db", GW)
    assert t.committed == 15
    assert t.delivered == 11  # 1-6, 8, 11-14
    assert t.conflicts == 1  # 7
    assert t.gap_covered == {"restart:unclean": 1}  # 9
    assert t.refused == 1  # 15
    assert t.lost == 2 and t.lost_examples == [10]  # 10, and the conflict
    assert t.duplicated == 2  # 13, 14 repeat 11, 12
    assert t.gaps_announced == {"restart:unclean": 1}
    assert not t.clean
    # while running: 10 is neither held nor announced (7 is held, if wrongly)
    assert outstanding(ledger.committed_ranges(GW), tmp_path / "twin.db", GW) == 1


def test_nothing_at_the_twin_is_all_lost(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.add_group(GW, 0, [row(1, 1.0), row(2, 2.0)])
    t = tally(ledger.path, tmp_path / "no-twin.db", GW)
    assert (t.committed, t.delivered, t.lost) == (2, 0, 2)


def test_implausible_rows_at_the_twin_are_found(tmp_path: Path) -> None:
    """What the poison scenario checks besides the healthy gateway's rate (issue 12 item 6)."""
    import sqlite3

    from hil.chaos.scenarios import twin_implausible

    asyncio.run(open_twin(tmp_path / "twin.db").close())
    db = sqlite3.connect(tmp_path / "twin.db")
    row = "INSERT INTO observation VALUES(1,?,1,?,NULL,NULL,?,NULL,NULL,NULL,NULL,NULL,NULL)"
    db.execute(row, (-7, T0, 1.0))  # sequence -7
    db.execute(row, (1, -1_009_843_200_000, 1.0))  # 1938
    db.execute(row, (2, T0, float("inf")))  # what a store must keep as NULL + note
    db.execute(row, (3, T0, 12.5))  # fine
    db.commit()
    assert twin_implausible(tmp_path / "twin.db") == 3


def test_a_used_workdir_is_refused(tmp_path: Path) -> None:
    """A scenario must never find the stores and ledgers of an earlier run."""
    import subprocess
    import sys

    (tmp_path / "gateway-kill").mkdir()
    done = subprocess.run([sys.executable, "-m", "hil.chaos", "--short", "--workdir",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().endswith("is not empty: give a new or empty folder")
    assert len(done.stderr.strip().splitlines()) == 1
