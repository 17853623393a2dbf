"""Gaps: sequence ranges that will never be sent, kept until every uplink has announced them.

Owns the ``gap`` table. A row is ``(first, last, count, reason, at, pending)``; ``pending`` is
a bit per uplink still to announce it; a row is deleted once no bit is left. Reasons (upload
contract v2): ``evicted:size``, ``evicted:ttl``, ``disk-full``, ``restart:unclean``,
``moved-aside:corrupt``. ``count`` is -1 when unknown.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

Gap = tuple[int, int, int, str]


class Gaps:
    def __init__(self, db: sqlite3.Connection, all_bits: int) -> None:
        self.db = db
        self.all_bits = all_bits

    def record(self, gaps: Iterable[Gap], now_ms: int) -> None:
        """Add gaps for every uplink (inside the caller's transaction)."""
        self.db.executemany(
            "INSERT INTO gap VALUES(?,?,?,?,?,?)",
            [(a, b, n, r, now_ms, self.all_bits) for a, b, n, r in gaps],
        )

    def pending(self, bit: int) -> list[Gap]:
        return [
            (a, b, n, r)
            for a, b, n, r in self.db.execute(
                "SELECT first_seq, last_seq, count, reason FROM gap WHERE pending & ? "
                "ORDER BY first_seq",
                (bit,),
            )
        ]

    def reported(self, bit: int, gaps: Iterable[Gap]) -> None:
        """Clear ``bit`` on the given gaps (inside the caller's transaction)."""
        self.db.executemany(
            "UPDATE gap SET pending = pending & ? WHERE first_seq=? AND last_seq=? AND reason=?",
            [(~bit, a, b, r) for a, b, _n, r in gaps],
        )
        self.db.execute("DELETE FROM gap WHERE pending=0")
