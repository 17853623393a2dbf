"""The gateway's node session: hello, acceptance rule, de-duplication across restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.node import nodeproto as P
from edge.node.session import FeedResult, NodeSession
from edge.node.store import HwmStore

NOW = 1_764_072_000_000
HELLO = {"type": "hello", "node_id": "n1", "firmware": "1.0.0", "protocol": [1, 0],
         "kind": "air", "sensors": [["sds011", "Nova Fitness SDS011", ["pm2_5", "pm10"]]]}


def batch(seq: int, oldest: int | None = None, **extra: Any) -> bytes:
    msg: dict[str, Any] = {"type": "batch", "seq": seq, "t0_ms": NOW - 60_000,
                           "records": [[0, "pm2_5", 10.0 + seq, 0, 60_000]]}
    if oldest is not None:
        msg["oldest"] = oldest
    msg.update(extra)
    if "age_ms" in msg:
        del msg["t0_ms"]
    return P.encode_message(msg)


def decode_all(result: FeedResult) -> list[dict[str, Any]]:
    return [P.decode_message(r[:-1]) for r in result.replies]


def make(store: HwmStore) -> NodeSession:
    return NodeSession("gw", "nodes", store, lambda: NOW)


def test_hello_is_answered_with_time_and_the_mark(tmp_path: Path) -> None:
    store = HwmStore(tmp_path / "nodes.db")
    store.set("n1", 41)
    s = make(store)
    replies = decode_all(s.feed(P.encode_message(HELLO)))
    assert replies == [{"type": "time", "epoch_ms": NOW}, {"type": "ack", "seq": 41}]
    assert s.node is not None and s.node.firmware == "1.0.0"


def test_batch_before_hello_asks_for_a_hello_once_per_interval() -> None:
    s = make(HwmStore(":memory:"))
    replies = decode_all(s.feed(batch(1) + batch(2)))
    assert replies == [{"type": "sync"}]
    assert s.bad["no_hello"] == 2


def test_dedup_by_node_and_sequence_across_gateway_restarts(tmp_path: Path) -> None:
    path = tmp_path / "nodes.db"
    s = make(HwmStore(path))
    s.feed(P.encode_message(HELLO))
    r = s.feed(batch(1, 1) + batch(2, 1))
    assert [b.seq for b in r.batches] == [1, 2]
    s.committed("n1", 2)
    # restart: a new session and store on the same file; the node resends 2 (ack lost) and 3
    s2 = make(HwmStore(path))
    s2.feed(P.encode_message(HELLO))
    r2 = s2.feed(batch(2, 2) + batch(3, 2))
    assert [b.seq for b in r2.batches] == [3]
    assert s2.counts["duplicates"] == 1
    assert decode_all(r2)[0] == {"type": "ack", "seq": 2}  # the duplicate is acked again


def test_mark_is_not_persisted_before_commit(tmp_path: Path) -> None:
    path = tmp_path / "nodes.db"
    s = make(HwmStore(path))
    s.feed(P.encode_message(HELLO))
    assert [b.seq for b in s.feed(batch(1, 1)).batches] == [1]
    # the gateway dies before the outbox committed: the resend must be accepted again
    s2 = make(HwmStore(path))
    s2.feed(P.encode_message(HELLO))
    assert [b.seq for b in s2.feed(batch(1, 1)).batches] == [1]


def test_unknown_major_version_is_counted_and_the_session_keeps_working() -> None:
    s = make(HwmStore(":memory:"))
    future = bytearray(P.cobs_decode(P.encode_message(HELLO)[:-1]))
    future[0] = 0x20
    s.feed(P.cobs_encode(bytes(future)) + b"\x00")
    assert s.bad["version"] == 1 and s.node is None
    s.feed(P.encode_message(HELLO))
    assert [b.seq for b in s.feed(batch(1, 1)).batches] == [1]


def test_out_of_order_is_dropped_and_gap_is_counted() -> None:
    s = make(HwmStore(":memory:"))
    s.feed(P.encode_message(HELLO))
    s.feed(batch(1, 1))
    s.committed("n1", 1)
    assert s.feed(batch(3, 2)).batches == []  # 2 is still held by the node: wait for it
    assert s.counts["out_of_order"] == 1
    r = s.feed(batch(7, 7))  # the node's ring overflowed: 2..6 are gone for good
    assert [b.seq for b in r.batches] == [7]
    assert s.counts["gap_batches"] == 5


def test_observations_carry_node_provenance_and_times() -> None:
    s = make(HwmStore(":memory:"))
    s.feed(P.encode_message(HELLO))
    r = s.feed(batch(1, 1))
    (obs,) = r.batches[0].observations
    assert obs.stream.sensor_id == "nodes.n1.sds011"
    assert obs.stream.quantity_code == "pm2_5"
    assert obs.provenance.node_id == "n1"
    assert obs.provenance.firmware_version == "1.0.0"
    assert (obs.phenomenon_ms, obs.phenomenon_end_ms) == (NOW - 60_000, NOW)
    r2 = s.feed(batch(2, 2, age_ms=5000))
    (obs2,) = r2.batches[0].observations
    assert obs2.phenomenon_ms == NOW - 5000


def test_bad_records_are_counted_and_skipped() -> None:
    s = make(HwmStore(":memory:"))
    s.feed(P.encode_message(HELLO))
    msg = {"type": "batch", "seq": 1, "t0_ms": NOW,
           "records": [[5, "pm2_5", 1.0, 0, 0], [0, "no_such_quantity", 1.0, 0, 0],
                       [0, "pm10", 2.0, 0, 0]]}
    r = s.feed(P.encode_message(msg))
    assert [o.stream.quantity_code for o in r.batches[0].observations] == ["pm10"]
    assert s.bad["record_sensor"] == 1 and s.bad["record_quantity"] == 1


def test_garbage_between_frames_is_counted_not_fatal() -> None:
    s = make(HwmStore(":memory:"))
    s.feed(b"\x01\x02\x03\x00" + P.encode_message(HELLO) + b"\xff" * 2000 + b"\x00")
    assert s.node is not None
    assert s.bad["oversize"] == 1
    assert sum(s.bad.values()) == 2


def test_time_is_resent_with_an_ack_once_an_hour() -> None:
    clock = [NOW]
    s = NodeSession("gw", "nodes", HwmStore(":memory:"), lambda: clock[0])
    s.feed(P.encode_message(HELLO))
    s.feed(batch(1, 1))
    assert [P.decode_message(f)["type"] for f in P.FrameReader().feed(s.committed("n1", 1))] == [
        "ack"]
    clock[0] += 3_600_000
    s.feed(batch(2, 2))
    frames = [P.decode_message(f) for f in P.FrameReader().feed(s.committed("n1", 2))]
    assert frames == [{"type": "time", "epoch_ms": NOW + 3_600_000}, {"type": "ack", "seq": 2}]
