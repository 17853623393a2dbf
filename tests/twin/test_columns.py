"""The receiver's fast column decoder agrees with the reference decoder on everything."""

from __future__ import annotations

import math

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.contract import ContractError, decode_batch, encode_batch
from edge.ingest.columns import decode_columns
from edge.ingest.rows import IngestBatch, from_decoded
from edge.model import Batch, Datastream, Observation, Provenance, Quality

T0 = 1_764_064_800_000


def reference(payload: bytes) -> IngestBatch | str:
    try:
        return from_decoded(decode_batch(payload))
    except ContractError:
        return "refused"
    except (TypeError, AttributeError, KeyError, OverflowError):  # v1 crashes on "gaps": 5
        return "refused"


def fast(payload: bytes) -> IngestBatch | str:
    try:
        return decode_columns(payload)
    except ContractError:
        return "refused"


def same(a: IngestBatch | str, b: IngestBatch | str) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    # NaN != NaN: compare results by their repr
    return (a.gateway, a.streams, a.stream_index, a.seq, a.phenomenon_ms, a.duration_ms,
            a.result_offset_ms, [repr(r) for r in a.result], [repr(r) for r in a.raw_result],
            a.quality_flag, a.quality_profile, a.anomaly_milli, a.other_scores, a.gaps,
            a.sent_ms) == (
        b.gateway, b.streams, b.stream_index, b.seq, b.phenomenon_ms, b.duration_ms,
        b.result_offset_ms, [repr(r) for r in b.result], [repr(r) for r in b.raw_result],
        b.quality_flag, b.quality_profile, b.anomaly_milli, b.other_scores, b.gaps, b.sent_ms)


quantities = st.sampled_from(["pm2_5", "pm10", "temperature", "co2", "car", "no_such_qty"])
provenances = st.builds(Provenance, st.sampled_from(["SDS011", "PMS5003", ""]),
                        st.sampled_from(["", "A1"]), st.sampled_from(["", "1.2"]),
                        st.sampled_from(["", "cal-7"]))
results = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                    st.integers(-10**6, 10**6).map(lambda i: i / 100))


@st.composite
def observation_lists(draw: st.DrawFn) -> list[Observation]:
    gw = "gw-h"
    n = draw(st.integers(1, 30))
    seq = draw(st.integers(1, 2**40))
    t = T0 + draw(st.integers(-10**6, 10**6))
    out = []
    for _ in range(n):
        seq += draw(st.integers(1, 3))
        t += draw(st.integers(0, 120_000))
        q = None
        if draw(st.booleans()):
            q = Quality()
            for test in draw(st.lists(st.sampled_from(["gross_range", "spike", "flat"]),
                                      max_size=3)):
                q.set(test, draw(st.sampled_from([1, 2, 3, 4, 9])))
            if draw(st.booleans()):
                q.scores["anomaly"] = draw(st.floats(0, 1))
            if draw(st.booleans()):
                q.scores["other"] = draw(st.floats(allow_nan=False, allow_infinity=False))
        interval = draw(st.one_of(st.none(), st.integers(0, 3_600_000)))
        out.append(Observation(
            stream=Datastream(gw, draw(st.sampled_from(["s1", "s2"])), draw(quantities)),
            result=draw(results), phenomenon_ms=t, provenance=draw(provenances),
            phenomenon_end_ms=None if interval is None else t + interval,
            result_ms=draw(st.one_of(st.none(), st.integers(T0, T0 + 10**7))),
            raw_result=draw(st.one_of(st.none(), results)), quality=q, sequence=seq))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(observation_lists(), st.lists(st.tuples(st.integers(1, 99), st.integers(100, 200),
                                               st.integers(-1, 50), st.text(max_size=8)),
                                     max_size=2))
def test_fast_path_equals_reference_on_valid_batches(obs: list[Observation],
                                                     gaps: list[tuple[int, int, int, str]]
                                                     ) -> None:
    payload = encode_batch(Batch("gw-h", tuple(obs)), gaps=gaps, sent_ms=T0)
    a, b = fast(payload), reference(payload)
    assert not isinstance(b, str)
    assert same(a, b)


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.one_of(st.text(max_size=4), st.integers(-2, 5)), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(observation_lists(), st.sampled_from(["ver", "gw", "st", "s0", "sd", "t0", "dt", "si",
                                             "val", "dur", "rt", "raw", "q", "gaps", "sent"]),
       cbor_values)
def test_fast_path_equals_reference_on_corrupted_batches(obs: list[Observation], key: str,
                                                         junk: object) -> None:
    """Any field replaced by arbitrary CBOR: both refuse, or both decode the same columns."""
    msg = cbor2.loads(encode_batch(Batch("gw-h", tuple(obs)), sent_ms=T0))
    msg[key] = junk
    payload = cbor2.dumps(msg)
    assert same(fast(payload), reference(payload))


@settings(max_examples=100, deadline=None)
@given(observation_lists(), st.integers(0, 4), cbor_values)
def test_fast_path_equals_reference_on_corrupted_rows(obs: list[Observation], column: int,
                                                      junk: object) -> None:
    msg = cbor2.loads(encode_batch(Batch("gw-h", tuple(obs)), sent_ms=T0))
    name = ["si", "val", "dt", "st", "q"][column]
    if name == "q":
        msg["q"] = {0: junk}
    elif name == "st":
        msg["st"][0] = junk
    else:
        msg[name][0] = junk
    payload = cbor2.dumps(msg)
    assert same(fast(payload), reference(payload))


@pytest.mark.parametrize("payload", [b"", b"\xff", cbor2.dumps([1, 2]), cbor2.dumps({"ver": 9})])
def test_garbage_is_refused(payload: bytes) -> None:
    with pytest.raises(ContractError):
        decode_columns(payload)


def test_nan_results_survive() -> None:
    o = Observation(Datastream("gw", "s", "pm2_5"), math.nan, T0, Provenance("X"), sequence=1)
    cols = decode_columns(encode_batch(Batch("gw", (o,))))
    assert math.isnan(cols.result[0])
