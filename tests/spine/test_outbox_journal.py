"""The journal on its own: records, torn tails, recycled segments, garbage."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.outbox.journal import GROUP, SECTOR, SEGMENT_BYTES, SETTLE, Journal


def records(journal: Journal) -> list[tuple[int, int, object]]:
    return list(journal.replay())


def test_normal_appends_replay_in_order_and_a_torn_tail_is_cut(tmp_path: Path) -> None:
    j = Journal(tmp_path / "o.db", durable=False)
    for i in range(5):
        j.append(GROUP, [i, "x" * i])
    j.append(SETTLE, [0, [[1, 3]]])
    j.close()
    (seg,) = tmp_path.glob("o.db.j*")
    size = seg.stat().st_size
    with open(seg, "ab") as fh:
        fh.write(b"\x20\x00\x00\x00garbage")  # a record torn by a crash
    again = Journal(tmp_path / "o.db", durable=False)
    got = records(again)
    assert [(k, p) for _s, k, p in got] == [(GROUP, [i, "x" * i]) for i in range(5)] + [
        (SETTLE, [0, [[1, 3]]])
    ]
    assert seg.stat().st_size == size  # cut back to the last whole record


def test_full_durability_pads_to_sectors_and_recycles_segments(tmp_path: Path) -> None:
    j = Journal(tmp_path / "o.db", durable=True)
    j.append(GROUP, ["a"])
    j.append(GROUP, ["b" * 700])
    (seg,) = tmp_path.glob("o.db.j0*")
    assert seg.stat().st_size == SEGMENT_BYTES  # preallocated
    assert j.size_bytes() == 3 * SECTOR  # one sector, then two
    assert [p for _s, _k, p in records(Journal(tmp_path / "o.db", durable=True))] == [
        ["a"], ["b" * 700]
    ]
    j.retire([j.active])
    assert (tmp_path / "o.db.jspare000001").exists()  # kept: no zero-filling next time
    j.append(GROUP, ["c"])  # the spare becomes segment 2; segment 1's records are stale
    assert not list(tmp_path.glob("o.db.jspare*"))
    assert [p for _s, _k, p in records(Journal(tmp_path / "o.db", durable=True))] == [["c"]]
    j.close()


def test_a_recycled_segment_never_gets_a_number_it_had_before(tmp_path: Path) -> None:
    """Found while building the chaos campaign (hil/chaos): after a restart the journal
    numbered its first segment 1 again and took the spare, which had been segment 1 in the
    previous process; the old records past the new ones then validated and were replayed."""
    first_life = Journal(tmp_path / "o.db", durable=True)
    for i in range(5):
        first_life.append(GROUP, [i])
    first_life.close()
    restarted = Journal(tmp_path / "o.db", durable=True)
    assert len(records(restarted)) == 5
    restarted.retire(restarted.segments())  # a restart spills the journal and retires it
    restarted.append(GROUP, ["new"])  # the spare is reused
    restarted.close()
    assert [p for _s, _k, p in records(Journal(tmp_path / "o.db", durable=True))] == [["new"]]
    (tmp_path / "o.db.jspare").write_bytes(b"\0" * SEGMENT_BYTES)  # an earlier version's
    assert Journal(tmp_path / "o.db", durable=True)._spares() == []  # history unknown: gone
    assert not (tmp_path / "o.db.jspare").exists()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=2000), cut=st.integers(min_value=0, max_value=4000))
def test_replay_never_crashes_on_damage(tmp_path: Path, garbage: bytes, cut: int) -> None:
    path = tmp_path / f"g{abs(hash((garbage, cut)))}.db"
    j = Journal(path, durable=False)
    for i in range(20):
        j.append(GROUP, [i, os.urandom(50)])
    j.close()
    (seg,) = path.parent.glob(path.name + ".j*")
    data = seg.read_bytes()
    cut = min(cut, len(data))
    seg.write_bytes(data[:cut] + garbage)
    got = records(Journal(path, durable=False))
    assert [p[0] for _s, _k, p in got] == list(range(len(got)))  # a prefix, in order
    seg.unlink()


def test_group_records_keep_quality_exactly_and_compactly() -> None:
    """Quality is stored as templates + score columns (format 2), read back exactly; format 1
    records (a map per row, written by earlier versions) are still read."""
    import cbor2

    from edge.model import Datastream, Observation, Provenance, Quality
    from edge.outbox.groups import Dictionary, decode_group, encode_group

    stream = Datastream("gw", "pm", "pm2_5")
    prov = Provenance("SDS011")
    qualities = [
        Quality(aggregate=1, tests={"gross_range": 1, "spike": 1, "anomaly": 1},
                scores={"anomaly": round(i / 1000, 3)})
        for i in range(500)
    ]
    qualities[7] = Quality(aggregate=3, tests={"gross_range": 1, "spike": 3}, scores={})
    obs = [Observation(stream, 10.0 + i, 1_700_000_000_000 + 1000 * i, prov,
                       quality=None if i == 9 else qualities[i], sequence=i + 1)
           for i in range(500)]
    dictionary = Dictionary("gw")
    data, _, _ = encode_group(dictionary, obs, None)
    back = decode_group(dictionary, 1, 500, data)
    assert [o.quality for o in back] == [o.quality for o in obs]
    bare, _, _ = encode_group(dictionary, [Observation(o.stream, o.result, o.phenomenon_ms,
                                                       o.provenance, sequence=o.sequence)
                                           for o in obs], None)
    per_row_map = cbor2.dumps({i: q.as_dict() for i, q in enumerate(qualities)})
    assert (len(data) - len(bare)) / 500 <= 4  # one template index + a score in milli-units
    assert len(per_row_map) / 500 > 60  # what format 1 spent on it
    record = cbor2.loads(data)
    record[0], record[10] = 1, {i: o.quality.as_dict() for i, o in enumerate(obs) if o.quality}
    assert [o.quality for o in decode_group(dictionary, 1, 500, cbor2.dumps(record))] == [
        o.quality for o in obs]


def test_scores_that_are_not_three_decimals_are_kept_exactly() -> None:
    from edge.model import Datastream, Observation, Provenance, Quality
    from edge.outbox.groups import Dictionary, decode_group, encode_group

    stream = Datastream("gw", "pm", "pm2_5")
    obs = [Observation(stream, 1.0, 1_700_000_000_000 + i, Provenance("X"),
                       quality=Quality(aggregate=1, scores={"ml_anomaly": 0.1234567 * i}),
                       sequence=i + 1) for i in range(20)]
    dictionary = Dictionary("gw")
    data, _, _ = encode_group(dictionary, obs, None)
    assert [o.quality for o in decode_group(dictionary, 1, 20, data)] == [o.quality for o in obs]
