"""What each durability mode promises, proven by killing and damaging real outbox files.

A child process commits observations at a steady pace and reports every committed sequence
number on stdout; the test then kills it with SIGKILL and, to simulate a power cut, throws away
what was never made durable (WAL damage, journal cut back to its last fdatasync'd length).
After reopening: nothing reported committed is lost where the mode promises it, no sequence
number is ever handed out twice, and every number that may have been lost is announced as a gap.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edge.config import BufferSettings
from edge.model import Datastream, Delivery, Observation, Provenance
from edge.outbox import Outbox

GW = "gw-test"
PM25 = Datastream(GW, "sds", "pm2_5")
PROV = Provenance("SDS011", "58D9")
T0 = 1_700_000_000_000

pytestmark = pytest.mark.timeout(120)


def obs(i: int) -> Observation:
    return Observation(PM25, 10.0 + i / 10, T0 + i * 1000, PROV)


def drain(box: Outbox, limit: int = 100_000) -> list[int]:
    seqs: list[int] = []
    while batch := box.next_batch("default", limit):
        seqs += batch.sequences
        box.settle("default", Delivery(confirmed=batch.sequences))
    return seqs


# The child commits 20 observations every 20 ms (a fast gateway), ticks like the runtime's
# committer, and prints the highest committed sequence number after each commit. With
# FSYNC_LOG set it records, for every fdatasync of a journal segment, the length made durable.
CHILD = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from edge.config import BufferSettings
    from edge.model import Datastream, Observation, Provenance
    from edge.outbox import Outbox

    if os.environ.get("SEGMENT_BYTES"):  # small journal segments: retired within seconds
        import edge.outbox.journal
        edge.outbox.journal.SEGMENT_BYTES = int(os.environ["SEGMENT_BYTES"])
    log_path = os.environ.get("FSYNC_LOG")
    if log_path:  # note, at every fdatasync, how far each journal file has been written
        real_sync, real_pwrite = os.fdatasync, os.pwrite
        written = {}
        log = open(log_path, "a")
        def name(fd):
            return os.readlink(f"/proc/self/fd/{fd}")
        def pwrite(fd, data, offset):
            n = real_pwrite(fd, data, offset)
            written[name(fd)] = max(written.get(name(fd), 0), offset + n)
            return n
        def fdatasync(fd):
            real_sync(fd)
            log.write(json.dumps([name(fd), written.get(name(fd), 0)]) + "\\n")
            log.flush()
        os.pwrite, os.fdatasync = pwrite, fdatasync
    settings = BufferSettings(**json.loads(sys.argv[2]))
    box = Outbox(Path(sys.argv[1]), settings, "gw-test")
    s = Datastream("gw-test", "sds", "pm2_5"); p = Provenance("SDS011")
    i = 0
    while True:
        box.append([Observation(s, float(i + k), 1_700_000_000_000 + i + k, p) for k in range(20)])
        i += 20
        box.commit()
        box.tick()
        print(i, flush=True)
        time.sleep(0.02)
""")


def run_child(path: Path, settings: dict[str, object], committed: int,
              fsync_log: Path | None = None, segment_bytes: int | None = None) -> int:
    """Start the child, wait until it reports ``committed`` observations, SIGKILL it."""
    env = dict(os.environ)
    if fsync_log is not None:
        env["FSYNC_LOG"] = str(fsync_log)
    if segment_bytes is not None:
        env["SEGMENT_BYTES"] = str(segment_bytes)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), json.dumps(settings)],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stdout is not None
    reported = 0
    deadline = time.monotonic() + 60
    while reported < committed and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        reported = int(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)
    assert reported >= committed, "the child did not commit in time"
    return reported


def journal_files(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".j*"))


@pytest.mark.parametrize("durability", ["normal", "full"])
def test_kill_9_loses_nothing_committed(tmp_path: Path, durability: str) -> None:
    path = tmp_path / "outbox.db"
    # spill quickly so the killed process has data in both the database and the journal
    reported = run_child(path, {"durability": durability, "spill_after_s": 0.3}, 3000)
    box = Outbox(path, BufferSettings(durability=durability), GW)
    seqs = drain(box)
    assert seqs[: reported] == list(range(1, reported + 1))  # all there, in order, once
    assert len(seqs) == len(set(seqs))
    # the stop was unclean: numbering jumps past the reserved block, and the jump is announced
    (gap,) = box.pending_gaps("default")
    assert gap[0] == seqs[-1] + 1 and gap[3] == "restart:unclean" and gap[2] == -1
    box.append([obs(0)])
    box.commit()
    assert box.next_batch("default", 10).sequences == [gap[1] + 1]
    box.close()


@pytest.mark.parametrize("damage", ["truncate", "scribble", "delete"])
def test_wal_damage_never_reuses_a_sequence_number(tmp_path: Path, damage: str) -> None:
    """Issue 12 item 2: a power cut that loses WAL frames rolls the database back."""
    path = tmp_path / "outbox.db"
    reported = run_child(path, {"spill_after_s": 0.05, "commit_rows": 20}, 4000)
    wal = Path(str(path) + "-wal")
    assert wal.exists() and wal.stat().st_size > 0
    if damage == "truncate":
        os.truncate(wal, wal.stat().st_size // 3)
    elif damage == "scribble":
        with open(wal, "r+b") as fh:
            fh.seek(32)
            fh.write(os.urandom(wal.stat().st_size - 64))
    else:
        wal.unlink()
    for j in journal_files(path):  # the same power cut took the un-synced journal too
        j.unlink()
    box = Outbox(path, BufferSettings(), GW)
    held = drain(box)
    assert len(held) == len(set(held))
    gaps = box.pending_gaps("default")
    assert [g[3] for g in gaps] == ["restart:unclean"]
    first, last, count, _ = gaps[0]
    assert count == -1 and first == (max(held) + 1 if held else 1)
    assert last >= reported  # every number that may have been handed out is covered
    box.append([obs(i) for i in range(5)])
    box.commit()
    new = box.next_batch("default", 10).sequences
    assert min(new) > reported  # never below a number already handed out
    box.close()


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.7])
def test_wal_loss_below_a_surviving_journal_is_announced(tmp_path: Path, keep: float) -> None:
    """Found by the chaos harness (hil/chaos): groups spilled to the database whose journal
    segments were already deleted live only in the WAL. A power cut that takes those WAL
    frames while a later group survives in the journal left a hole below the highest number
    held, and the restart gap started above it: silent loss. Every number is now held or
    inside an announced gap."""
    path = tmp_path / "outbox.db"
    reported = run_child(path, {"spill_after_s": 0.05, "commit_rows": 20}, 3000,
                         segment_bytes=16 * 1024)
    wal = Path(str(path) + "-wal")
    os.truncate(wal, int(wal.stat().st_size * keep))
    assert journal_files(path), "the journal (page cache) survived the power cut"
    box = Outbox(path, BufferSettings(), GW)
    held = set(drain(box))
    assert len(held & set(range(1, reported + 1))) < reported  # the cut did lose something
    gaps = box.pending_gaps("default")
    assert {g[3] for g in gaps} == {"restart:unclean"}
    silent = [s for s in range(1, reported + 1)
              if s not in held and not any(a <= s <= b for a, b, _n, _r in gaps)]
    assert silent == []
    box.close()


def test_staged_state_never_goes_back_after_restarts_with_full_durability(tmp_path: Path) -> None:
    """Found while building the chaos campaign (hil/chaos): with ``durability = "full"`` a
    restart reused the recycled journal segment under its old number, and its stale records
    replayed after the new ones — a source's staged state (a node's last acknowledged batch)
    went back."""
    settings = BufferSettings(durability="full")

    def life(values: list[str]) -> Outbox:  # a process that is killed: never closed
        box = Outbox(tmp_path / "outbox.db", settings, GW)
        for i, value in enumerate(values):
            box.stage_state("node-mark", value)
            box.append([obs(i)])
            box.commit()
        return box

    life(["1", "2", "3", "4", "5"])
    assert life(["6"]).state("node-mark") == "6"
    assert life([]).state("node-mark") == "6"


def cut_to_fsynced(path: Path, fsync_log: Path) -> None:
    """A power cut: each journal segment keeps only what an fdatasync made durable; what
    follows is lost (zeros) with a half-written sector of garbage at its start."""
    synced: dict[str, int] = {}
    if fsync_log.exists():
        for line in fsync_log.read_text().splitlines():
            name, length = json.loads(line)
            synced[name] = max(synced.get(name, 0), length)
    for seg in journal_files(path):
        keep = synced.get(str(seg), 0)
        size = seg.stat().st_size
        with open(seg, "r+b") as fh:
            fh.seek(keep)
            fh.write(bytes(max(size - keep, 0)))
            fh.seek(keep)
            fh.write(os.urandom(300))


def test_power_cut_full_durability_keeps_every_committed_observation(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    fsync_log = tmp_path / "fsyncs.jsonl"
    # a long spill window: everything stays in the journal, which alone must carry it
    reported = run_child(path, {"durability": "full", "spill_after_s": 600}, 2000, fsync_log)
    cut_to_fsynced(path, fsync_log)
    box = Outbox(path, BufferSettings(durability="full"), GW)
    seqs = drain(box)
    assert seqs[:reported] == list(range(1, reported + 1))
    (gap,) = box.pending_gaps("default")
    assert gap[3] == "restart:unclean" and gap[0] == seqs[-1] + 1
    box.close()


def test_power_cut_normal_durability_loses_only_unsynced_and_announces_it(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    fsync_log = tmp_path / "fsyncs.jsonl"
    reported = run_child(path, {"durability": "normal", "spill_after_s": 600}, 2000, fsync_log)
    cut_to_fsynced(path, fsync_log)  # normal mode never fdatasyncs the journal: all of it goes
    assert not fsync_log.exists() or "outbox.db.j" not in fsync_log.read_text()
    box = Outbox(path, BufferSettings(), GW)
    assert drain(box) == []
    (gap,) = box.pending_gaps("default")
    assert gap[:2] == (1, gap[1]) and gap[1] >= reported and gap[3] == "restart:unclean"
    box.append([obs(0)])
    box.commit()
    assert box.next_batch("default", 1).sequences[0] > reported
    box.close()


def test_clean_close_continues_numbering_without_a_gap(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", BufferSettings(), GW)
    box.append([obs(i) for i in range(7)])
    box.commit()
    box.close()
    seq = json.loads((tmp_path / "o.db.seq").read_text())
    assert seq["clean"] == 7
    box = Outbox(tmp_path / "o.db", BufferSettings(), GW)
    assert box.pending_gaps("default") == []
    box.append([obs(7)])
    box.commit()
    assert box.next_batch("default", 10).sequences == list(range(1, 9))
    box.close()


def test_zero_length_outbox_is_moved_aside_and_its_backlog_announced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path, BufferSettings(), GW)
    box.append([obs(i) for i in range(30)])
    box.commit()
    box.settle("default", Delivery(confirmed=list(range(1, 11))))
    box.close()  # 11..30 unsent
    path.write_bytes(b"")  # an SD card that lost the file's contents
    with caplog.at_level(logging.ERROR, logger="duet.outbox"):
        box = Outbox(path, BufferSettings(), GW)
    moved = list(tmp_path.glob("outbox.db.corrupt-*"))
    assert len(moved) == 1 and moved[0].stat().st_size == 0  # the forensic copy
    events = [r for r in caplog.records if getattr(r, "event", "") == "outbox_corrupt"]
    assert events and getattr(events[0], "moved_to", "") == str(moved[0])
    assert box.counters.recovered_corrupt == 1
    gaps = box.pending_gaps("default")
    assert [g[3] for g in gaps] == ["moved-aside:corrupt"]
    assert gaps[0][0] <= 11 and gaps[0][1] >= 30 and gaps[0][2] == -1  # the lost backlog
    box.append([obs(0)])
    box.commit()
    assert box.next_batch("default", 10).sequences[0] > gaps[0][1]  # and the jump after it
    box.close()


def test_corrupt_database_keeps_what_the_journal_holds(tmp_path: Path) -> None:
    """A database moved aside loses its backlog; groups still in the journal survive."""
    path = tmp_path / "outbox.db"
    reported = run_child(path, {"spill_after_s": 600}, 400)
    for damaged in (path, Path(str(path) + "-wal")):
        with open(damaged, "r+b") as fh:
            fh.write(b"\x13" * 4096)
    box = Outbox(path, BufferSettings(), GW)
    assert box.counters.recovered_corrupt == 1
    assert drain(box)[:reported] == list(range(1, reported + 1))
    gaps = box.pending_gaps("default")
    assert gaps and all(g[3] == "moved-aside:corrupt" and g[0] > reported for g in gaps)
    box.close()


def test_confirmed_within_the_window_never_reaches_the_database(tmp_path: Path) -> None:
    now = [0.0]
    box = Outbox(tmp_path / "o.db", BufferSettings(spill_after_s=5), GW, monotonic=lambda: now[0])
    for i in range(10):
        box.append([obs(i)])
        box.commit()
        box.settle("default", Delivery(confirmed=box.next_batch("default", 10).sequences))
        now[0] += 1
        box.tick()
    assert box.counters.spilled == 0
    box.append([obs(10), obs(11)])
    box.commit()
    box.next_batch("default", 10)  # handed out, never confirmed (the twin is away)
    now[0] += 5
    box.tick()
    assert box.counters.spilled == 2
    box.close()
    box = Outbox(tmp_path / "o.db", BufferSettings(), GW)
    assert box.next_batch("default", 10).sequences == [11, 12]
    box.close()


def test_failed_commit_keeps_the_pending_group(tmp_path: Path) -> None:
    """Issue 12 item 4: commit() must not drop the group before its write succeeded."""
    box = Outbox(tmp_path / "o.db", BufferSettings(), GW)
    box.append([obs(i) for i in range(3)])
    real = os.pwrite

    def full(fd: int, data: object, offset: int) -> int:
        raise OSError(28, "No space left on device")

    os.pwrite = full
    try:
        assert box.commit() == 0
    finally:
        os.pwrite = real
    assert box.uncommitted == 3 and box.counters.disk_full == 1
    assert box.commit() == 3
    assert box.next_batch("default", 10).sequences == [1, 2, 3]
    box.close()


def _trigger(path: Path, sql: str) -> None:
    """A second connection installs (or drops) a trigger: a write the outbox cannot do."""
    import sqlite3

    db = sqlite3.connect(path)
    db.execute(sql)
    db.commit()
    db.close()


def rows(path: Path) -> int:
    import sqlite3

    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM grp").fetchone()[0])
    finally:
        db.close()


def test_every_write_path_rolls_back_and_recovers(tmp_path: Path) -> None:
    """Issue 12 item 4: a failing transaction leaves neither an open transaction nor
    in-memory bookkeeping that disagrees with the file; the next attempt succeeds."""
    path = tmp_path / "o.db"
    now = [0.0]
    box = Outbox(path, BufferSettings(spill_after_s=1), GW, monotonic=lambda: now[0])
    box.append([obs(i) for i in range(10)])
    box.commit()
    box.next_batch("default", 100)
    # spill refused by the database: kept in memory (and journal), retried later
    _trigger(path, "CREATE TRIGGER no_ins BEFORE INSERT ON grp BEGIN "
                   "SELECT RAISE(ABORT, 'refused'); END")
    now[0] += 2
    box.tick()
    assert box.counters.spilled == 0 and box.depth() == 10
    _trigger(path, "DROP TRIGGER no_ins")
    now[0] += 2
    box.tick()
    assert box.counters.spilled == 10
    # deleting confirmed rows refused: confirmations roll back too, rows stay pending
    _trigger(path, "CREATE TRIGGER no_del BEFORE DELETE ON grp BEGIN "
                   "SELECT RAISE(ABORT, 'refused'); END")
    box.settle("default", Delivery(confirmed=list(range(1, 11))))
    assert box.depth() == 0  # confirmed is confirmed...
    assert rows(path) == 1  # ...but the row could not go yet
    _trigger(path, "DROP TRIGGER no_del")
    now[0] += 2
    box.tick()  # tried again
    assert rows(path) == 0 and box.depth() == 0
    # dead letters: a refused transaction raises, nothing half-done
    box.append([obs(i) for i in range(3)])
    box.commit()
    batch = box.next_batch("default", 10)
    _trigger(path, "CREATE TRIGGER no_dead BEFORE INSERT ON dead_letter BEGIN "
                   "SELECT RAISE(ABORT, 'refused'); END")
    with pytest.raises(Exception, match="refused"):
        box.settle("default", Delivery(rejected={batch.sequences[0]: "bad"}))
    assert box.dead_letters() == [] and box.depth() == 3
    _trigger(path, "DROP TRIGGER no_dead")
    box.settle("default", Delivery(confirmed=batch.sequences[1:],
                                   rejected={batch.sequences[0]: "bad"}))
    assert box.depth() == 0 and len(box.dead_letters()) == 1
    # requeue refused: the dead letter stays where it was
    _trigger(path, "CREATE TRIGGER no_ins2 BEFORE INSERT ON grp BEGIN "
                   "SELECT RAISE(ABORT, 'refused'); END")
    with pytest.raises(Exception, match="refused"):
        box.requeue_dead_letters()
    assert len(box.dead_letters()) == 1 and box.depth() == 0
    _trigger(path, "DROP TRIGGER no_ins2")
    assert box.requeue_dead_letters() == 1 and box.depth() == 1
    # gaps reported: a refused update keeps them pending, no exception escapes
    box.close()
    box = Outbox(path, BufferSettings(), GW)
    box.append([obs(0)])
    box.commit()
    box.close()
    (tmp_path / "o.db.seq").write_text("garbage")  # forces an unclean restart: one gap
    box = Outbox(path, BufferSettings(), GW)
    gaps = box.pending_gaps("default")
    assert gaps
    _trigger(path, "CREATE TRIGGER no_upd BEFORE UPDATE ON gap BEGIN "
                   "SELECT RAISE(ABORT, 'refused'); END")
    box.gaps_reported("default", gaps)
    assert box.pending_gaps("default") == gaps
    _trigger(path, "DROP TRIGGER no_upd")
    box.gaps_reported("default", gaps)
    assert box.pending_gaps("default") == []
    box.close()
