"""Messages published and not yet answered by the twin (``confirm = "twin"``).

The MQTT uplink keeps every published batch here until the twin's acks (edge.contract.Ack)
have answered each of its rows: ``ok`` rows are confirmed to the outbox, ``x`` rows are
dead-lettered with the twin's reason, ``need`` rows are published again with the full session
dictionary, and a message left unanswered for ``ack_timeout_s`` is published again as it is.
Ack ranges that match nothing here are ignored (an ack can arrive twice, or late).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from edge.contract import Ack, Gap, Range, merge_ranges
from edge.model import Batch, Delivery, Observation


@dataclass(slots=True)
class InFlight:
    """One published message: the rows the twin has not answered yet."""

    gateway_id: str
    rows: dict[int, Observation]  # sequence number → observation
    gaps: list[Gap]  # gaps the message announced (reported once the twin stored it)
    ref: bytes  # its session dictionary (b"" for contract v1)
    first_sent: float
    sent_at: float
    attempts: int = 1

    def batch(self) -> Batch:
        return Batch(self.gateway_id, tuple(self.rows[s] for s in sorted(self.rows)))


@dataclass(slots=True)
class Answer:
    """What one ack means for one in-flight message."""

    entry: InFlight
    delivery: Delivery = field(default_factory=Delivery)
    resend: bool = False  # the twin needs its dictionary: publish the rest again, in full
    gaps_stored: list[Gap] = field(default_factory=list)  # announced gaps the twin now holds
    finished: bool = False  # no row left unanswered: the window slot is free


class Confirmations:
    """The in-flight messages of one connection."""

    def __init__(self) -> None:
        self.entries: list[InFlight] = []

    @property
    def awaiting(self) -> int:
        return sum(len(e.rows) for e in self.entries)

    def add(self, batch: Batch, gaps: list[Gap], ref: bytes, now: float) -> InFlight:
        rows = {o.sequence: o for o in batch.observations if o.sequence is not None}
        entry = InFlight(batch.gateway_id, rows, list(gaps), ref, now, now)
        self.entries.append(entry)
        return entry

    def apply(self, ack: Ack) -> list[Answer]:
        ok = merge_ranges(ack.ok)
        refused = sorted(ack.x)
        needed = merge_ranges((a, b) for _ref, a, b in ack.need)
        answers = []
        for entry in list(self.entries):
            answer = Answer(entry)
            for seq in list(entry.rows):
                if _within(ok, seq):
                    answer.delivery.confirmed.append(seq)
                else:
                    reason = _reason(refused, seq)
                    if reason is None:
                        answer.resend |= _within(needed, seq)
                        continue
                    answer.delivery.rejected[seq] = f"refused by the twin: {reason}"
                del entry.rows[seq]
            if not (answer.delivery.confirmed or answer.delivery.rejected or answer.resend):
                continue
            if answer.delivery.confirmed and entry.gaps:
                answer.gaps_stored, entry.gaps = entry.gaps, []
            if not entry.rows:
                answer.finished = True
                answer.resend = False
                self.entries.remove(entry)
            answers.append(answer)
        return answers

    def overdue(self, now: float, timeout: float) -> list[InFlight]:
        return [e for e in self.entries if now - e.sent_at >= timeout]


def _within(ranges: list[Range], seq: int) -> bool:
    i = bisect.bisect_right(ranges, seq, key=lambda r: r[0]) - 1
    return i >= 0 and ranges[i][0] <= seq <= ranges[i][1]


def _reason(refused: list[tuple[int, int, str]], seq: int) -> str | None:
    for first, last, reason in refused:
        if first <= seq <= last:
            return reason
    return None
