"""The gateway's bookkeeping of messages the twin has not answered yet."""

from __future__ import annotations

from edge.contract import Ack
from edge.model import Batch, Datastream, Observation, Provenance
from edge.uplinks.confirmations import Confirmations

GW = "gw-1"
REF = b"12345678"


def batch(first: int, n: int) -> Batch:
    s = Datastream(GW, "sds", "pm2_5")
    return Batch(GW, tuple(Observation(s, 1.0, 1_760_000_000_000, Provenance("SDS011"),
                                       sequence=first + i) for i in range(n)))


def test_ok_x_and_need_each_answer_their_own_rows() -> None:
    c = Confirmations()
    a = c.add(batch(1, 10), [(900, 910, -1, "restart:unclean")], REF, 0.0)
    c.add(batch(11, 10), [], REF, 0.0)
    answers = c.apply(Ack(ok=[(1, 4), (6, 10)], x=[(5, 5, "time before 2000")],
                          need=[(REF, 11, 20)]))
    first, second = answers
    assert first.entry is a and first.finished
    assert first.delivery.confirmed == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert first.delivery.rejected == {5: "refused by the twin: time before 2000"}
    assert first.gaps_stored == [(900, 910, -1, "restart:unclean")]
    assert second.resend and not second.finished and not second.delivery.confirmed
    assert c.awaiting == 10


def test_acks_for_unknown_or_already_answered_rows_are_ignored() -> None:
    c = Confirmations()
    c.add(batch(1, 5), [], REF, 0.0)
    assert c.apply(Ack(ok=[(100, 200)])) == []
    assert len(c.apply(Ack(ok=[(1, 3)]))) == 1
    assert c.apply(Ack(ok=[(1, 3)])) == []  # the same ack again
    (last,) = c.apply(Ack(ok=[(1, 5)]))
    assert last.delivery.confirmed == [4, 5] and last.finished
    assert c.entries == []


def test_overdue_messages_are_found_by_their_last_send() -> None:
    c = Confirmations()
    old = c.add(batch(1, 2), [], REF, 0.0)
    c.add(batch(3, 2), [], REF, 25.0)
    assert c.overdue(30.0, 30.0) == [old]
    old.sent_at = 30.0
    assert c.overdue(31.0, 30.0) == []
