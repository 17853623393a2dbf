"""The durable outbox against real SQLite files."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edge.config import BufferSettings
from edge.model import Datastream, Delivery, Observation, Provenance, Quality
from edge.outbox import Outbox, summarize

GW = "gw-test"
PM25 = Datastream(GW, "sds", "pm2_5")
PROV = Provenance("SDS011", "58D9")
T0 = 1_700_000_000_000


def obs(i: int, stream: Datastream = PM25) -> Observation:
    return Observation(stream, 10.0 + i / 10, T0 + i * 1000, PROV)


def make(tmp_path: Path, **kw: object) -> Outbox:
    return Outbox(tmp_path / "outbox.db", BufferSettings(**kw), GW)  # type: ignore[arg-type]


def drain(box: Outbox, uplink: str = "default", limit: int = 1000) -> list[int]:
    seqs: list[int] = []
    while batch := box.next_batch(uplink, limit):
        seqs += batch.sequences
        box.settle(uplink, Delivery(confirmed=batch.sequences))
    return seqs


def test_group_commit_by_rows_and_sequence_survives_restart(tmp_path: Path) -> None:
    box = make(tmp_path, commit_rows=100)
    box.append([obs(i) for i in range(250)])  # two full groups commit at once, 50 wait
    assert box.counters.received == 250 and box.uncommitted == 0  # one append ≥ commit_rows
    box.close()
    box = make(tmp_path)
    assert box.depth() == 250
    seqs = drain(box)
    assert seqs == list(range(1, 251))
    box.append([obs(1)])
    box.commit()
    # confirmed rows are gone, yet numbering continues: never reuse a sequence number
    assert box.next_batch("default", 10).sequences == [251]
    box.close()


def test_a_confirmation_that_empties_memory_is_journaled(tmp_path: Path) -> None:
    """Found by the chaos harness (hil/chaos): when the twin confirmed every group in memory,
    no confirmation record was written, so `outbox stats` on a live gateway counted the whole
    journal as unsent and a restart after kill -9 sent it all again."""
    box = make(tmp_path)
    for round_ in range(3):
        box.append([obs(10 * round_ + i) for i in range(10)])
        box.commit()
        assert drain(box) == list(range(10 * round_ + 1, 10 * round_ + 11))
    assert summarize(tmp_path / "outbox.db", ["default"]).unsent == 0  # read while it runs
    after_kill = make(tmp_path)  # as after kill -9: the first instance never closed
    assert after_kill.next_batch("default", 100).sequences == []
    after_kill.close()


def test_commit_due_after_interval(tmp_path: Path) -> None:
    now = [1000.0]
    box = Outbox(tmp_path / "o.db", BufferSettings(commit_interval_s=1.0), GW, clock=lambda: now[0])
    box.append([obs(0)])
    assert not box.commit_due()
    now[0] += 1.0
    assert box.commit_due()
    assert box.commit() == 1
    box.close()


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    box = make(tmp_path)
    q = Quality()
    q.set("gross_range", 1)
    q.set("spike", 3)
    q.scores["anomaly"] = 0.25
    original = Observation(
        PM25,
        7.5,
        T0,
        Provenance("SDS011", "58D9", "18-11-16", "cal-1", "3"),
        phenomenon_end_ms=T0 + 60_000,
        result_ms=T0 + 61_000,
        raw_result=9.25,
        quality=q,
    )
    box.append([original])
    box.commit()
    (back,) = box.next_batch("default", 10).observations
    assert back == original
    box.close()


def test_multiple_uplinks_delete_only_when_all_confirmed(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", BufferSettings(), GW, uplinks=["mqtt", "http"])
    box.append([obs(i) for i in range(10)])
    box.commit()
    assert drain(box, "mqtt") == list(range(1, 11))
    assert box.depth() == 10
    assert drain(box, "http") == list(range(1, 11))
    assert box.depth() == 0
    box.close()


def test_unconfirmed_rows_are_handed_out_again_after_rewind(tmp_path: Path) -> None:
    box = make(tmp_path)
    box.append([obs(i) for i in range(30)])
    box.commit()
    first = box.next_batch("default", 10)
    second = box.next_batch("default", 10)
    box.settle("default", Delivery(confirmed=second.sequences))
    box.rewind("default")
    again = box.next_batch("default", 100)
    assert again.sequences == first.sequences + list(range(21, 31))
    box.close()


def test_rejected_rows_go_to_dead_letters_and_can_be_requeued(tmp_path: Path) -> None:
    box = make(tmp_path)
    box.append([obs(i) for i in range(5)])
    box.commit()
    batch = box.next_batch("default", 10)
    box.settle("default", Delivery(confirmed=[1, 2, 4, 5], rejected={3: "400: result invalid"}))
    assert box.depth() == 0
    assert box.dead_letters() == [(3, "default", "400: result invalid", box.dead_letters()[0][3])]
    assert box.counters.dead_lettered == 1
    assert box.requeue_dead_letters() == 1
    assert box.next_batch("default", 10).sequences == [3]
    assert len(batch) == 5
    box.close()


def test_newest_first_drain_then_backfill(tmp_path: Path) -> None:
    box = make(tmp_path, drain_order="newest-first")
    box.append([obs(i) for i in range(25)])
    box.commit()
    order = [box.next_batch("default", 10).sequences for _ in range(4)]
    assert order == [list(range(16, 26)), list(range(6, 16)), list(range(1, 6)), []]
    box.append([obs(i) for i in range(3)])
    box.commit()
    assert box.next_batch("default", 10).sequences == [26, 27, 28]
    box.close()


def test_size_limit_evicts_oldest_counts_and_records_gap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = make(tmp_path, max_bytes=1024 * 1024, commit_rows=5000)
    for _ in range(12):
        box.append([obs(i) for i in range(5000)])
    box.commit()
    assert box.size_bytes() <= 1024 * 1024
    evicted = box.counters.evicted
    assert evicted > 0
    assert box.depth() + evicted == 60_000
    remaining = drain(box, limit=100_000)
    assert remaining[0] == evicted + 1  # the oldest went first
    gaps = box.pending_gaps("default")
    assert sum(g[2] for g in gaps) == evicted and gaps[0][0] == 1
    assert any("evicted" in r.message for r in caplog.records)
    box.close()
    assert make(tmp_path).counters.evicted == evicted  # the count survives restarts


def test_newest_policy_refuses_when_full(tmp_path: Path) -> None:
    box = make(tmp_path, max_bytes=1024 * 1024, eviction="newest", commit_rows=5000)
    for _ in range(20):
        box.append([obs(i) for i in range(5000)])
    box.commit()
    assert box.counters.refused > 0
    assert box.counters.evicted == 0
    box.close()


def test_ttl_expires_old_unsent_rows(tmp_path: Path) -> None:
    now = [T0 / 1000 + 10]
    box = Outbox(tmp_path / "o.db", BufferSettings(ttl_s=3600), GW, clock=lambda: now[0])
    box.append([obs(i) for i in range(5)])
    box.commit()
    now[0] += 7200
    box.append([Observation(PM25, 1.0, int(now[0] * 1000), PROV)])
    box.commit()
    assert box.counters.evicted == 5
    assert box.pending_gaps("default")[0][3] == "evicted:ttl"
    box.close()


def test_corrupt_database_is_moved_aside_and_numbering_continues(tmp_path: Path) -> None:
    box = make(tmp_path)
    box.append([obs(i) for i in range(10)])
    box.commit()
    box.close()
    path = tmp_path / "outbox.db"
    with open(path, "r+b") as fh:  # trash the header and a few pages
        fh.write(b"\x13" * 8192)
    box = make(tmp_path)
    assert box.counters.recovered_corrupt == 1
    assert list(tmp_path.glob("outbox.db.corrupt-*"))
    box.append([obs(0)])
    box.commit()
    assert box.next_batch("default", 10).sequences[0] > 10
    box.close()


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from edge.config import BufferSettings
    from edge.model import Datastream, Observation, Provenance
    from edge.outbox import Outbox, summarize
    box = Outbox(Path(sys.argv[1]), BufferSettings(commit_rows=50), "gw-test")
    s = Datastream("gw-test", "sds", "pm2_5"); p = Provenance("SDS011")
    i = 0
    while True:
        box.append([Observation(s, float(i), 1_700_000_000_000 + i, p)])
        i += 1
        if box.counters.received and i % 50 == 0:
            print(box.counters.received, flush=True)  # committed so far
""")


def test_kill_9_loses_at_most_the_uncommitted_group(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True
    )
    reported = 0
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while reported < 20_000 and time.monotonic() < deadline:
        reported = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)
    box = make(tmp_path)
    depth = box.depth()
    assert depth >= reported  # everything reported as committed is there
    seqs = drain(box, limit=100_000)
    assert seqs == list(range(1, depth + 1))  # no holes, no duplicates
    assert sqlite3.connect(path).execute("PRAGMA quick_check").fetchone()[0] == "ok"
    box.close()
