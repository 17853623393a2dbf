"""The receiver's fast path: a compact v1 batch straight into columns (:class:`IngestBatch`).

:func:`edge.contract.decode_batch` builds an :class:`~edge.model.Observation`, a UUIDv5 id, a
:class:`~edge.model.Provenance` and a :class:`~edge.model.Quality` per row, and the store then
takes them apart again; profiled, that was most of the receiver's CPU per observation. This
module reads the same CBOR map column by column: no per-row objects, no ids (the store keys on
(gateway, seq)), stream table entries and quality maps interned across messages.

It accepts and refuses exactly what ``from_decoded(decode_batch(payload))`` does and produces
an equal :class:`IngestBatch` (a property test holds them together); shapes it does not
expect (odd quality maps) take that slow path, so the two can never disagree.
"""

from __future__ import annotations

import itertools
from typing import TypeVar

import cbor2

from edge.contract import CONTRACT_VERSION, ContractError, decode_batch
from edge.ingest.rows import (
    IngestBatch,
    QualityProfile,
    StreamDef,
    from_decoded,
    quality_columns,
)
from edge.model import Quality

_T = TypeVar("_T")
_MAX_ROWS = 100_000
_PROVENANCE_KEYS = frozenset({"sensorModel", "sensorSerial", "firmwareVersion", "calibrationId",
                              "calibrationVersion", "nodeId"})
_CACHE_MAX = 50_000

QualityCells = tuple[int | None, QualityProfile | None, int | None, str | None]

# Interned across messages: a gateway sends the same few stream entries and quality maps.
_streams: dict[tuple[object, ...], tuple[StreamDef, int]] = {}
_qualities: dict[tuple[object, ...], QualityCells] = {}


class _SlowPath(Exception):
    """A shape the fast path does not handle: decode with the reference decoder."""


def decode_columns(payload: bytes) -> IngestBatch:
    """Decode and validate one compact batch; raises :class:`ContractError` with the reason."""
    try:
        return _decode(payload)
    except _SlowPath:
        pass
    try:
        return from_decoded(decode_batch(payload))
    except ContractError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
        raise ContractError(f"malformed batch: {type(exc).__name__}: {exc}") from None


def _typed(msg: dict[object, object], key: str, kind: type[_T]) -> _T:
    value = msg.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ContractError(f"{key!r} missing or not {kind.__name__}")
    return value


def _sparse(msg: dict[object, object], key: str, n: int) -> dict[int, object]:
    value = msg.get(key, {})
    if not isinstance(value, dict):
        raise ContractError(f"{key!r} must be a map row → value")
    for row in value:
        if not isinstance(row, int) or not 0 <= row < n:
            raise ContractError(f"{key!r}: row {row!r} out of range")
    return value


def _decode(payload: bytes) -> IngestBatch:
    try:
        msg = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise ContractError(f"not CBOR: {exc}") from None
    if not isinstance(msg, dict):
        raise ContractError("top level is not a map")
    ver = msg.get("ver")
    if ver != CONTRACT_VERSION:
        raise _SlowPath  # the reference decoder words the refusal (and knows newer versions)
    gw = _typed(msg, "gw", str)
    table = _typed(msg, "st", list)
    si = _typed(msg, "si", list)
    val = _typed(msg, "val", list)
    dt = _typed(msg, "dt", list)
    n = len(si)
    if not 0 < n <= _MAX_ROWS or len(val) != n or len(dt) != n:
        raise ContractError("columns si/val/dt must have the same length, 1..100000")
    sd = msg.get("sd")
    if sd is not None and (not isinstance(sd, list) or len(sd) != n - 1):
        raise ContractError("sd must list n-1 sequence deltas")
    entries = [_stream_entry(entry) for entry in table]
    s0 = _typed(msg, "s0", int)
    t0 = _typed(msg, "t0", int)
    dur = _sparse(msg, "dur", n)
    rt = _sparse(msg, "rt", n)
    raw = _sparse(msg, "raw", n)
    qual = _sparse(msg, "q", n)
    # every row's stream index, sequence step and time delta is an int (bool counts as int,
    # as in the reference decoder)
    nstreams = len(entries)
    for row, idx in enumerate(si):
        if not isinstance(idx, int) or not 0 <= idx < nstreams:
            raise ContractError(f"row {row}: stream index {idx!r} out of range")
    if sd is None:
        seq = list(range(s0, s0 + n))
    else:
        for row, step in enumerate(sd, 1):
            if not isinstance(step, int) or step <= 0:
                raise ContractError(f"row {row}: sequence must increase")
        seq = list(itertools.accumulate(sd, initial=s0))
    for row, delta in enumerate(dt):
        if not isinstance(delta, int):
            raise ContractError(f"row {row}: time delta {delta!r} is not an integer")
    times = list(itertools.accumulate(dt, initial=t0))[1:]
    # streams in order of first use, identical definitions merged (as from_decoded does)
    out_index: dict[StreamDef, int] = {}
    table_to_out: list[int] = []
    for sdef, _exp in entries:
        table_to_out.append(out_index.setdefault(sdef, len(out_index)))
    first_use: dict[int, int] = {}
    for i in si:
        o = table_to_out[i]
        if o not in first_use:
            first_use[o] = len(first_use)
    defs = list(out_index)
    streams = [defs[o] for o in sorted(first_use, key=first_use.__getitem__)]
    stream_index = [first_use[table_to_out[i]] for i in si]
    exps = [exp for _sdef, exp in entries]
    result = [_unscale(v, exps[i]) for v, i in zip(val, si, strict=True)]
    duration: list[int | None] = [None] * n
    for row, d in dur.items():
        if not isinstance(d, int) or d < 0:
            raise ContractError(f"row {row}: interval length {d!r} invalid")
        duration[row] = d
    offset: list[int | None] = [None] * n
    for row, off in rt.items():
        if not isinstance(off, int):
            raise ContractError(f"row {row}: result time offset {off!r} invalid")
        offset[row] = off
    raw_result: list[float | None] = [None] * n
    for row, r in raw.items():
        raw_result[row] = _unscale(r, exps[si[row]])
    flags: list[int | None] = [None] * n
    profiles: list[QualityProfile | None] = [None] * n
    anomaly: list[int | None] = [None] * n
    others: list[str | None] = [None] * n
    for row, q in qual.items():
        flags[row], profiles[row], anomaly[row], others[row] = _quality(row, q)
    raw_gaps = msg.get("gaps", [])
    if not isinstance(raw_gaps, list):
        raise _SlowPath  # the reference decoder decides what an odd "gaps" means
    gaps = [_gap(g) for g in raw_gaps]
    sent = msg.get("sent", 0)
    return IngestBatch(
        gw, streams, stream_index, seq, times, duration, offset, result, raw_result, flags,
        profiles, anomaly, others, gaps, sent if isinstance(sent, int) else 0)


def _stream_entry(entry: object) -> tuple[StreamDef, int]:
    if isinstance(entry, list) and len(entry) == 5 and isinstance(entry[4], dict):
        key = (entry[0], entry[1], entry[2], entry[3], *entry[4].items())
        try:
            hit = _streams.get(key)
        except TypeError:  # unhashable parts: let the checks below word the refusal
            hit = None
        if hit is not None:
            return hit
    else:
        key = ()
    if not isinstance(entry, list) or len(entry) != 5:
        raise ContractError("stream entry must be [sensor, quantity, unit, exponent, provenance]")
    sensor, qty, _unit, exp, prov = entry
    if not isinstance(sensor, str) or not isinstance(qty, str) or not isinstance(exp, int):
        raise ContractError(f"stream entry {entry!r} has wrong types")
    if not -12 <= exp <= 12:
        raise ContractError(f"stream exponent {exp} out of range")
    if not isinstance(prov, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in prov.items()
    ):
        raise ContractError("provenance must be a map of strings")
    known = {k: v for k, v in prov.items() if k in _PROVENANCE_KEYS and v}
    value = (StreamDef.of(sensor, qty, known), int(exp))
    if key:
        _remember(_streams, key, value)
    return value


def _quality(row: int, q: object) -> QualityCells:
    if not isinstance(q, dict):
        raise ContractError(f"row {row}: quality is not a map")
    key = _quality_key(q)
    if key is not None:
        hit = _qualities.get(key)
        if hit is not None:
            return hit
    try:
        quality = Quality.from_dict(q)
    except (TypeError, ValueError) as exc:
        raise ContractError(f"row {row}: quality invalid: {exc}") from None
    cells = quality_columns(quality)
    if key is not None:
        _remember(_qualities, key, cells)
    return cells


def _quality_key(q: dict[object, object]) -> tuple[object, ...] | None:
    """A cache key for quality maps whose meaning is plain: int flags, no scores."""
    if set(q) - {"agg", "tests"}:
        return None  # scores vary per row: not worth caching
    agg = q.get("agg")
    tests = q.get("tests")
    if (agg is not None and type(agg) is not int) or (tests is not None
                                                      and not isinstance(tests, dict)):
        return None
    items = tuple(tests.items()) if tests else ()
    if not all(type(k) is str and type(v) is int for k, v in items):
        return None
    return (agg, *items)


def _remember(cache: dict[tuple[object, ...], _T], key: tuple[object, ...], value: _T) -> None:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value


def _unscale(value: object, exp: int) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError(f"value {value!r} is not a number")
    if isinstance(value, float):
        return value
    return round(value * 10.0**exp, -exp) if exp < 0 else float(value * 10**exp)


def _gap(g: object) -> tuple[int, int, int, str]:
    if (
        not isinstance(g, list)
        or len(g) != 4
        or not all(isinstance(x, int) for x in g[:3])
        or not isinstance(g[3], str)
    ):
        raise ContractError(f"gap entry {g!r} must be [first, last, count, reason]")
    return g[0], g[1], g[2], g[3]

