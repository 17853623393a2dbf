"""Dead letters: observations an uplink rejected permanently, with the reason.

Owns the ``dead_letter`` table. A dead letter is out of the stream (done for every uplink)
until an operator requeues it with the same sequence number.
"""

from __future__ import annotations

import sqlite3

import cbor2

from edge.model import Observation, Quality
from edge.outbox.groups import Dictionary


class DeadLetters:
    def __init__(self, db: sqlite3.Connection, dictionary: Dictionary) -> None:
        self.db = db
        self.dictionary = dictionary

    def add(self, obs: list[Observation], uplink: str, reasons: dict[int, str], now_ms: int) -> None:
        """Store rejected observations (inside the caller's transaction)."""
        d = self.dictionary
        self.db.executemany(
            "INSERT OR REPLACE INTO dead_letter VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    o.sequence,
                    d.ds_id(o.stream),
                    d.prov_id(o.provenance),
                    o.phenomenon_ms,
                    None if o.phenomenon_end_ms is None else o.phenomenon_end_ms - o.phenomenon_ms,
                    o.result_ms,
                    o.result,
                    o.raw_result,
                    None if o.quality is None else cbor2.dumps(o.quality.as_dict()),
                    uplink,
                    reasons[o.sequence or 0][:500],
                    now_ms,
                )
                for o in obs
            ],
        )

    def max_seq(self) -> int:
        return int(self.db.execute("SELECT coalesce(max(seq), 0) FROM dead_letter").fetchone()[0])

    def seqs(self) -> list[int]:
        return [int(s) for (s,) in self.db.execute("SELECT seq FROM dead_letter ORDER BY seq")]

    def listing(self, limit: int) -> list[tuple[int, str, str, int]]:
        return list(
            self.db.execute(
                "SELECT seq, uplink, reason, at FROM dead_letter ORDER BY seq LIMIT ?", (limit,)
            )
        )

    def take_all(self) -> list[Observation]:
        """Every dead letter as an observation (rows deleted inside the caller's transaction)."""
        d = self.dictionary
        rows = list(
            self.db.execute("SELECT seq, ds, prov, t, dur, rt, v, raw, q FROM dead_letter ORDER BY seq")
        )
        self.db.execute("DELETE FROM dead_letter")
        return [
            Observation(
                d.ds_by_id[ds],
                v,
                t,
                d.prov_by_id[prov],
                None if dur is None else t + dur,
                rt,
                raw,
                None if q is None else Quality.from_dict(cbor2.loads(q)),
                seq,
            )
            for seq, ds, prov, t, dur, rt, v, raw, q in rows
        ]
