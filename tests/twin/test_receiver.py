"""The receiver's message path without a broker: what a group of messages does."""

from __future__ import annotations

import time
from pathlib import Path

from edge.contract import encode_batch
from edge.ingest.receiver import Receiver, ReceiverSettings
from edge.model import Batch
from tests.sta.helpers import make_obs


def payload(gw: str, seqs: range, t_ms: int | None = None) -> bytes:
    return encode_batch(Batch(gw, tuple(make_obs(gw, s, t_ms=t_ms) for s in seqs)))


async def test_a_group_reports_what_it_stored_and_refused(tmp_path: Path) -> None:
    rx = Receiver(ReceiverSettings(store_path=tmp_path / "twin.db"))
    try:
        result = await rx.handle_messages([
            ("duet/v1/gw-a/obs", payload("gw-a", range(1, 4))),
            ("duet/v1/gw-a/obs", payload("gw-a", range(3, 6))),  # overlaps: 3 is held
            ("duet/v1/gw-b/obs", payload("gw-a", range(1, 2))),  # wrong topic
            ("duet/v1/gw-c/obs", b"\xff not cbor"),
            ("duet/v1/gw-d/obs", payload("gw-d", range(1, 2), t_ms=int(time.time() * 1000)
                                         + 3 * 86_400_000)),  # from the future
            ("duet/v1/gw-a/status", b"online"),
            ("duet/v1/gw-a/events/disk_full", b'{"free_mb": 2}'),
        ])
    finally:
        await rx.close()
    assert [(b.gateway, b.seq_ranges(), o.new, o.duplicates) for b, o in result.stored] == [
        ("gw-a", [(1, 3)], 3, 0), ("gw-a", [(3, 5)], 2, 1)]
    reasons = [(r.gateway, r.reason) for r in result.refused]
    assert reasons[0] == ("gw-b", "gateway 'gw-a' published on 'duet/v1/gw-b/obs'")
    assert reasons[1][0] == "gw-c" and reasons[1][1].startswith("not CBOR")
    assert reasons[2] == ("gw-d", "phenomenon time outside 2000-01-01 .. now + 1 day")
    c = rx.counters
    assert (c.messages, c.observations_new, c.duplicates, c.rejected_messages, c.transactions,
            c.status_messages, c.events) == (7, 5, 1, 3, 1, 1, 1)


async def test_a_batch_the_database_refuses_is_dead_lettered_alone(pg_dsn: str) -> None:
    """PostgreSQL refuses a NUL character in JSON: that batch becomes a dead letter, and the
    other batches of the same group are stored (no redelivery loop for anyone)."""
    from edge.model import QC_PASS, Quality

    bad_obs = make_obs("gw-bad", 1)
    bad_obs.quality = Quality()
    bad_obs.quality.set("gross\x00range", QC_PASS)
    bad = encode_batch(Batch("gw-bad", (bad_obs,)))
    rx = Receiver(ReceiverSettings(store_path=pg_dsn))
    try:
        result = await rx.handle_messages([("duet/v1/gw-ok/obs", payload("gw-ok", range(1, 4))),
                                           ("duet/v1/gw-bad/obs", bad),
                                           ("duet/v1/gw-ok2/obs", payload("gw-ok2", range(1, 3)))])
        totals = await rx.store.totals()
    finally:
        await rx.close()
    assert [(b.gateway, o.new) for b, o in result.stored] == [("gw-ok", 3), ("gw-ok2", 2)]
    assert [(r.gateway, r.first_seq) for r in result.refused] == [("gw-bad", 1)]
    assert result.refused[0].reason.startswith("the store refused it")
    assert result.refused[0].payload == bad
    assert (totals.observations, totals.dead_letters) == (5, 1)


def test_no_message_can_break_the_receiver() -> None:
    """Any mix of valid, corrupted and garbage messages: nothing raises, every batch message
    is either stored or dead-lettered, and the store holds exactly what was reported stored."""
    import asyncio
    import sqlite3
    import tempfile

    import cbor2
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.twin.test_columns import cbor_values, observation_lists

    keys = st.sampled_from(["ver", "gw", "st", "s0", "sd", "t0", "dt", "si", "val", "dur", "rt",
                            "raw", "q", "gaps", "sent"])
    message = st.one_of(
        observation_lists().map(lambda obs: ("valid", obs, None, None)),
        st.tuples(st.just("corrupt"), observation_lists(), keys, cbor_values),
        st.binary(max_size=40).map(lambda b: ("garbage", None, None, b)),
    )

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(message, min_size=1, max_size=6))
    def run(messages: list[tuple[str, object, object, object]]) -> None:
        group = []
        for kind, obs, key, junk in messages:
            if kind == "garbage":
                group.append(("duet/v1/gw-h/obs", junk))
                continue
            msg = cbor2.loads(encode_batch(Batch("gw-h", tuple(obs))))  # type: ignore[arg-type]
            if kind == "corrupt":
                msg[key] = junk
            group.append(("duet/v1/gw-h/obs", cbor2.dumps(msg)))
        with tempfile.TemporaryDirectory() as tmp:
            rx = Receiver(ReceiverSettings(store_path=Path(tmp) / "twin.db"))

            async def go() -> object:
                try:
                    return await rx.handle_messages(group)  # type: ignore[arg-type]
                finally:
                    await rx.close()

            result = asyncio.run(go())
            assert len(result.stored) + len(result.refused) == len(group)  # type: ignore[attr-defined]
            held = {s for (s,) in sqlite3.connect(Path(tmp) / "twin.db").execute(
                "SELECT seq FROM observation")}
            reported = {s for b, _ in result.stored for s in b.seq}  # type: ignore[attr-defined]
            assert held == reported

    run()
