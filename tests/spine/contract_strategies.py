"""Hypothesis strategies for upload-contract tests: arbitrary valid batches and hostile CBOR."""

from __future__ import annotations

import math

from hypothesis import strategies as st

from edge.contract import quantize
from edge.model import Batch, Datastream, Observation, Provenance, Quality

GW = "gw-prop"
T_MIN = 1_000_000_000_000  # 2001
T_MAX = 1_900_000_000_000  # 2030

_SENSORS = ["sds", "pms", "bme", "radar"]
_QUANTITIES = ["pm2_5", "pm10", "temperature", "car", "co", "unknown_qty"]
_TESTS = ["gross_range", "spike", "flat_line", "ml_anomaly", "gap", "pm_order"]
_SCORES = ["ml_anomaly", "gap_s", "anomaly"]

provenances = st.builds(
    Provenance,
    st.sampled_from(["SDS011", "PMS5003", "BME280"]),
    st.sampled_from(["", "A1B2"]),
    st.just(""),
    st.sampled_from(["", "cal-7"]),
    st.sampled_from(["", "1", "2"]),
)
flags = st.sampled_from([1, 2, 3, 4, 9])
score_values = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    st.integers(0, 10_000).map(lambda n: n / 1000),
    st.integers(0, 100_000).map(lambda n: round(n / 10_000, 4)),
)
qualities = st.builds(
    Quality,
    flags,
    st.dictionaries(st.sampled_from(_TESTS), flags, max_size=4),
    st.dictionaries(st.sampled_from(_SCORES), score_values, max_size=2),
)
results = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5000, 5000).map(lambda n: n / 10),
)


@st.composite
def batches(draw: st.DrawFn, gw: str = GW, max_rows: int = 40) -> Batch:
    n = draw(st.integers(1, max_rows))
    seq = draw(st.integers(1, 2**40))
    streams = [
        Datastream(gw, s, q)
        for s, q in draw(
            st.lists(st.tuples(st.sampled_from(_SENSORS), st.sampled_from(_QUANTITIES)),
                     min_size=1, max_size=5)
        )
    ]
    provs = draw(st.lists(provenances, min_size=1, max_size=3))
    uniform = draw(st.sampled_from([None, 0, 1000, 60_000]))
    rows = []
    for _ in range(n):
        t = draw(st.integers(T_MIN, T_MAX))
        dur = uniform if uniform is not None else draw(st.one_of(st.none(), st.integers(0, 10**6)))
        rows.append(
            Observation(
                stream=draw(st.sampled_from(streams)),
                result=draw(results),
                phenomenon_ms=t,
                provenance=draw(st.sampled_from(provs)),
                phenomenon_end_ms=None if dur is None else t + dur,
                result_ms=draw(st.one_of(st.none(), st.integers(t, t + 10**6))),
                raw_result=draw(st.one_of(st.none(), results)),
                quality=draw(st.one_of(st.none(), qualities)),
                sequence=seq,
            )
        )
        seq += draw(st.sampled_from([1, 1, 1, 2, 1000]))
    return Batch(gw, tuple(rows))


def expected(o: Observation) -> Observation:
    """What the receiver must decode: results snapped to the stream's grid, nothing else."""
    code = o.stream.quantity_code
    return Observation(
        o.stream, quantize(o.result, code), o.phenomenon_ms, o.provenance, o.phenomenon_end_ms,
        o.result_ms, None if o.raw_result is None else quantize(o.raw_result, code), o.quality,
        o.sequence,
    )


def same(a: Observation, b: Observation) -> bool:
    """Equality where NaN equals NaN (results may legitimately be NaN)."""

    def eq(x: float | None, y: float | None) -> bool:
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            return True
        return x == y

    return (
        eq(a.result, b.result)
        and eq(a.raw_result, b.raw_result)
        and (a.stream, a.phenomenon_ms, a.provenance, a.phenomenon_end_ms, a.result_ms,
             a.quality, a.sequence)
        == (b.stream, b.phenomenon_ms, b.provenance, b.phenomenon_end_ms, b.result_ms,
            b.quality, b.sequence)
    )


nasty_scalars = st.one_of(
    st.integers(),
    st.sampled_from([2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**400, -7, 0, -1]),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.booleans(),
    st.none(),
)
cbor_values = st.recursive(
    nasty_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers(-3, 50)), children,
                        max_size=6),
    ),
    max_leaves=30,
)
