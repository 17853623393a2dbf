"""The compact upload contract (v2, reads v1): round trips, session dictionary, size, strict
validation of every field, and acks."""

from __future__ import annotations

import math
from collections.abc import Callable

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.contract import (
    Ack,
    ContractError,
    SessionDictionary,
    SessionEncoder,
    UnknownDictionary,
    decode_ack,
    decode_batch,
    encode_ack,
    encode_batch,
    quantize,
)
from edge.model import Batch, Datastream, Observation, Provenance, Quality, observation_id
from tests.spine.contract_strategies import batches, cbor_values, expected, same

GW = "gw-1"
PROV = Provenance("PMS5003", "", "", "cal-pm", "2")
T0 = 1_760_000_000_000
NOW = T0 + 3_600_000


def batch_of(values: list[float], quantity: str = "pm2_5", start_seq: int = 1) -> Batch:
    s = Datastream(GW, "pms", quantity)
    return Batch(
        GW,
        tuple(
            Observation(s, v, T0 + i * 1000, PROV, sequence=start_seq + i)
            for i, v in enumerate(values)
        ),
    )


def every_field() -> list[Observation]:
    q = Quality()
    q.set("flat_line", 3)
    q.scores["anomaly"] = 0.8
    q.scores["ml_anomaly"] = 1.2345
    return [
        Observation(Datastream(GW, "pms", "pm2_5"), 12.34, T0, PROV, sequence=7),
        Observation(
            Datastream(GW, "pms", "pm10"), 20.0, T0, PROV, T0 + 60_000, T0 + 61_000, 25.5, q, 9
        ),
        Observation(
            Datastream(GW, "bme", "temperature"), -3.21, T0 - 5, Provenance("BME280"), sequence=10
        ),
    ]


@pytest.mark.parametrize("version", [1, 2])
def test_round_trip_with_every_optional_field(version: int) -> None:
    rows = every_field()
    payload = encode_batch(Batch(GW, tuple(rows)), gaps=[(8, 8, 1, "evicted:size")],
                           version=version)
    decoded = decode_batch(payload, now_ms=NOW)
    assert decoded.version == version
    assert decoded.observations == rows
    assert decoded.ids == [str(observation_id(GW, s)) for s in (7, 9, 10)]
    assert decoded.gaps == [(8, 8, 1, "evicted:size")]
    assert decoded.rejected == {}


@given(batches())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_v2_round_trip_of_arbitrary_batches(batch: Batch) -> None:
    encoder = SessionEncoder(batch.gateway_id)
    first = decode_batch(encoder.encode(batch).payload, now_ms=2_000_000_000_000)
    assert first.dictionary is not None
    assert len(first.observations) == len(batch)
    assert all(same(a, expected(b)) for a, b in zip(first.observations, batch.observations,
                                                   strict=True))
    # the same batch again on the same connection goes by reference only
    again = encoder.encode(batch)
    assert not again.full
    held = {(batch.gateway_id, first.dictionary.ref): first.dictionary}
    second = decode_batch(again.payload, lambda gw, ref: held.get((gw, ref)),
                          now_ms=2_000_000_000_000)
    assert all(same(a, b) for a, b in zip(second.observations, first.observations, strict=True))


@given(batches())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_v1_still_decodes(batch: Batch) -> None:
    decoded = decode_batch(encode_batch(batch, version=1), now_ms=2_000_000_000_000)
    assert decoded.version == 1
    assert all(same(a, expected(b)) for a, b in zip(decoded.observations, batch.observations,
                                                   strict=True))


def test_session_dictionary_is_sent_once_per_connection_and_on_every_change() -> None:
    enc = SessionEncoder(GW)
    a = enc.encode(batch_of([1.0, 2.0]))
    b = enc.encode(batch_of([3.0], start_seq=3))
    assert a.full and not b.full and a.ref == b.ref
    assert len(b.payload) < len(a.payload) - 30
    # a new stream changes the dictionary: sent in full, new reference
    c = enc.encode(batch_of([4.0], quantity="pm10", start_seq=4))
    assert c.full and c.ref != a.ref
    # a new connection sends it again; so does the twin asking for it
    enc.reset()
    assert enc.encode(batch_of([5.0], start_seq=5)).full
    enc.forget(c.ref)
    assert enc.encode(batch_of([6.0], start_seq=6)).full
    assert not enc.encode(batch_of([7.0], start_seq=7)).full


def test_unknown_dictionary_names_the_reference_and_the_rows() -> None:
    enc = SessionEncoder(GW)
    first = enc.encode(batch_of([1.0]))
    later = enc.encode(batch_of([2.0, 3.0], start_seq=20))
    with pytest.raises(UnknownDictionary) as err:
        decode_batch(later.payload, lambda gw, ref: None, now_ms=NOW)
    assert err.value.ref == later.ref == first.ref
    assert err.value.gateway_id == GW and err.value.ranges == [(20, 21)]
    # the dictionary a receiver persisted reads back the same
    carried = decode_batch(first.payload, now_ms=NOW).dictionary
    assert carried is not None
    assert SessionDictionary.from_body(carried.body) == carried


def test_dictionary_reference_must_match_its_content() -> None:
    msg = cbor2.loads(encode_batch(batch_of([1.0])))
    msg["sr"] = bytes(8)
    with pytest.raises(ContractError, match="does not match"):
        decode_batch(cbor2.dumps(msg), now_ms=NOW)


def test_wire_size_at_real_load_shape() -> None:
    """20 observations a second (10 SDS011 × 2 quantities), quality on: 2 s per message."""
    streams = [Datastream(GW, f"sds{i}", q) for i in range(10) for q in ("pm2_5", "pm10")]
    enc = SessionEncoder(GW)
    enc.encode(batch_of([1.0]))
    rows = []
    for i in range(40):
        q = Quality()
        for test in ("gross_range", "spike", "flat_line", "rate_of_change"):
            q.set(test, 1)
        q.tests["ml_anomaly"] = 2
        rows.append(Observation(streams[i % 20], 10 + (i * 7 % 90) / 10,
                                T0 + (i // 20) * 1000 + (i % 20) * 37, Provenance("SDS011"),
                                quality=q, sequence=100 + i))
    enc.encode(Batch(GW, tuple(rows)))  # the dictionary goes out once
    payload = enc.encode(Batch(GW, tuple(rows))).payload
    assert len(payload) / len(rows) <= 10, len(payload) / len(rows)
    v1 = encode_batch(Batch(GW, tuple(rows)), version=1)
    assert len(v1) > 5 * len(payload)


def test_bulk_size_is_at_most_16_bytes_per_observation() -> None:
    values = [5.0 + (i % 37) * 0.73 for i in range(2000)]
    assert len(encode_batch(batch_of(values))) / 2000 <= 16


def test_uniform_interval_length_is_sent_once() -> None:
    s = Datastream(GW, "radar", "car")
    rows = tuple(Observation(s, float(i), T0 + i * 60_000, PROV, T0 + (i + 1) * 60_000,
                             sequence=i + 1) for i in range(10))
    msg = cbor2.loads(encode_batch(Batch(GW, rows)))
    assert msg["dur"] == 60_000
    assert decode_batch(cbor2.dumps(msg), now_ms=NOW).observations == list(rows)


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=1, max_size=50))
@settings(max_examples=200, deadline=None)
def test_values_are_never_lost(values: list[float]) -> None:
    decoded = decode_batch(encode_batch(batch_of(values)), now_ms=NOW)
    for original, obs in zip(values, decoded.observations, strict=True):
        if math.isnan(original):
            assert math.isnan(obs.result)
        elif math.isinf(original):
            assert obs.result == original
        else:
            # exact, or snapped to the grid only when within a millionth of a step of it
            assert obs.result == quantize(original, "pm2_5")
            assert abs(obs.result - original) <= 1e-6 * (abs(original) + 0.01)


@given(st.floats(0, 1e6, allow_nan=False))
@settings(max_examples=300, deadline=None)
def test_scores_round_trip_exactly(score: float) -> None:
    q = Quality(1, {"ml_anomaly": 1}, {"ml_anomaly": score, "gap_s": round(score, 3)})
    s = Datastream(GW, "pms", "pm2_5")
    rows = tuple(Observation(s, 1.0, T0, PROV, quality=q, sequence=i) for i in (1, 2))
    decoded = decode_batch(encode_batch(Batch(GW, rows)), now_ms=NOW)
    assert [o.quality for o in decoded.observations] == [q, q]


# ------------------------------------------------------------------------ strict validation

Mutation = Callable[[dict[str, object]], None]


def _two_row_message(version: int = 2) -> dict[str, object]:
    q = Quality(1, {"gross_range": 1}, {"ml_anomaly": 0.5})
    s = Datastream(GW, "pms", "pm2_5")
    rows = (Observation(s, 1.0, T0, PROV, T0 + 1000, raw_result=2.0, quality=q, sequence=5),
            Observation(s, 2.0, T0 + 1000, PROV, T0 + 3000, sequence=7))
    msg: dict[str, object] = cbor2.loads(encode_batch(Batch(GW, rows), version=version))
    return msg


POISON: list[tuple[str, Mutation, str]] = [
    ("gaps is an int", lambda m: m.update(gaps=5), "'gaps' must be a list"),
    ("gap with a float", lambda m: m.update(gaps=[[1, 2, 1.5, "x"]]), "gap count"),
    ("gap count too large", lambda m: m.update(gaps=[[1, 2, 3, "x"]]), "gap count"),
    ("val 10**400", lambda m: m.update(val=[10**400, 1]), "within ±2^53"),
    ("raw 10**400", lambda m: m.update(raw={0: 10**400}), "within ±2^53"),
    ("raw -(2**63)", lambda m: m.update(raw={0: -(2**63)}), "within ±2^53"),
    ("val is a string", lambda m: m.update(val=["1", 2]), "within ±2^53"),
    ("val is a bool", lambda m: m.update(val=[True, 2]), "within ±2^53"),
    ("s0 2**63", lambda m: m.update(s0=2**63), "'s0'"),
    ("s0 2**64-1", lambda m: m.update(s0=2**64 - 1), "'s0'"),
    ("s0 -7", lambda m: m.update(s0=-7), "'s0'"),
    ("s0 0", lambda m: m.update(s0=0), "'s0'"),
    ("t0 2**63", lambda m: m.update(t0=2**63), "'t0'"),
    ("t0 2**64-1", lambda m: m.update(t0=2**64 - 1), "'t0'"),
    ("t0 -2**63", lambda m: m.update(t0=-(2**63)), "'t0'"),
    ("dur 2**63", lambda m: m.update(dur={0: 2**63}), "'dur'"),
    ("dur negative", lambda m: m.update(dur={0: -1}), "'dur'"),
    ("uniform dur 2**64", lambda m: m.update(dur=2**64), "'dur'"),
    ("dt 2**63", lambda m: m.update(dt=[0, 2**63]), "'dt'"),
    ("rt 2**64", lambda m: m.update(rt={1: 2**64}), "'rt'"),
    ("sd zero", lambda m: m.update(sd=[0]), "sequence must increase"),
    ("sd wrong length", lambda m: m.update(sd=[1, 1]), "'sd'"),
    ("sequence past 2**53", lambda m: m.update(s0=2**53 - 1), "pass"),
    ("no gw", lambda m: m.pop("gw"), "'gw'"),
    ("gw with a slash", lambda m: m.update(gw="gw/other"), "'gw'"),
    ("stream index out of range", lambda m: m.update(si=[5, 0]), "stream index"),
    ("columns of different length", lambda m: m.update(val=[1]), "one per row"),
    ("inf quality score", lambda m: m["qv"][0].__setitem__(2, [math.inf, None]),  # type: ignore[index]
     "finite"),
    ("nan quality score", lambda m: m["qv"][0].__setitem__(2, {0: math.nan}),  # type: ignore[index]
     "finite"),
    ("bad quality flag", lambda m: m.update(qk=[[1, 0, 7]]), "QARTOD flag"),
    ("inf quality flag", lambda m: m.update(qk=[[1, 0, math.inf]]), "QARTOD flag"),
    ("quality template out of range", lambda m: m.update(qs=[3, 0]), "quality template"),
    ("ver 3", lambda m: m.update(ver=3), "unsupported contract version"),
    ("ver 2.0", lambda m: m.update(ver=2.0), "unsupported contract version"),
    ("sr too short", lambda m: m.update(sr=b"1234"), "'sr'"),
    ("exponent out of range", lambda m: m["st"][0].__setitem__(3, 99),  # type: ignore[index]
     "exponent"),
    ("provenance not text", lambda m: m["st"][0].__setitem__(4, {"a": 1}),  # type: ignore[index]
     "provenance"),
]


@pytest.mark.parametrize(("mutate", "reason"), [(m, r) for _, m, r in POISON],
                         ids=[name for name, _, _ in POISON])
def test_poison_is_a_contract_error_naming_the_problem(mutate: Mutation, reason: str) -> None:
    msg = _two_row_message()
    mutate(msg)
    with pytest.raises(ContractError) as err:
        decode_batch(cbor2.dumps(msg), now_ms=NOW)
    assert reason in str(err.value)


V1_POISON: list[tuple[str, Mutation, str]] = [
    ("inf in quality tests", lambda m: m.update(q={0: {"agg": 1, "tests": {"a": math.inf}}}),
     "test flag"),
    ("inf in quality scores", lambda m: m.update(q={0: {"agg": 1, "scores": {"a": math.inf}}}),
     "finite"),
    ("quality is a list", lambda m: m.update(q={0: [1]}), "quality is not a map"),
    ("st is not a list", lambda m: m.update(st=5), "'st'"),
]


@pytest.mark.parametrize(("mutate", "reason"), [(m, r) for _, m, r in V1_POISON],
                         ids=[name for name, _, _ in V1_POISON])
def test_v1_poison_is_a_contract_error(mutate: Mutation, reason: str) -> None:
    msg = _two_row_message(version=1)
    mutate(msg)
    with pytest.raises(ContractError, match=reason):
        decode_batch(cbor2.dumps(msg), now_ms=NOW)


def test_a_readable_poison_names_its_gateway_and_rows() -> None:
    msg = _two_row_message()
    msg["val"] = [10**400, 1]
    with pytest.raises(ContractError) as err:
        decode_batch(cbor2.dumps(msg), now_ms=NOW)
    assert err.value.gateway_id == GW and err.value.ranges == [(5, 5), (7, 7)]


@pytest.mark.parametrize(
    ("t", "why"),
    [
        (-1_000_000_000_000, "before 2000"),  # 1938
        (0, "before 2000"),  # 1970: a clock that was never set
        (4_102_444_800_000, "ahead"),  # 2100
    ],
)
def test_implausible_times_refuse_only_their_rows(t: int, why: str) -> None:
    s = Datastream(GW, "pms", "pm2_5")
    rows = (Observation(s, 1.0, T0, PROV, sequence=1), Observation(s, 2.0, t, PROV, sequence=2),
            Observation(s, 3.0, T0, PROV, sequence=3))
    decoded = decode_batch(encode_batch(Batch(GW, rows)), now_ms=NOW)
    assert decoded.sequences == [1, 3]
    assert list(decoded.rejected) == [2] and why in decoded.rejected[2]


def test_non_finite_results_are_kept_as_such() -> None:
    decoded = decode_batch(encode_batch(batch_of([math.nan, math.inf, -math.inf])), now_ms=NOW)
    results = [o.result for o in decoded.observations]
    assert math.isnan(results[0]) and results[1:] == [math.inf, -math.inf]


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_garbage_bytes_are_a_contract_error(payload: bytes) -> None:
    try:
        decode_batch(payload, lambda gw, ref: None)
    except ContractError as exc:
        assert str(exc)


@given(cbor_values)
@settings(max_examples=300, deadline=None)
def test_arbitrary_cbor_is_a_contract_error(value: object) -> None:
    try:
        decode_batch(cbor2.dumps(value), lambda gw, ref: None)
    except ContractError as exc:
        assert str(exc)


KEYS = ["ver", "gw", "sent", "sr", "st", "qn", "s0", "sd", "t0", "dt", "si", "val", "dur",
        "rt", "raw", "q", "qk", "qs", "qv", "gaps"]


@given(st.sampled_from([1, 2]), st.dictionaries(st.sampled_from(KEYS), cbor_values, max_size=4),
       st.lists(st.sampled_from(KEYS), max_size=3))
@settings(max_examples=500, deadline=None)
def test_any_field_replaced_by_anything_is_a_contract_error(
    version: int, replace: dict[str, object], drop: list[str]
) -> None:
    msg = _two_row_message(version)
    msg.update(replace)
    for key in drop:
        msg.pop(key, None)
    try:
        decoded = decode_batch(cbor2.dumps(msg), lambda gw, ref: None, now_ms=NOW)
    except ContractError as exc:
        assert str(exc)
        return
    for o in decoded.observations:  # what passes is within the documented ranges
        assert o.sequence is not None and 1 <= o.sequence < 2**53
        assert 946_684_800_000 <= o.phenomenon_ms <= NOW + 86_400_000
        if o.quality is not None:
            assert all(math.isfinite(v) for v in o.quality.scores.values())


# ------------------------------------------------------------------------------------ acks


def test_ack_round_trip() -> None:
    ack = Ack(ok=[(1, 10), (12, 12)], x=[(11, 11, "phenomenon time before 2000")],
              need=[(b"12345678", 13, 20)])
    assert decode_ack(encode_ack(ack)) == ack
    assert decode_ack(encode_ack(Ack())) == Ack()


@pytest.mark.parametrize(
    "message",
    [{"ver": 1, "ok": [[1, 2]]}, {"ver": 2, "ok": [[2, 1]]}, {"ver": 2, "ok": [[0, 1]]},
     {"ver": 2, "ok": 5}, {"ver": 2, "x": [[1, 2]]}, {"ver": 2, "need": [["ab", 1, 2]]},
     {"ver": 2, "ok": [[1, 2**64]]}],
)
def test_bad_acks_are_contract_errors(message: dict[str, object]) -> None:
    with pytest.raises(ContractError):
        decode_ack(cbor2.dumps(message))


@given(st.one_of(st.binary(max_size=200), cbor_values.map(cbor2.dumps)))
@settings(max_examples=300, deadline=None)
def test_garbage_acks_are_contract_errors(payload: bytes) -> None:
    try:
        decode_ack(payload)
    except ContractError as exc:
        assert str(exc)
