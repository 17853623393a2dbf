"""Confirmations: per uplink, which sequence numbers it confirmed and which it was handed.

Owns the ``done`` table (persisted merged ranges per uplink) and the in-memory ranges. While
groups live in the journal their confirmations are journal records; the table is rewritten
in the outbox's snapshot transactions (spill, segment retirement, close).
"""

from __future__ import annotations

import sqlite3

from edge.outbox.ranges import Ranges, covers, intersect, merge


class Confirmations:
    def __init__(self, uplinks: list[str]) -> None:
        self.uplinks = uplinks
        self.index = {name: i for i, name in enumerate(uplinks)}
        self.done: dict[str, Ranges] = {name: [] for name in uplinks}
        self.handed: dict[str, Ranges] = {name: [] for name in uplinks}

    def load(self, db: sqlite3.Connection) -> None:
        for name, i in self.index.items():
            self.done[name] = merge(
                (lo, hi) for lo, hi in db.execute("SELECT lo, hi FROM done WHERE uplink=?", (i,))
            )

    def add(self, uplink: str, ranges: Ranges) -> None:
        self.done[uplink] = merge([*self.done[uplink], *ranges])

    def add_everyone(self, ranges: Ranges) -> None:
        for name in self.uplinks:
            self.add(name, ranges)

    def everyone(self) -> Ranges:
        names = iter(self.uplinks)
        ranges = self.done[next(names)]
        for name in names:
            ranges = intersect(ranges, self.done[name])
        return ranges

    def all_done(self, first: int, last: int) -> bool:
        return covers(self.everyone(), first, last)

    def trim(self, floor: int) -> None:
        """Forget confirmations below ``floor`` (nothing stored there any more)."""
        for name in self.uplinks:
            self.done[name] = [(max(a, floor), b) for a, b in self.done[name] if b >= floor]

    def rewind(self, uplink: str) -> None:
        self.handed[uplink] = list(self.done[uplink])

    def rewind_all(self) -> None:
        for name in self.uplinks:
            self.rewind(name)

    def save(self, db: sqlite3.Connection) -> None:
        """Rewrite the ``done`` table from memory (inside the caller's transaction)."""
        db.execute("DELETE FROM done")
        db.executemany(
            "INSERT INTO done VALUES(?,?,?)",
            [(i, a, b) for name, i in self.index.items() for a, b in self.done[name]],
        )
