"""The outbox facade: the only owner of the gateway's durable data, behind one small API.

Life of an observation (docs/architecture.md "The outbox"):

1. ``append`` queues it for the next group commit (at most ``commit_interval_s`` or
   ``commit_rows``, whichever comes first);
2. ``commit`` gives the group its sequence numbers (reserved in ``<outbox>.seq``) and appends
   it as one record to the journal (``fdatasync`` with ``durability = "full"``). From here it
   counts as received. The group stays in memory;
3. uplinks take it with ``next_batch`` and report with ``settle``. Confirmed by every uplink
   within ``spill_after_s``, it is dropped from memory and never written anywhere else;
4. otherwise it is **spilled**: every unconfirmed group in memory goes to the SQLite database
   in one transaction (a large group commit), and journal segments nobody needs are deleted.

Parts, one job each: :mod:`.sequence` (numbering, clean marker), :mod:`.schema` (the SQLite
file), :mod:`.groups` (group records, dictionary), :mod:`.journal` (segments),
:mod:`.confirmations` (per-uplink ranges), :mod:`.gaps`, :mod:`.dead_letters`,
:mod:`.eviction` (policy, free space), :mod:`.reader` (batches, depth, exports).
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge.model import Batch, Delivery, Observation
from edge.outbox import reader
from edge.outbox.confirmations import Confirmations
from edge.outbox.dead_letters import DeadLetters
from edge.outbox.eviction import DiskGuard, expired, oldest_chunk
from edge.outbox.gaps import Gap, Gaps
from edge.outbox.groups import DictEntry, Dictionary, Group, GroupRows, decode_group, encode_group
from edge.outbox.journal import DICT, GROUP, SETTLE, STATE, Journal
from edge.outbox.ranges import (
    Ranges,
    complement,
    contains,
    covers,
    intersect,
    merge,
    runs,
    subtract,
)
from edge.outbox.schema import OutboxError, Store, storage_full
from edge.outbox.sequence import Resume, SeqFile

if TYPE_CHECKING:
    from edge.config import BufferSettings

log = logging.getLogger("duet.outbox")

StateValue = str | bytes
RETRY_S = 1.0  # after a failed write (disk full), try again at most this often


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
    spilled: int = 0  # observations written to the database (not confirmed within the window)
    disk_full: int = 0  # episodes of a full disk (free space under the reserve, or a failed write)


class Outbox:
    """Journal + SQLite outbox. Not thread-safe: use it from one thread (the event loop)."""

    def __init__(
        self,
        path: Path,
        settings: BufferSettings,
        gateway_id: str,
        uplinks: Sequence[str] = ("default",),
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= len(uplinks) <= 30:
            raise ValueError("between 1 and 30 uplinks")
        self.path = Path(path)
        self.settings = settings
        self.gateway_id = gateway_id
        self.uplinks = list(uplinks)
        self._clock = clock
        self._mono = monotonic
        self.counters = OutboxCounters()
        self.on_commit: list[Callable[[list[Observation]], None]] = []
        self._pending: list[Observation] = []
        self._first_pending_at: float | None = None
        self._staged: dict[str, StateValue] = {}
        self._state: dict[str, StateValue] = {}
        self._stored: list[Group] = []  # in the database, ascending by first sequence number
        self._memory: list[Group] = []  # in memory + journal, ascending, all above _stored's
        self._conf = Confirmations(self.uplinks)
        self._dictionary = Dictionary(gateway_id)
        self._seq = SeqFile(self.path)
        self._journal = Journal(self.path, durable=settings.durability == "full")
        self._journal.header = lambda: (DICT, [list(e) for e in self._dictionary.entries()])
        self._disk = DiskGuard(self.path, settings.disk_reserve_bytes)
        self._spilled_to = 0
        self._unrecorded_gaps: list[Gap] = []
        self._resume: Resume | None = None  # numbering decided at open, not yet written
        self._retry_at = 0.0
        self._disk_full = False
        self._last_maintenance = 0.0
        self._held_obs = 0
        self._release_again = False  # a delete of confirmed rows failed: try again
        self._disk_checked = (-1e9, False)  # (monotonic time, low?): statvfs at most once a second
        self._open()

    # ================================================================== opening
    def _open(self) -> None:
        store, moved = Store.open(self.path, self.gateway_id, self.settings.durability,
                                  self._clock())
        self._store = store
        db = store.db
        self._rows = GroupRows(db, self._dictionary)
        self._gaps = Gaps(db, (1 << len(self.uplinks)) - 1)
        self._dead = DeadLetters(db, self._dictionary)
        self._dictionary.load(db)
        self._stored = self._rows.load()
        self._conf.load(db)
        meta = store.meta()
        self.counters.evicted = int(str(meta.get("evicted", 0)))
        self.counters.dead_lettered = int(str(meta.get("dead_lettered", 0)))
        self._spilled_to = int(str(meta.get("spilled_to", 0)))
        for key, value in meta.items():
            if key.startswith("state:") and isinstance(value, str | bytes):
                self._state[key[6:]] = value
        dead = self._dead.seqs()
        self._conf.add_everyone([(a, b) for a, b, _n in runs(dead)])
        self._replay_journal()
        stored_max = max(
            int(str(meta.get("last_seq", 0))),
            self._spilled_to,
            max((g.last for g in self._stored), default=0),
            max((g.last for g in self._memory), default=0),
            dead[-1] if dead else 0,
        )
        resume = self._seq.decide(stored_max)
        self._resume = resume
        if moved:
            self.counters.recovered_corrupt += 1
            held = merge((g.first, g.last) for g in [*self._stored, *self._memory])
            self._unrecorded_gaps += [
                (a, b, -1, "moved-aside:corrupt")
                for a, b in complement(held, resume.next_seq - 1, resume.low)
            ]
        elif not resume.clean:
            self._announce_unclean(resume, int(str(meta.get("journal_from",
                                                            self._spilled_to + 1))))
        self._conf.rewind_all()
        try:
            self._begin_epoch()
        except OSError as exc:
            self._storage_trouble(exc)
        # what the journal held goes to the database now, so a session starts with no journal
        if self._memory or self._unrecorded_gaps or self._journal.segments():
            self._spill(list(self._memory), retire_all=True)

    def _announce_unclean(self, resume: Resume, journal_from: int) -> None:
        """After a stop that was not clean, every number from ``journal_from`` (below it, the
        surviving database accounts for everything) up to the end of the reserved block that
        is neither held nor known confirmed may have been handed out and lost: a gap.

        Not only above the highest number held: a power cut can take WAL frames (spilled
        groups whose journal segments were already deleted) while a later group survives in
        the journal, leaving a hole below it (found by the chaos harness, hil/chaos).
        """
        known = merge([*((g.first, g.last) for g in [*self._stored, *self._memory]),
                       *self._conf.everyone()])
        lost = complement(known, resume.next_seq - 1, journal_from)
        if not lost:
            return
        self._unrecorded_gaps += [(a, b, -1, "restart:unclean") for a, b in lost]
        log.warning(
            "outbox was not closed cleanly; numbering continues after the reserved block",
            extra={"event": "restart_unclean", "first_seq": lost[0][0],
                   "last_seq": lost[-1][1], "ranges": len(lost), "epoch": resume.epoch},
        )

    def _replay_journal(self) -> None:
        now = self._mono()
        for seg, kind, payload in self._journal.replay():
            try:
                group = self._replay_record(seg, kind, payload, now)
            except (KeyError, ValueError, TypeError, OutboxError) as exc:
                log.error("journal record unreadable; skipped",
                          extra={"event": "journal_skip", "segment": seg, "reason": repr(exc)})
                continue
            if group is not None:
                self._memory.append(group)
        self._memory.sort(key=lambda g: g.first)
        everyone = self._conf.everyone()
        self._set_memory([g for g in self._memory if not self._finished(everyone, g)])

    def _replay_record(self, seg: int, kind: int, payload: object, now: float) -> Group | None:
        """Apply one journal record; a group not yet in the database is returned."""
        if not isinstance(payload, list):
            raise ValueError(f"record of kind {kind} is not an array")
        if kind == DICT:
            self._dictionary.learn([_entry(e) for e in payload])
        elif kind == SETTLE:
            index, ranges = payload
            if 0 <= index < len(self.uplinks):
                self._conf.add(self.uplinks[index], [(int(a), int(b)) for a, b in ranges])
        elif kind == STATE:
            self._state.update(payload[0])
        elif kind == GROUP:
            first, n, data, t_min, t_max, staged, entries = payload
            self._dictionary.learn([_entry(e) for e in entries])
            self._state.update(staged)
            if n and first + n - 1 > self._spilled_to:  # else: state only, or in the database
                obs = decode_group(self._dictionary, first, n, data)
                return Group(first, first + n - 1, n, t_min, t_max, observations=obs,
                             segment=seg, committed_at=now, blob=data)
        return None

    def _begin_epoch(self) -> None:
        """Write the numbering decided at open (clears the clean marker) before any commit."""
        if self._resume is not None:
            self._seq.begin(self._resume)
            self._resume = None

    # ================================================================== ingest
    def append(self, observations: Iterable[Observation]) -> None:
        """Queue observations for the next group commit (commits at once if the group is full)."""
        if self._first_pending_at is None:
            self._first_pending_at = self._clock()
        self._pending.extend(observations)
        if len(self._pending) >= self.settings.commit_rows and self._mono() >= self._retry_at:
            self.commit()

    def stage_state(self, key: str, value: StateValue) -> None:
        """Persist ``key = value`` atomically with the next group commit.

        A source that must remember what it has received (a firmware node's last batch
        sequence) stages it right before emitting the observations: both land in the same
        journal record, so no crash can separate them.
        """
        self._staged[key] = value
        if self._first_pending_at is None:
            self._first_pending_at = self._clock()

    def state(self, key: str) -> StateValue | None:
        """A value committed with :meth:`stage_state` (None if never)."""
        return self._state.get(key)

    def commit_due(self) -> bool:
        """True when the oldest uncommitted observation has waited ``commit_interval_s``."""
        return (
            self._first_pending_at is not None
            and self._clock() - self._first_pending_at >= self.settings.commit_interval_s
            and self._mono() >= self._retry_at
        )

    @property
    def uncommitted(self) -> int:
        return len(self._pending)

    def commit(self) -> int:
        """Commit the pending group; returns the number of observations committed.

        Never drops the pending group on a failed write: on a full disk it stays pending
        (bounded by ``memory_max_obs``; beyond that the oldest are refused and counted) and
        is retried by the next ``commit``.
        """
        if not self._pending and not self._staged:
            self._first_pending_at = None
            return 0
        if self._pending and self._refuse_when_full():
            return 0
        obs = self._pending
        n = len(obs)
        first = self._seq.next_seq
        last = first + n - 1
        if self._held() >= 2 * self.settings.memory_max_obs:
            # the database has refused spills for a while: hold new data back, bounded
            self._retry_at = self._mono() + RETRY_S
            self._bound_pending()
            return 0
        try:
            self._begin_epoch()
            if n:
                self._seq.reserve(last, self._low())
            segment, blob = self._append_record(obs, first)
        except OSError as exc:
            if not storage_full(exc):
                raise
            self._storage_trouble(exc)
            self._bound_pending()
            return 0
        staged, self._staged = self._staged, {}
        self._pending = []
        self._first_pending_at = None
        self._state.update(staged)
        self._retry_at = 0.0
        if not n:
            return 0
        self._seq.next_seq = last + 1
        for seq, o in enumerate(obs, first):
            o.sequence = seq
        t_min = min(o.phenomenon_ms for o in obs)
        t_max = max(o.phenomenon_ms for o in obs)
        self._memory.append(Group(first, last, n, t_min, t_max, observations=obs,
                                  segment=segment, committed_at=self._mono(), blob=blob))
        self._held_obs += n
        self.counters.received += n
        self.counters.committed_groups += 1
        for hook in self.on_commit:
            hook(obs)
        self._enforce_limits()
        return n

    def _append_record(self, obs: list[Observation], first: int) -> tuple[int, bytes]:
        """One journal record for the pending group (or staged state alone); its segment and
        the encoded group."""
        if not obs:
            return self._journal.append(STATE, [self._staged]), b""
        try:
            data, t_min, t_max = encode_group(self._dictionary, obs, None)
            fresh = self._dictionary.take_fresh()
            try:
                segment = self._journal.append(
                    GROUP, [first, len(obs), data, t_min, t_max, self._staged,
                            [list(e) for e in fresh]]
                )
                return segment, data
            except OSError:
                self._dictionary.fresh = fresh + self._dictionary.fresh
                for e in fresh:
                    self._dictionary.unsaved.remove(e)
                raise
        except OSError:
            self._dictionary.drop_fresh()
            raise

    def _refuse_when_full(self) -> bool:
        """``eviction = "newest"``: a full outbox refuses new groups (counted, logged)."""
        if self.settings.eviction != "newest":
            return False
        if not (self._over_size_limit() or self._disk_low()):
            return False
        refused = len(self._pending)
        self.counters.refused += refused
        self._pending = []
        self._staged = {}
        self._first_pending_at = None
        log.warning("outbox full, refusing new observations", extra={"refused": refused})
        return True

    def _bound_pending(self) -> None:
        """Keep at most ``memory_max_obs`` waiting for a write to succeed; count the rest."""
        excess = len(self._pending) - self.settings.memory_max_obs
        if excess > 0:
            del self._pending[:excess]
            self.counters.refused += excess
            log.error(
                "disk full: oldest uncommitted observations dropped",
                extra={"event": "refused", "count": excess, "refused_total": self.counters.refused},
            )

    # ================================================================== spilling
    def tick(self) -> None:
        """Periodic work (the runtime's committer calls it): spill what waited too long,
        delete journal segments nobody needs, apply TTL and size limits, retry after a
        full disk. Cheap when there is nothing to do."""
        now = self._mono()
        if self._memory:
            oldest = self._memory[0]
            if (now - oldest.committed_at >= self.settings.spill_after_s
                    and now >= self._retry_at):
                self._spill(list(self._memory))
        if now - self._last_maintenance >= 1.0:
            self._last_maintenance = now
            if self._release_again:
                self._release_confirmed()
            self._retire_segments()
            self._enforce_limits()
            if self._disk_full and not self._disk_low() and now >= self._retry_at:
                self._disk_full = False
                log.warning("disk space back; outbox writes resume",
                            extra={"event": "disk_ok", "path": str(self.path.parent),
                                   "free_bytes": self._disk.free_bytes()})

    def _spill(self, groups: list[Group], retire_all: bool = False) -> bool:
        """Write the unconfirmed observations of memory groups to the database (one
        transaction, with a snapshot of state and confirmations); then retire segments."""
        everyone = self._conf.everyone()
        whole = [g for g in groups if g.blob and not intersect(everyone, [(g.first, g.last)])]
        kept = {id(g) for g in whole}
        obs = [o for g in groups if id(g) not in kept for o in g.observations or []
               if not contains(everyone, o.sequence or 0)]
        count = len(obs) + sum(g.n for g in whole)
        if count and self._disk_low():
            self._note_disk_full()
            if self.settings.eviction == "oldest":
                self._evict_for(count, "disk-full")
        top = max((g.last for g in groups), default=self._spilled_to)
        try:
            with self._store.transaction() as db:
                rows = [self._rows.insert_encoded(g) for g in whole]
                if obs:
                    rows.append(self._rows.insert(obs))
                gone = {id(g) for g in groups}
                rest = [g.first for g in self._memory if id(g) not in gone]
                self._snapshot(db, spilled_to=max(top, self._spilled_to),
                               journal_from=min(rest, default=self._seq.next_seq))
        except sqlite3.Error as exc:
            self._storage_trouble(exc)
            return False
        self._dictionary.saved()
        self._unrecorded_gaps = []
        if self._disk_full:  # the WAL must not grow into the last free space
            with contextlib.suppress(sqlite3.Error):
                self._store.checkpoint()
        self._spilled_to = max(top, self._spilled_to)
        self._set_memory([g for g in self._memory if id(g) not in gone])
        for row in rows:
            bisect.insort(self._stored, row, key=lambda g: g.first)
        self.counters.spilled += count
        if count:
            log.info("outbox spilled unconfirmed observations to the database",
                     extra={"event": "spilled", "count": count})
        if retire_all and not self._memory:
            self._journal.retire(self._journal.segments())
        else:
            self._retire_segments(snapshot_done=True)
        return True

    def _snapshot(self, db: sqlite3.Connection, spilled_to: int | None = None,
                  journal_from: int | None = None) -> None:
        """State, confirmations, dictionary, numbering and unrecorded gaps (in a transaction).

        ``journal_from``: every number below it is, as of this transaction, in the database,
        confirmed, dead-lettered or evicted; numbers from it on may live in the journal only
        (default: the first group in memory).
        """
        if journal_from is None:
            journal_from = self._memory[0].first if self._memory else self._seq.next_seq
        self._dictionary.save(db)
        self._conf.save(db)
        db.executemany("INSERT OR REPLACE INTO meta VALUES(?, ?)",
                       [(f"state:{k}", v) for k, v in self._state.items()])
        db.execute("INSERT OR REPLACE INTO meta VALUES('last_seq', ?)", (self._seq.next_seq - 1,))
        db.execute("INSERT OR REPLACE INTO meta VALUES('journal_from', ?)", (journal_from,))
        if spilled_to is not None:
            db.execute("INSERT OR REPLACE INTO meta VALUES('spilled_to', ?)", (spilled_to,))
        if self._unrecorded_gaps:
            self._gaps.record(self._unrecorded_gaps, int(self._clock() * 1000))

    def _retire_segments(self, snapshot_done: bool = False) -> None:
        """Delete journal segments no memory group lives in (after a snapshot transaction)."""
        live = {g.segment for g in self._memory}
        idle = [s for s in self._journal.segments()
                if s not in live and (s != self._journal.active or self._journal.full())]
        if not idle:
            return
        if not snapshot_done:
            try:
                with self._store.transaction() as db:
                    self._snapshot(db)
            except sqlite3.Error as exc:
                self._storage_trouble(exc)
                return
            self._dictionary.saved()
            self._unrecorded_gaps = []
        self._journal.retire(idle)

    # ================================================================== limits
    def size_bytes(self) -> int:
        """Bytes of the database in use (free pages excluded), its WAL and the journal."""
        return self._store.size_bytes() + self._journal.size_bytes()

    def _over_size_limit(self) -> bool:
        return self.size_bytes() > self.settings.max_bytes

    def _disk_low(self) -> bool:
        at, low = self._disk_checked
        now = self._mono()
        if now - at < 1.0:
            return low
        try:
            low = self._disk.low()
        except OSError:
            low = False
        self._disk_checked = (now, low)
        return low

    def _set_memory(self, groups: list[Group]) -> None:
        self._memory = groups
        self._held_obs = sum(g.n for g in groups)

    def _held(self) -> int:
        """Observations held in memory (journal groups not yet spilled)."""
        return self._held_obs

    def _enforce_limits(self) -> None:
        if self._held() > self.settings.memory_max_obs:
            self._spill(list(self._memory))
        if self.settings.ttl_s is not None:
            cutoff = int((self._clock() - self.settings.ttl_s) * 1000)
            old = expired(self._stored, self._memory, cutoff)
            if old:
                self._evict(old, "evicted:ttl")
        if self._disk_low():
            self._note_disk_full()
        if self.settings.eviction != "oldest":
            return
        while self._stored and self._over_size_limit():
            if not self._evict(oldest_chunk(self._stored, self.settings.commit_rows),
                               "evicted:size"):
                break
            self._store.checkpoint()

    def _evict_for(self, count: int, reason: str) -> None:
        """Evict the oldest database groups holding at least ``count`` observations."""
        chunk: list[Group] = []
        total = 0
        for g in self._stored:
            if total >= max(count, self.settings.commit_rows):
                break
            chunk.append(g)
            total += g.n
        if chunk:
            self._evict(chunk, reason)

    def _evict(self, groups: list[Group], reason: str) -> bool:
        everyone = self._conf.everyone()
        lost: list[int] = []
        for g in groups:
            if not self._finished(everyone, g):
                lost.extend(s for o in self._rows.observations(g)
                            if not contains(everyone, s := o.sequence or 0))
        gaps = [(lo, hi, n, reason) for lo, hi, n in runs(sorted(lost))]
        # memory groups evicted (TTL) are a prefix of memory: mark them gone for the journal
        gone_to = max([self._spilled_to, *(g.last for g in groups if g.in_memory)])
        try:
            with self._store.transaction() as db:
                self._rows.delete(groups)
                self._gaps.record(gaps, int(self._clock() * 1000))
                db.execute("INSERT OR REPLACE INTO meta VALUES('evicted', ?)",
                           (self.counters.evicted + len(lost),))
                db.execute("INSERT OR REPLACE INTO meta VALUES('spilled_to', ?)", (gone_to,))
        except sqlite3.Error as exc:
            self._storage_trouble(exc)
            return False
        self._spilled_to = gone_to
        self._forget_stored(groups)
        self.counters.evicted += len(lost)
        if lost:
            log.warning(
                "outbox evicted unsent observations",
                extra={"event": "outbox_evicted", "reason": reason, "count": len(lost),
                       "first_seq": lost[0], "last_seq": lost[-1],
                       "evicted_total": self.counters.evicted},
            )
        return True

    def _finished(self, everyone: Ranges, g: Group) -> bool:
        """Every observation of ``g`` is confirmed by every uplink."""
        if covers(everyone, g.first, g.last):
            return True
        if g.n == g.last - g.first + 1:
            return False  # a run of numbers: the range test was exact
        return all(contains(everyone, o.sequence or 0) for o in self._rows.observations(g))

    def _forget_stored(self, groups: list[Group]) -> None:
        gone = {id(g) for g in groups}
        self._stored = [g for g in self._stored if id(g) not in gone]
        self._set_memory([g for g in self._memory if id(g) not in gone])
        self._rows.forget(groups)

    # ================================================================== disk trouble
    def _note_disk_full(self) -> None:
        if self._disk_full:
            return
        self._disk_full = True
        self.counters.disk_full += 1
        free = self._free_bytes()
        log.error(
            f"disk full: {self.path.parent} has {free} bytes free "
            f"(reserve {self.settings.disk_reserve_bytes}); applying eviction "
            f"{self.settings.eviction!r}",
            extra={"event": "disk_full", "path": str(self.path.parent), "free_bytes": free,
                   "reserve_bytes": self.settings.disk_reserve_bytes},
        )

    def _free_bytes(self) -> int:
        try:
            return self._disk.free_bytes()
        except OSError:
            return -1

    def _storage_trouble(self, exc: BaseException) -> None:
        """A write failed: disk full is logged once per episode; retry after ``RETRY_S``."""
        self._retry_at = self._mono() + RETRY_S
        if storage_full(exc):
            self._note_disk_full()
            return
        log.error("outbox write failed; will retry",
                  extra={"event": "outbox_write_failed", "reason": repr(exc)})

    # ================================================================== draining
    def _groups(self) -> list[Group]:
        return [*self._stored, *self._memory]

    def depth(self) -> int:
        """Committed observations some uplink has not confirmed, plus the uncommitted group."""
        return reader.depth(self._groups(), self._rows.observations, self._conf) + len(
            self._pending
        )

    def oldest_unsent_ms(self) -> int | None:
        return reader.oldest_unsent_ms(self._groups(), self._conf)

    def next_batch(self, uplink: str, limit: int) -> Batch:
        """The next observations this uplink has not been handed yet, in the configured drain order."""
        picked, handed = reader.next_batch(
            self._groups(), self._rows.observations, self._conf.handed[uplink],
            self._seq.next_seq - 1, limit, self.settings.drain_order == "newest-first",
        )
        self._conf.handed[uplink] = handed
        return Batch(self.gateway_id, tuple(picked))

    def rewind(self, uplink: str) -> None:
        """Forget what was handed to this uplink: unconfirmed rows will be handed out again."""
        self._conf.rewind(uplink)

    def settle(self, uplink: str, delivery: Delivery) -> None:
        """Apply an uplink's report: confirm delivered observations, dead-letter rejected ones."""
        if not delivery.confirmed and not delivery.rejected:
            return
        confirmed = merge((s, s) for s in delivery.confirmed)
        if delivery.rejected:
            self._dead_letter(uplink, confirmed, delivery.rejected)
        else:
            in_journal = bool(self._memory)
            self._conf.add(uplink, confirmed)
            self._release_confirmed()
            if in_journal:
                # cheap, no fsync: lets a restart (and `outbox stats`) skip what was confirmed,
                # also when it emptied memory (the groups stay in the journal's active
                # segment); if lost, those are sent again and the twin de-duplicates
                with contextlib.suppress(OSError):
                    self._journal.append(SETTLE, [self._conf.index[uplink], confirmed],
                                         sync=False)
        self.counters.confirmed += len(delivery.confirmed)

    def _release_confirmed(self) -> None:
        everyone = self._conf.everyone()
        self._set_memory([g for g in self._memory if not self._finished(everyone, g)])
        finished = [g for g in self._stored if self._finished(everyone, g)]
        if finished:
            floor = self._floor(without=finished)
            saved = {n: list(r) for n, r in self._conf.done.items()}
            self._conf.trim(floor)
            try:
                with self._store.transaction() as db:
                    self._rows.delete(finished)
                    self._conf.save(db)
            except sqlite3.Error as exc:
                self._conf.done = saved  # confirmed still; deleted by a later try (tick)
                self._release_again = True
                self._storage_trouble(exc)
                return
            self._release_again = False
            self._forget_stored(finished)
        elif self._memory or self._stored:
            self._conf.trim(self._floor())

    def _floor(self, without: list[Group] | None = None) -> int:
        gone = {id(g) for g in without or []}
        for g in self._groups():
            if id(g) not in gone:
                return g.first
        return self._seq.next_seq

    def _dead_letter(self, uplink: str, confirmed: Ranges, rejected: dict[int, str]) -> None:
        wanted = set(rejected)
        found: list[Observation] = []
        for g in self._groups():
            if g.last >= min(wanted) and g.first <= max(wanted):
                found += [o for o in self._rows.observations(g) if o.sequence in wanted]
        saved = {n: list(r) for n, r in self._conf.done.items()}
        self._conf.add(uplink, confirmed)
        self._conf.add_everyone(merge((s, s) for s in rejected))  # out of the stream for all
        # groups held only in memory go to the database with this transaction: their
        # remaining rows must not come back from the journal after a restart
        try:
            with self._store.transaction() as db:
                self._dead.add(found, uplink, rejected, int(self._clock() * 1000))
                db.execute("INSERT OR REPLACE INTO meta VALUES('dead_lettered', ?)",
                           (self.counters.dead_lettered + len(rejected),))
                self._snapshot(db)
        except BaseException:
            self._conf.done = saved
            raise
        self._dictionary.saved()
        self._unrecorded_gaps = []
        self.counters.dead_lettered += len(rejected)
        self._release_confirmed()
        log.error(
            "uplink rejected observations; moved to dead letters",
            extra={"event": "dead_letter", "uplink": uplink, "count": len(rejected),
                   "example": next(iter(rejected.values()))[:200]},
        )

    # ================================================================== gaps, dead letters
    def pending_gaps(self, uplink: str) -> list[Gap]:
        """Gaps this uplink has not reported yet: (first_seq, last_seq, count, reason)."""
        return self._gaps.pending(1 << self._conf.index[uplink])

    def gaps_reported(self, uplink: str, gaps: Iterable[Gap]) -> None:
        bit = 1 << self._conf.index[uplink]
        try:
            with self._store.transaction():
                self._gaps.reported(bit, list(gaps))
        except sqlite3.Error as exc:
            self._storage_trouble(exc)  # reported again with the next batch: harmless

    def dead_letters(self, limit: int = 100) -> list[tuple[int, str, str, int]]:
        return self._dead.listing(limit)

    def requeue_dead_letters(self) -> int:
        """Move every dead letter back into the outbox, same sequence numbers (fix the twin first)."""
        saved = {n: list(r) for n, r in self._conf.done.items()}
        try:
            with self._store.transaction() as db:
                obs = self._dead.take_all()
                if not obs:
                    return 0
                row = self._rows.insert(obs)
                seqs = [o.sequence or 0 for o in obs]
                for name in self.uplinks:
                    self._conf.done[name] = subtract(self._conf.done[name], seqs)
                self._conf.save(db)
                self._dictionary.save(db)
        except BaseException:
            self._conf.done = saved
            raise
        self._dictionary.saved()
        bisect.insort(self._stored, row, key=lambda g: g.first)
        self._conf.rewind_all()
        return len(obs)

    # ================================================================== lifecycle
    def _low(self) -> int:
        """No unsent observation has a lower sequence number."""
        groups = self._groups()
        return groups[0].first if groups else self._seq.next_seq

    def close(self) -> None:
        """Commit what is pending, spill what is unconfirmed, close cleanly (clean marker)."""
        try:
            self.commit()
            clean = not self._pending and self._spill(list(self._memory), retire_all=True)
            clean = clean and not self._memory and not self._journal.segments()
            if clean:
                self._store.checkpoint()
                self._begin_epoch()
                self._seq.mark_clean(self._seq.next_seq - 1, self._low())
            else:
                log.error("outbox closed with unwritten data; the next start counts it unclean",
                          extra={"event": "outbox_close_unclean",
                                 "uncommitted": len(self._pending)})
        except (OSError, sqlite3.Error) as exc:
            log.error("outbox close failed; the next start counts it unclean",
                      extra={"event": "outbox_close_unclean", "reason": repr(exc)})
        finally:
            self._journal.close()
            self._store.close()


def _entry(raw: object) -> DictEntry:
    """A dictionary entry read back from a journal record (a 4-item CBOR array)."""
    if not isinstance(raw, list) or len(raw) != 4:
        raise OutboxError(f"bad dictionary entry in the journal: {raw!r}")
    kind, ident, a, b = (str(raw[0]), int(raw[1]), str(raw[2]), str(raw[3]))
    return (kind, ident, a, b)


__all__ = ["Outbox", "OutboxCounters", "OutboxError"]
