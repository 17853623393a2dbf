"""The compact upload contract: round trips, size, validation."""

from __future__ import annotations

import math

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.contract import ContractError, decode_batch, encode_batch, quantize
from edge.model import Batch, Datastream, Observation, Provenance, Quality, observation_id

GW = "gw-1"
PROV = Provenance("PMS5003", "", "", "cal-pm", "2")
T0 = 1_760_000_000_000


def batch_of(values: list[float], quantity: str = "pm2_5", start_seq: int = 1) -> Batch:
    s = Datastream(GW, "pms", quantity)
    return Batch(
        GW,
        tuple(
            Observation(s, v, T0 + i * 1000, PROV, sequence=start_seq + i)
            for i, v in enumerate(values)
        ),
    )


def test_round_trip_with_every_optional_field() -> None:
    q = Quality()
    q.set("flat_line", 3)
    q.scores["anomaly"] = 0.8
    rows = [
        Observation(Datastream(GW, "pms", "pm2_5"), 12.34, T0, PROV, sequence=7),
        Observation(
            Datastream(GW, "pms", "pm10"), 20.0, T0, PROV, T0 + 60_000, T0 + 61_000, 25.5, q, 9
        ),
        Observation(
            Datastream(GW, "bme", "temperature"), -3.21, T0 - 5, Provenance("BME280"), sequence=10
        ),
    ]
    decoded = decode_batch(encode_batch(Batch(GW, tuple(rows)), gaps=[(8, 8, 1, "evicted:size")]))
    assert decoded.observations == rows
    assert decoded.ids == [str(observation_id(GW, s)) for s in (7, 9, 10)]
    assert decoded.gaps == [(8, 8, 1, "evicted:size")]


def test_compact_size_is_at_most_16_bytes_per_observation() -> None:
    values = [5.0 + (i % 37) * 0.73 for i in range(2000)]
    payload = encode_batch(batch_of(values))
    assert len(payload) / 2000 <= 16


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=1, max_size=50))
@settings(max_examples=200, deadline=None)
def test_values_are_never_lost(values: list[float]) -> None:
    decoded = decode_batch(encode_batch(batch_of(values)))
    for original, obs in zip(values, decoded.observations, strict=True):
        if math.isnan(original):
            assert math.isnan(obs.result)
        elif math.isinf(original):
            assert obs.result == original
        else:
            # exact, or snapped to the grid only when within a millionth of a step of it
            assert obs.result == quantize(original, "pm2_5")
            assert abs(obs.result - original) <= 1e-6 * (abs(original) + 0.01)


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_garbage_is_rejected_with_a_reason(payload: bytes) -> None:
    try:
        decode_batch(payload)
    except ContractError as exc:
        assert str(exc)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda m: m.update(ver=2), "unsupported contract version"),
        (lambda m: m.update(si=[5]), "stream index"),
        (lambda m: m.update(val=[1, 2]), "same length"),
        (lambda m: m.update(sd=[0]), "sequence must increase"),
        (lambda m: m.pop("gw"), "'gw'"),
        (lambda m: m.update(q={0: [1]}), "quality is not a map"),
    ],
)
def test_invalid_messages_name_the_problem(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    msg = cbor2.loads(encode_batch(batch_of([1.0, 2.0])))
    msg["si"], msg["val"], msg["dt"] = msg["si"][:1], msg["val"][:1], msg["dt"][:1]
    if reason == "sequence must increase":
        msg["si"], msg["val"], msg["dt"] = [0, 0], [1, 2], [0, 1]
    mutate(msg)
    with pytest.raises(ContractError, match=reason):
        decode_batch(cbor2.dumps(msg))
