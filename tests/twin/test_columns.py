"""The receiver's fast column decoder (edge.ingest.columns) agrees with the reference decoder
(``from_decoded(decode_batch(...))``) on everything: valid batches of both contract versions,
batches with any field or any element replaced by hostile CBOR, and byte-level mutations (the
generators of bench/fuzz_contract.py). Where the fast path answers, the reference gives the same
columns; where it does not, it raises only ``Slow`` and the reference decides."""

from __future__ import annotations

import math
import random

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz_contract import GW as FUZZ_GW
from bench.fuzz_contract import HOSTILE, _mutate_bytes, _mutate_structure, _seed_payloads
from edge.contract import (
    ContractError,
    DictionaryLookup,
    SessionDictionary,
    SessionEncoder,
    UnknownDictionary,
    decode_batch,
    encode_batch,
)
from edge.ingest.columns import ReceivedBatch, Slow, decode_columns, fast_columns
from edge.ingest.rows import IngestBatch, from_decoded
from edge.model import Batch, Datastream, Observation, Provenance, Quality
from tests.spine.contract_strategies import GW, T_MAX, batches, cbor_values

NOW = T_MAX + 10**7  # every generated time is plausible: fast path
GAPS = st.lists(st.tuples(st.integers(1, 99), st.integers(100, 200), st.integers(-1, 2),
                          st.text(min_size=1, max_size=8)), max_size=2)  # valid gaps
SLOW = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

Outcome = tuple[object, ...]


def _floats(column: list[float] | list[float | None]) -> list[str]:
    return [repr(v) for v in column]  # NaN equals NaN, -0.0 differs from 0.0


def rows_key(rows: IngestBatch) -> tuple[object, ...]:
    return (rows.gateway, rows.streams, rows.stream_index, rows.seq, rows.phenomenon_ms,
            rows.duration_ms, rows.result_offset_ms, _floats(rows.result),
            _floats(rows.raw_result), rows.quality_flag, rows.quality_profile,
            rows.anomaly_milli, rows.other_scores, rows.gaps, rows.sent_ms)


def batch_key(b: ReceivedBatch) -> Outcome:
    return ("ok", b.gateway_id, b.version, rows_key(b.rows), b.rejected, b.dictionary)


def refusal(exc: ContractError) -> Outcome:
    if isinstance(exc, UnknownDictionary):
        return ("need", exc.reason, exc.gateway_id, exc.ranges, exc.ref)
    return ("refused", type(exc).__name__, exc.reason, exc.gateway_id, exc.ranges)


def reference(payload: bytes, lookup: DictionaryLookup) -> Outcome:
    try:
        d = decode_batch(payload, lookup, now_ms=NOW)
    except ContractError as exc:
        return refusal(exc)
    return batch_key(ReceivedBatch(d.gateway_id, d.version, from_decoded(d), d.rejected,
                                   d.dictionary))


def columns(payload: bytes, lookup: DictionaryLookup) -> Outcome:
    try:
        return batch_key(decode_columns(payload, lookup, now_ms=NOW))
    except ContractError as exc:
        return refusal(exc)


def check(payload: bytes, known: dict[tuple[str, bytes], SessionDictionary] | None = None
          ) -> bool:
    """Fast path, reference and decode_columns agree; True when the fast path answered."""
    table = known or {}

    def lookup(gw: str, ref: bytes) -> SessionDictionary | None:
        return table.get((gw, ref))

    expected = reference(payload, lookup)
    try:
        fast: ReceivedBatch | None = fast_columns(payload, lookup, NOW)
    except Slow:
        fast = None
    if fast is not None:
        assert batch_key(fast) == expected
    assert columns(payload, lookup) == expected
    return fast is not None


def _v2_session(batch: Batch) -> tuple[bytes, dict[tuple[str, bytes], SessionDictionary]]:
    """A v2 batch as a connected gateway sends it after the first: the reference only."""
    encoder = SessionEncoder(batch.gateway_id)
    first = encoder.encode(batch)
    dictionary = decode_batch(first.payload, now_ms=NOW).dictionary
    assert dictionary is not None
    return encoder.encode(batch).payload, {(batch.gateway_id, dictionary.ref): dictionary}


# ------------------------------------------------------------------------- valid batches


@SLOW
@given(batches(), GAPS, st.integers(0, 2**40))
def test_valid_v2_batches_take_the_fast_path_and_equal_the_reference(
        batch: Batch, gaps: list[tuple[int, int, int, str]], sent: int) -> None:
    assert check(encode_batch(batch, gaps, sent))  # the full dictionary carried
    payload, known = _v2_session(batch)
    assert check(payload, known)  # the dictionary by reference
    assert not check(payload)  # an unknown reference: the reference answers need


@SLOW
@given(batches(), GAPS, st.integers(0, 2**40))
def test_valid_v1_batches_take_the_fast_path_and_equal_the_reference(
        batch: Batch, gaps: list[tuple[int, int, int, str]], sent: int) -> None:
    v1_gaps = [(a, b, max(c, 0), r) for a, b, c, r in gaps]
    assert check(encode_batch(batch, v1_gaps, sent, version=1))


@SLOW
@given(batches(), st.sampled_from([1, 2]), st.data())
def test_rows_with_implausible_times_are_refused_as_the_reference_does(
        batch: Batch, version: int, data: st.DataObject) -> None:
    rows = list(batch.observations)
    i = data.draw(st.integers(0, len(rows) - 1))
    o = rows[i]
    shift = data.draw(st.sampled_from([-(10**12), 10**13]))
    rows[i] = Observation(o.stream, o.result, o.phenomenon_ms + shift, o.provenance,
                          None if o.phenomenon_end_ms is None else o.phenomenon_end_ms + shift,
                          None if o.result_ms is None else o.result_ms + shift, o.raw_result,
                          o.quality, o.sequence)
    check(encode_batch(Batch(batch.gateway_id, tuple(rows)), version=version))


def test_non_finite_values_survive() -> None:
    s = Datastream(GW, "sds", "pm2_5")
    rows = tuple(Observation(s, v, 1_800_000_000_000, Provenance("SDS011"), sequence=i + 1)
                 for i, v in enumerate([math.nan, math.inf, -math.inf, 1.5]))
    for version in (1, 2):
        b = decode_columns(encode_batch(Batch(GW, rows), version=version), now_ms=NOW)
        assert _floats(b.rows.result) == ["nan", "inf", "-inf", "1.5"]
        msg = cbor2.loads(encode_batch(Batch(GW, rows), version=version))
        msg["val"][3] = -0.0  # a float on the wire is kept as it is, sign included
        assert check(cbor2.dumps(msg))
        assert _floats(decode_columns(cbor2.dumps(msg), now_ms=NOW).rows.result)[3] == "-0.0"


def test_scores_and_templates_become_columns() -> None:
    s = Datastream(GW, "sds", "pm2_5")
    q = Quality(3, {"spike": 3, "gross_range": 1}, {"anomaly": 0.812, "gap_s": 12.5})
    rows = (Observation(s, 1.0, 1_800_000_000_000, Provenance("SDS011"), quality=q, sequence=1),
            Observation(s, 2.0, 1_800_000_000_000, Provenance("SDS011"), sequence=2))
    for version in (1, 2):
        b = decode_columns(encode_batch(Batch(GW, rows), version=version), now_ms=NOW).rows
        assert b.quality_flag == [3, None] and b.anomaly_milli == [812, None]
        assert b.other_scores == ['{"gap_s": 12.5}', None]
        assert b.quality_profile[0] is not None
        assert b.quality_profile[0].tests == (("gross_range", 1), ("spike", 3))


# ----------------------------------------------------------------------- hostile batches


KEYS = ["ver", "gw", "sent", "sr", "st", "qn", "s0", "sd", "t0", "dt", "si", "val", "dur",
        "rt", "raw", "q", "qk", "qs", "qv", "gaps"]
hostile = st.one_of(cbor_values, st.sampled_from(HOSTILE))


def _message(batch: Batch, version: int) -> tuple[dict[object, object],
                                                   dict[tuple[str, bytes], SessionDictionary]]:
    if version == 1:
        return cbor2.loads(encode_batch(batch, version=1)), {}
    payload, known = _v2_session(batch)
    return cbor2.loads(payload), known


@SLOW
@given(batches(max_rows=8), st.sampled_from([1, 2]), st.booleans(),
       st.dictionaries(st.sampled_from(KEYS), hostile, max_size=3),
       st.lists(st.sampled_from(KEYS), max_size=2))
def test_any_field_replaced_by_anything_decodes_as_the_reference(
        batch: Batch, version: int, full: bool, replace: dict[str, object],
        drop: list[str]) -> None:
    msg, known = _message(batch, version)
    if full and version == 2:
        msg = cbor2.loads(encode_batch(batch))
    msg.update(replace)
    for key in drop:
        msg.pop(key, None)
    check(cbor2.dumps(msg), known)


@SLOW
@given(batches(max_rows=8), st.sampled_from([1, 2]), st.booleans(),
       st.sampled_from(KEYS), st.data())
def test_any_element_replaced_by_anything_decodes_as_the_reference(
        batch: Batch, version: int, full: bool, key: str, data: st.DataObject) -> None:
    """One element inside a column, map, stream entry, template or score column."""
    msg, known = _message(batch, version)
    if full and version == 2:
        msg = cbor2.loads(encode_batch(batch))
    value = msg.get(key)
    junk = data.draw(hostile)
    if isinstance(value, list) and value:
        i = data.draw(st.integers(0, len(value) - 1))
        inner = value[i]
        if isinstance(inner, list) and inner and data.draw(st.booleans()):
            inner[data.draw(st.integers(0, len(inner) - 1))] = junk
        else:
            value[i] = junk
    elif isinstance(value, dict) and value:
        k = data.draw(st.sampled_from(list(value)))
        value[data.draw(st.sampled_from([k, junk if isinstance(junk, int | str) else k]))] = junk
    else:
        msg[key] = junk
    check(cbor2.dumps(msg), known)


@settings(max_examples=100, deadline=None)
@given(st.randoms(use_true_random=False))
def test_fuzz_mutations_decode_as_the_reference(rng: random.Random) -> None:
    """bench/fuzz_contract.py's structural and byte-level mutations of real v1/v2 batches."""
    seeds = _seed_payloads()
    carried = decode_batch(seeds[0]).dictionary
    assert carried is not None
    known = {(FUZZ_GW, carried.ref): carried}
    ref_only = cbor2.loads(seeds[0])
    ref_only.pop("st")
    ref_only.pop("qn")
    messages = [cbor2.loads(p) for p in seeds] + [ref_only]
    for _ in range(30):
        check(cbor2.dumps(_mutate_structure(rng, rng.choice(messages))), known)
        check(_mutate_bytes(rng, rng.choice(seeds)), known)


@pytest.mark.parametrize("payload", [b"", b"\xff", cbor2.dumps([1, 2]), cbor2.dumps({"ver": 9}),
                                     bytearray(b"\xa0"), cbor2.dumps({"ver": True})])
def test_garbage_is_refused_by_the_reference(payload: bytes) -> None:
    with pytest.raises(ContractError):
        decode_columns(payload, now_ms=NOW)
    assert not check(bytes(payload))


@pytest.mark.parametrize("lookalike", [True, 1.0])
def test_values_equal_to_valid_ones_but_of_another_type_are_not_cached_as_them(
        lookalike: object) -> None:
    """A cache keyed on values must not take True or 1.0 for the exponent/flag 1."""
    s = Datastream(GW, "sds", "temperature")
    q = Quality()
    q.set("spike", 1)
    batch = Batch(GW, (Observation(s, 1.5, 1_800_000_000_000, Provenance("X"), quality=q,
                                   sequence=1),))
    for version in (1, 2):
        msg = cbor2.loads(encode_batch(batch, version=version))
        assert check(cbor2.dumps(msg))  # cached now
        if version == 1:
            msg["q"][0]["tests"]["spike"] = lookalike
        else:
            msg["qk"][0][2] = lookalike
        assert not check(cbor2.dumps(msg))
