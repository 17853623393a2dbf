"""The receiver's fast path: a compact batch (contract v1 or v2) read straight into columns.

:func:`edge.contract.decode_batch` is the reference: it checks every field and builds an
:class:`~edge.model.Observation` (and a UUIDv5 id) per row, which
:func:`edge.ingest.rows.from_decoded` then takes apart into the columns a store writes.
Profiled, that was most of the receiver's CPU. :func:`decode_columns` checks the same rules a
column at a time with C-level builtins (``map``, ``set``, ``min``, ``max``), converts values
with the reference's expressions, and remembers what repeats from message to message (v1
stream tables, v2 session dictionaries, quality templates and maps). Those caches are keyed only
on exactly-typed values (``str`` names, ``int`` flags, never floats), so ``True`` never passes
for ``1``, nor ``1.0`` for ``1``.

Whatever the fast path would refuse or does not take — a value out of range, a row with an
implausible time, a dictionary this worker does not hold — it hands to the reference decoder
unchanged, so every refusal (reason, gateway, ranges, ``need``) comes from the reference.
Property tests (``tests/twin/test_columns.py``) hold the two equal on valid, corrupted and
hostile batches of both versions.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TypeVar, cast

import cbor2

from edge.contract import (
    EARLIEST_MS,
    FUTURE_SLACK_MS,
    GATEWAY_ID,
    MAX_DICTIONARY,
    MAX_GAPS,
    MAX_INT,
    MAX_PAYLOAD,
    MAX_ROWS,
    MAX_SEQ,
    QC_FLAGS,
    REF_BYTES,
    SCORE_DECIMALS,
    ContractError,
    DictionaryLookup,
    Gap,
    SessionDictionary,
    check_dictionary,
    check_name,
    check_stream_entry,
    decode_batch,
    unscale,
)
from edge.ingest.rows import (
    IngestBatch,
    QualityProfile,
    StreamDef,
    from_decoded,
    profile_of,
    score_cells,
)

log = logging.getLogger("duet.ingest")

_K = TypeVar("_K")
_V = TypeVar("_V")
_CACHE_MAX = 50_000
_NUMBERS = frozenset({int, float})
_INTS = frozenset({int})
_MISSING = object()

Cells = tuple[int | None, QualityProfile | None, int | None, str | None]  # flag, profile, ×1000, JSON
_NO_QUALITY: Cells = (None, None, None, None)


@dataclass(slots=True)
class ReceivedBatch:
    """A batch as the receiver handles it: its accepted rows as columns (with its gaps), the
    rows refused one by one (sequence → reason), and its session dictionary when it carried
    one in full (v2)."""

    gateway_id: str
    version: int
    rows: IngestBatch
    rejected: dict[int, str] = field(default_factory=dict)
    dictionary: SessionDictionary | None = None

    @property
    def sequences(self) -> list[int]:
        """Sequence numbers of the accepted rows."""
        return self.rows.seq

    @property
    def gaps(self) -> list[Gap]:
        return self.rows.gaps


class Slow(Exception):
    """The fast path does not take this batch: the reference decoder decides."""


fast_path_errors = 0  # fast-path bugs met (each message was decoded by the reference instead)


def decode_columns(
    payload: bytes, lookup: DictionaryLookup | None = None, *, now_ms: int | None = None
) -> ReceivedBatch:
    """Decode and validate one batch exactly as :func:`edge.contract.decode_batch` followed by
    :func:`edge.ingest.rows.from_decoded` would; raises :class:`ContractError` (or
    :class:`edge.contract.UnknownDictionary`) with the reference's reason."""
    global fast_path_errors
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    try:
        return fast_columns(payload, lookup, now)
    except Slow:
        pass
    except Exception:  # a bug here must cost speed, never a message: the reference decides
        fast_path_errors += 1
        if fast_path_errors == 1:
            log.exception("fast batch decoder failed; using the reference decoder",
                          extra={"event": "ingest_fast_path_error"})
    decoded = decode_batch(payload, lookup, now_ms=now)
    return ReceivedBatch(decoded.gateway_id, decoded.version, from_decoded(decoded),
                         decoded.rejected, decoded.dictionary)


def fast_columns(payload: bytes, lookup: DictionaryLookup | None, now_ms: int) -> ReceivedBatch:
    """The fast path alone: the batch, or :class:`Slow` (nothing else, whatever the input)."""
    if type(payload) is not bytes or len(payload) > MAX_PAYLOAD:
        raise Slow
    try:
        msg = cbor2.loads(payload)
    except Exception:  # cbor2 raises several types on garbage
        raise Slow from None
    if type(msg) is not dict:
        raise Slow
    get = msg.get
    ver, gw, dt = get("ver"), get("gw"), get("dt")
    if (type(ver) is not int or ver not in (1, 2) or type(gw) is not str
            or not GATEWAY_ID.fullmatch(gw) or type(dt) is not list or not 0 < len(dt) <= MAX_ROWS):
        raise Slow
    n = len(dt)
    seqs = _sequences(get("s0"), get("sd"), n)
    sent = get("sent", 0)
    if type(sent) is not int or not 0 <= sent <= MAX_INT:
        raise Slow
    gaps = _gaps(get("gaps", _MISSING), ver)
    carried: SessionDictionary | None = None
    if ver == 1:
        table = _v1_table(get("st"))
    else:
        table, carried = _v2_table(msg, gw, lookup)
    si = _stream_indexes(get("si"), n, len(table.defs))
    result = _values(get("val"), si, table)
    times, durations, offsets = _times(msg, dt, n, now_ms + FUTURE_SLACK_MS)
    raw = _raw(get("raw", {}), si, table.exps, n)
    quality = _quality_v1(get("q"), n) if ver == 1 else _quality_v2(msg, n, table)
    streams, stream_index = _streams_in_use(si, table)
    rows = IngestBatch(gw, streams, stream_index, seqs, times, durations, offsets, result, raw,
                       *quality, gaps=gaps, sent_ms=sent)
    return ReceivedBatch(gw, ver, rows, {}, carried)


# ----------------------------------------------------------------------------- columns


def _all_ints(values: list[object], lo: int, hi: int) -> list[int]:
    """The list itself when every item is an ``int`` (not bool) in lo..hi; else Slow."""
    if not values:
        return []
    if set(map(type, values)) != _INTS:
        raise Slow
    ints = cast("list[int]", values)
    if min(ints) < lo or max(ints) > hi:
        raise Slow
    return ints


def _sequences(s0: object, sd: object, n: int) -> list[int]:
    if type(s0) is not int or not 1 <= s0 <= MAX_SEQ:
        raise Slow
    if sd is None:
        if s0 + n - 1 > MAX_SEQ:
            raise Slow
        return list(range(s0, s0 + n))
    if type(sd) is not list or len(sd) != n - 1:
        raise Slow
    seqs = list(accumulate(_all_ints(sd, 1, MAX_SEQ), initial=s0))
    if seqs[-1] > MAX_SEQ:
        raise Slow
    return seqs


def _gaps(value: object, ver: int) -> list[Gap]:
    if value is _MISSING:
        return []
    if type(value) is not list or len(value) > MAX_GAPS:
        raise Slow
    lowest_count = -1 if ver >= 2 else 0
    out: list[Gap] = []
    for gap in value:
        if type(gap) is not list or len(gap) != 4:
            raise Slow
        first, last, count, reason = gap
        if (type(first) is not int or type(last) is not int or type(count) is not int
                or type(reason) is not str or not 1 <= first <= last <= MAX_SEQ
                or not lowest_count <= count <= last - first + 1 or not 0 < len(reason) <= 64):
            raise Slow
        out.append((first, last, count, reason))
    return out


def _stream_indexes(si: object, n: int, streams: int) -> list[int]:
    if type(si) is int:
        if not 0 <= si < streams:
            raise Slow
        return [si] * n
    if type(si) is not list or len(si) != n:
        raise Slow
    return _all_ints(si, 0, streams - 1)


def _numbers(values: Sequence[object]) -> None:
    """Every item a float, or an int within ±2^53 (as the reference's ``_value_ok``)."""
    kinds = set(map(type, values))
    if not kinds <= _NUMBERS:
        raise Slow
    if int in kinds:
        ints = [v for v in values if type(v) is int]
        if min(ints) < -MAX_INT or max(ints) > MAX_INT:
            raise Slow


def _values(val: object, si: list[int], table: _Table) -> list[float]:
    if type(val) is not list or len(val) != len(si):
        raise Slow
    _numbers(val)
    # the reference's unscale, inlined: round(v * 10.0**exp, -exp) below 0, else float(v * 10**exp)
    scales, digits, factors = table.scales, table.digits, table.factors
    return [v if type(v) is float
            else round(v * scales[i], digits[i]) if digits[i] else float(v * factors[i])
            for v, i in zip(val, si, strict=True)]


def _row_map(value: object, n: int, lo: int, hi: int) -> dict[int, int]:
    """A map row → int (rows 0..n-1, values lo..hi), or Slow."""
    if type(value) is not dict:
        raise Slow
    if value:
        _all_ints(list(value), 0, n - 1)
        _all_ints(list(value.values()), lo, hi)
    return value


def _times(msg: dict[object, object], dt: list[object], n: int, latest: int
           ) -> tuple[list[int], list[int | None], list[int | None]]:
    """Phenomenon times, interval lengths and result-time offsets; Slow when any time of any
    row is implausible (the reference refuses such rows one by one)."""
    deltas = _all_ints(dt, -MAX_INT, MAX_INT)
    t0 = msg.get("t0")
    if type(t0) is not int or not -MAX_INT <= t0 <= MAX_INT:
        raise Slow
    times = list(accumulate(deltas, initial=t0))
    del times[0]
    if min(times) < EARLIEST_MS or max(times) > latest:
        raise Slow
    dur = msg.get("dur")
    durations: list[int | None]
    if dur is None:
        durations = [None] * n
    elif type(dur) is int:
        if not 0 <= dur <= MAX_INT or max(times) + dur > latest:
            raise Slow
        durations = [dur] * n
    else:
        durations = [None] * n
        for row, length in _row_map(dur, n, 0, MAX_INT).items():
            if times[row] + length > latest:
                raise Slow
            durations[row] = length
    offsets: list[int | None] = [None] * n
    rt = msg.get("rt")
    if rt is not None:
        for row, offset in _row_map(rt, n, -MAX_INT, MAX_INT).items():
            result_ms = times[row] + (durations[row] or 0) + offset
            if not EARLIEST_MS <= result_ms <= latest:
                raise Slow
            offsets[row] = offset
    return times, durations, offsets


def _raw(value: object, si: list[int], exps: list[int], n: int) -> list[float | None]:
    out: list[float | None] = [None] * n
    if type(value) is not dict:
        raise Slow
    if value:
        _all_ints(list(value), 0, n - 1)
        _numbers(list(value.values()))
        for row, v in value.items():
            out[row] = unscale(v, exps[si[row]])
    return out


def _streams_in_use(si: list[int], table: _Table) -> tuple[list[StreamDef], list[int]]:
    """The batch's streams in order of first use, equal definitions merged (as
    :func:`edge.ingest.rows.from_decoded` lists them), and each row's index into them."""
    key = tuple(si)
    layout = table.layouts.get(key)
    if layout is None:
        canonical = [table.canonical[i] for i in si]
        order = list(dict.fromkeys(canonical))
        position = {c: k for k, c in enumerate(order)}
        layout = ([table.defs[c] for c in order], [position[c] for c in canonical])
        _remember(table.layouts, key, layout)
    return list(layout[0]), list(layout[1])


# ------------------------------------------------------------------ tables and dictionaries


class _Table:
    """What rows point into: stream definitions with their value exponents, and in v2 the
    quality names; plus what this process derived from them so far (templates, layouts)."""

    __slots__ = ("canonical", "defs", "digits", "exps", "factors", "layouts", "names", "scales",
                 "templates")

    def __init__(self, defs: list[StreamDef], exps: list[int], names: Sequence[str] = ()) -> None:
        self.defs = defs
        self.exps = exps
        self.names = names
        # per stream: how to unscale its values (see _values)
        self.scales = [10.0**e for e in exps]
        self.digits = [max(-e, 0) for e in exps]
        self.factors = [10 ** max(e, 0) for e in exps]
        # per stream: the first stream with an equal definition (rows of both are one stream)
        first: dict[StreamDef, int] = {}
        self.canonical = [first.setdefault(d, i) for i, d in enumerate(defs)]
        self.templates: dict[tuple[int, ...], tuple[int, QualityProfile | None]] = {}
        self.layouts: dict[tuple[int, ...], tuple[list[StreamDef], list[int]]] = {}


_v1_tables: dict[tuple[tuple[object, ...], ...], _Table] = {}
_plans: dict[bytes, _Table] = {}  # session dictionary body → its tables


def _remember(cache: dict[_K, _V], key: _K, value: _V) -> None:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value


def _v1_table(st: object) -> _Table:
    """A v1 stream table (sent with every batch); the same table again is a dictionary hit."""
    if type(st) is not list or not 0 < len(st) <= MAX_DICTIONARY:
        raise Slow
    key = tuple(_v1_entry_key(entry) for entry in st)
    try:
        table = _v1_tables.get(key)
    except TypeError:  # an unhashable provenance value: let the reference refuse it
        raise Slow from None
    if table is None:
        checked = [_v1_entry(entry) for entry in st]
        table = _Table([sdef for sdef, _ in checked], [exp for _, exp in checked])
        _remember(_v1_tables, key, table)
    return table


def _v1_entry_key(entry: object) -> tuple[object, ...]:
    """A stream entry as a cache key, once its parts have exactly the types a valid one has
    (no other CBOR value equals a str, and an int exponent is checked to be an int)."""
    if type(entry) is not list or len(entry) != 5:
        raise Slow
    sensor, qty, unit, exp, prov = entry
    if (type(sensor) is not str or type(qty) is not str or type(unit) is not str
            or type(exp) is not int or type(prov) is not dict):
        raise Slow
    return (sensor, qty, unit, exp, *prov.items())


def _v1_entry(entry: object) -> tuple[StreamDef, int]:
    try:
        checked = check_stream_entry(entry)
    except ContractError:
        raise Slow from None
    return (_stream_def(checked.sensor_id, checked.quantity_code, checked.provenance.as_dict()),
            checked.exponent)


def _stream_def(sensor: str, quantity: str, provenance: dict[str, str]) -> StreamDef:
    return StreamDef.of(sensor, quantity, provenance)


def _v2_table(msg: dict[object, object], gw: str, lookup: DictionaryLookup | None
              ) -> tuple[_Table, SessionDictionary | None]:
    ref = msg.get("sr")
    if type(ref) is not bytes or len(ref) != REF_BYTES:
        raise Slow
    carried: SessionDictionary | None = None
    if "st" in msg or "qn" in msg:
        try:
            dictionary = carried = check_dictionary(msg.get("st"), msg.get("qn", []))
        except ContractError:
            raise Slow from None
        if dictionary.ref != ref:
            raise Slow
    else:
        found = lookup(gw, ref) if lookup is not None else None
        if found is None:
            raise Slow  # the reference answers UnknownDictionary
        dictionary = found
    table = _plans.get(dictionary.body)  # the body determines the tables (it is their CBOR)
    if table is None:
        table = _Table([_stream_def(e.sensor_id, e.quantity_code, e.provenance.as_dict())
                        for e in dictionary.streams], [e.exponent for e in dictionary.streams],
                       dictionary.names)
        _remember(_plans, dictionary.body, table)
    if not table.defs:
        raise Slow
    return table, carried


# ----------------------------------------------------------------------------- quality


def _quality_columns(cells: list[Cells]) -> tuple[list[int | None], list[QualityProfile | None],
                                                  list[int | None], list[str | None]]:
    return ([c[0] for c in cells], [c[1] for c in cells], [c[2] for c in cells],
            [c[3] for c in cells])


def _quality_v1(q: object, n: int) -> tuple[list[int | None], list[QualityProfile | None],
                                            list[int | None], list[str | None]]:
    if q is None:
        return [None] * n, [None] * n, [None] * n, [None] * n
    if type(q) is not dict:
        raise Slow
    cells: list[Cells] = [_NO_QUALITY] * n
    if q:
        _all_ints(list(q), 0, n - 1)
        for row, qd in q.items():
            cells[row] = _quality_map(qd)
    return _quality_columns(cells)


_v1_qualities: dict[tuple[object, ...], Cells] = {}


def _quality_map(qd: object) -> Cells:
    """One v1 row's ``{"agg", "tests", "scores"}`` as cells (maps without scores cached)."""
    if type(qd) is not dict:
        raise Slow
    agg = qd.get("agg", 2)
    tests = qd.get("tests", _MISSING)
    scores = qd.get("scores", _MISSING)
    if tests is _MISSING:
        tests = {}
    if scores is _MISSING:
        scores = {}
    if type(agg) is not int or agg not in QC_FLAGS or type(tests) is not dict \
            or type(scores) is not dict:
        raise Slow
    if tests and set(map(type, tests.values())) != _INTS:
        raise Slow
    if not scores:  # str keys only ever equal str keys; the int flags were checked above
        key = (agg, *tests.items())
        hit = _v1_qualities.get(key)
        if hit is None:
            _check_tests(tests)
            hit = (agg, profile_of(tests), None, None)
            _remember(_v1_qualities, key, hit)
        return hit
    _check_tests(tests)
    values: dict[str, float] = {}
    for name, value in scores.items():
        if not check_name(name):
            raise Slow
        if type(value) is int and -MAX_INT <= value <= MAX_INT:
            values[name] = float(value)
        elif type(value) is float and math.isfinite(value):
            values[name] = value
        else:
            raise Slow
    return (agg, profile_of(tests), *score_cells(values))


def _check_tests(tests: dict[object, object]) -> None:
    for name, flag in tests.items():
        if not check_name(name) or flag not in QC_FLAGS:
            raise Slow


def _quality_v2(msg: dict[object, object], n: int, table: _Table
                ) -> tuple[list[int | None], list[QualityProfile | None], list[int | None],
                           list[str | None]]:
    qk, qs, qv = msg.get("qk"), msg.get("qs"), msg.get("qv")
    if qk is None and qs is None:
        if qv is not None:
            raise Slow
        return [None] * n, [None] * n, [None] * n, [None] * n
    templates = _templates(qk, table)
    if type(qs) is int:
        if not -1 <= qs < len(templates):
            raise Slow
        index = [qs] * n
    elif type(qs) is list and len(qs) == n:
        _all_ints(qs, -1, len(templates) - 1)
        index = qs
    else:
        raise Slow
    cells: list[Cells] = [(*t, None, None) for t in templates]
    rows: list[Cells] = [cells[i] if i >= 0 else _NO_QUALITY for i in index]
    if qv is not None:
        for row, scores in _scores(qv, n, table.names).items():
            template = index[row]
            if template < 0:
                raise Slow  # a score without a quality
            agg, profile = templates[template]
            rows[row] = (agg, profile, *score_cells(scores))
    return _quality_columns(rows)


def _templates(qk: object, table: _Table) -> list[tuple[int, QualityProfile | None]]:
    if type(qk) is not list or not 0 < len(qk) <= MAX_ROWS:
        raise Slow
    known = table.templates
    out = []
    for template in qk:
        if (type(template) is not list or len(template) % 2 != 1 or len(template) > 257
                or set(map(type, template)) != _INTS):
            raise Slow
        key = tuple(template)
        hit = known.get(key)
        if hit is None:
            hit = _template(template, table.names)
            _remember(known, key, hit)
        out.append(hit)
    return out


def _template(template: list[int], names: Sequence[str]) -> tuple[int, QualityProfile | None]:
    agg = template[0]
    if agg not in QC_FLAGS:
        raise Slow
    tests: dict[str, int] = {}
    for j in range(1, len(template), 2):
        name, flag = template[j], template[j + 1]
        if not 0 <= name < len(names) or flag not in QC_FLAGS:
            raise Slow
        tests[names[name]] = flag
    return agg, profile_of(tests)


def _scores(qv: object, n: int, names: Sequence[str]) -> dict[int, dict[str, float]]:
    """Score columns ``[name, decimals, values]`` → row → {name: score}."""
    if type(qv) is not list or len(qv) > MAX_DICTIONARY:
        raise Slow
    out: dict[int, dict[str, float]] = {}
    for column in qv:
        if type(column) is not list or len(column) != 3:
            raise Slow
        index, decimals, values = column
        if (type(index) is not int or not 0 <= index < len(names) or type(decimals) is not int
                or not 0 <= decimals <= SCORE_DECIMALS):
            raise Slow
        name, scale = names[index], 10**decimals
        if type(values) is list and len(values) == n:
            items = [(row, v) for row, v in enumerate(values) if v is not None]
        elif type(values) is dict:
            if values:
                _all_ints(list(values), 0, n - 1)
            items = list(values.items())
        else:
            raise Slow
        for row, value in items:
            if type(value) is int and -MAX_INT <= value <= MAX_INT:
                score = value / scale
            elif type(value) is float and math.isfinite(value):
                score = value
            else:
                raise Slow
            out.setdefault(row, {})[name] = score
    return out
