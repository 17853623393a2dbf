"""The read side: batches for uplinks in drain order, depth and age, and file exports.

Works on the outbox's group list (memory and database groups, ascending by first sequence
number) and its confirmations; writes nothing. :func:`iter_unsent` reads an outbox file
read-only for exports (safe while the gateway runs: a WAL reader never blocks the writer).
"""

from __future__ import annotations

import bisect
import sqlite3
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edge.model import Observation
from edge.outbox.confirmations import Confirmations
from edge.outbox.groups import Dictionary, Group, decode_group
from edge.outbox.journal import GROUP, SETTLE, Journal
from edge.outbox.ranges import Ranges, complement, covers, intersect, merge

Decode = Callable[[Group], list[Observation]]


def _seq_of(obs: Observation) -> int:
    return obs.sequence or 0


def depth(groups: list[Group], decode: Decode, conf: Confirmations) -> int:
    """Stored observations some uplink has not confirmed."""
    everyone = conf.everyone()
    waiting = 0
    for g in groups:
        if g.n == g.last - g.first + 1:  # a run of numbers: count by range arithmetic
            done = sum(b - a + 1 for a, b in intersect(everyone, [(g.first, g.last)]))
            waiting += g.n - done
        else:
            waiting += sum(1 for o in decode(g) if not covers(everyone, _seq_of(o), _seq_of(o)))
    return waiting


def oldest_unsent_ms(groups: list[Group], conf: Confirmations) -> int | None:
    everyone = conf.everyone()
    for g in groups:
        if not covers(everyone, g.first, g.last):
            return g.t_min
    return None


def next_batch(
    groups: list[Group], decode: Decode, handed: Ranges, top: int, limit: int, newest_first: bool
) -> tuple[list[Observation], Ranges]:
    """Up to ``limit`` observations not in ``handed``; returns them and the new handed ranges."""
    picked: list[Observation] = []
    spans: Ranges = []
    gaps = complement(handed, top)
    for lo, hi in reversed(gaps) if newest_first else gaps:
        found = _pick(groups, decode, lo, hi, limit - len(picked), newest_first)
        if not found:
            spans.append((lo, hi))  # nothing stored there any more
            continue
        seqs = [_seq_of(o) for o in found]
        spans.append((min(seqs), hi) if newest_first else (lo, max(seqs)))
        picked.extend(found)
        if len(picked) >= limit:
            break
    picked.sort(key=_seq_of)
    return picked, merge([*handed, *spans])


def _pick(
    groups: list[Group], decode: Decode, lo: int, hi: int, limit: int, newest_first: bool
) -> list[Observation]:
    """Up to ``limit`` stored observations with sequence in [lo, hi], nearest the chosen end."""
    chosen = [g for g in groups if g.last >= lo and g.first <= hi]
    if newest_first:
        chosen.sort(key=lambda g: -g.last)
    found: list[tuple[int, Observation]] = []
    low, high = sys.maxsize, -1
    for g in chosen:
        # groups come in drain order; once enough are found, a group lying wholly beyond
        # what we have cannot contribute
        if len(found) >= limit and (
            (newest_first and g.last < low) or (not newest_first and g.first > high)
        ):
            break
        members = decode(g)  # ascending by sequence number
        a = bisect.bisect_left(members, lo, key=_seq_of)
        b = bisect.bisect_right(members, hi, key=_seq_of)
        window = members[max(a, b - limit) : b] if newest_first else members[a : min(b, a + limit)]
        if window:
            found.extend((_seq_of(o), o) for o in window)
            low = min(low, _seq_of(window[0]))
            high = max(high, _seq_of(window[-1]))
    found.sort(key=lambda pair: pair[0])
    best = found[-limit:] if newest_first else found[:limit]
    return [o for _, o in best]


@dataclass(frozen=True, slots=True)
class Summary:
    """What ``duet-edge outbox stats`` shows, read without writing anything."""

    unsent: int
    oldest_unsent_ms: int | None
    groups: int
    journal_groups: int
    last_seq: int
    evicted: int
    gaps: int
    gap_observations: int
    dead_letters: int


def summarize(path: Path, uplinks: list[str]) -> Summary:
    """Depth, age and counters of an outbox (database and journal), read-only."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta"))
        spilled_to = int(meta.get("spilled_to", 0) or 0)
        groups = [
            Group(first, last, n, t_min, t_max)
            for first, last, n, t_min, t_max in db.execute(
                "SELECT first_seq, last_seq, n, t_min, t_max FROM grp ORDER BY first_seq"
            )
        ]
        conf = Confirmations(uplinks)
        conf.load(db)
        dead = int(db.execute("SELECT count(*) FROM dead_letter").fetchone()[0])
        gaps, gap_obs = db.execute("SELECT count(*), coalesce(sum(count), 0) FROM gap").fetchone()
    finally:
        db.close()
    journal = [g for g in _journal_groups(Path(path), conf) if g.last > spilled_to]
    everything = [*groups, *journal]
    unsent = sum(
        g.n - sum(b - a + 1 for a, b in intersect(conf.everyone(), [(g.first, g.last)]))
        for g in everything
    )
    last = max([int(meta.get("last_seq", 0) or 0), *(g.last for g in everything)])
    return Summary(max(unsent, 0), oldest_unsent_ms(everything, conf), len(groups),
                   len(journal), last, int(meta.get("evicted", 0) or 0), int(gaps),
                   int(gap_obs), dead)


def _journal_groups(path: Path, conf: Confirmations) -> list[Group]:
    out = []
    for _seg, kind, payload in Journal(path, durable=False).replay(cut_torn_tail=False):
        if not isinstance(payload, list):
            continue
        if kind == GROUP:
            first, n, _data, t_min, t_max, _state, _entries = payload
            if n:
                out.append(Group(first, first + n - 1, n, t_min, t_max))
        elif kind == SETTLE:
            index, ranges = payload
            if 0 <= index < len(conf.uplinks):
                conf.add(conf.uplinks[index], [(int(a), int(b)) for a, b in ranges])
    return out


def iter_unsent(path: Path, gateway_id: str | None = None) -> Iterator[Observation]:
    """Read-only iteration over every observation stored in an outbox (database and journal)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta"))
        dictionary = Dictionary(gateway_id or str(meta.get("gateway", "")))
        dictionary.load(db)
        seen_to = int(meta.get("spilled_to", 0) or 0)
        for first, n, data in db.execute(
            "SELECT first_seq, n, data FROM grp ORDER BY first_seq"
        ):
            yield from decode_group(dictionary, first, n, data)
    finally:
        db.close()
    # groups committed to the journal but not (yet) to the database
    journal = Journal(Path(path), durable=False)
    for _seg, kind, payload in journal.replay(cut_torn_tail=False):
        if kind != GROUP or not isinstance(payload, list):
            continue
        first, n, data, _t_min, _t_max, _state, entries = payload
        dictionary.learn([(str(e[0]), int(e[1]), str(e[2]), str(e[3])) for e in entries])
        if first > seen_to:
            yield from decode_group(dictionary, first, n, data)
