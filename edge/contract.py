"""The upload contract's compact batch codec, imported by both the gateway and the twin receiver.

One MQTT message carries one batch as a CBOR map (RFC 8949). Columns instead of rows keep it
small (≈6–9 bytes per observation). The normative description, with an annotated example, is
docs/upload-contract.md; this module is its reference implementation.

=======  =====================================================================================
key      meaning
=======  =====================================================================================
``ver``  contract major version (1); a receiver rejects other majors
``gw``   gateway id
``sent`` time the batch was encoded, ms since epoch UTC
``st``   stream table: one entry per (datastream, provenance) in this batch:
         ``[sensor_id, quantity_code, ucum_unit, exponent, provenance_map]``
``s0``   sequence number of row 0
``sd``   optional: sequence deltas for rows 1..n-1 (absent when every delta is 1)
``t0``   phenomenon time (start) of row 0, ms since epoch UTC
``dt``   per row: phenomenon time minus the previous row's (row 0: 0), ms
``si``   per row: index into ``st``
``val``  per row: the result as an integer multiple of ``10**exponent`` of its stream, or a
         float when not finite or not representable that way
``dur``  optional map row → interval length in ms (phenomenon time is an interval)
``rt``   optional map row → result time minus phenomenon end, ms (absent: equal)
``raw``  optional map row → uncalibrated result, encoded like ``val``
``q``    optional map row → quality ``{"agg": flag, "tests": {...}, "scores": {...}}``
``gaps`` optional list of ``[first_seq, last_seq, count, reason]``: sequence numbers the gateway
         will never send (evicted from a full buffer, expired by TTL)
=======  =====================================================================================

Observation ids are not sent: both sides derive ``UUIDv5(gateway_id/sequence)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import cbor2

from edge.model import Batch, Datastream, Observation, Provenance, Quality, observation_id
from edge.quantities import QUANTITIES

_T = TypeVar("_T")

CONTRACT_VERSION = 1
_MAX_ROWS = 100_000


class ContractError(ValueError):
    """A message that does not follow the upload contract; the text says what is wrong."""


def _exponent(quantity_code: str) -> int:
    q = QUANTITIES.get(quantity_code)
    resolution = q.resolution if q is not None else 0.001
    return math.floor(math.log10(resolution) + 1e-9)


_EXP_CACHE: dict[str, int] = {}


def _scale(value: float, exp: int) -> int | float:
    if not math.isfinite(value):
        return value
    scaled = value * 10.0 ** (-exp)
    if not abs(scaled) < 2.0**53:
        return value
    n = round(scaled)
    if abs(scaled - n) > 1e-6 * max(1.0, abs(scaled)):
        return value  # not on the grid: send the float itself, never lose precision silently
    return n


def _unscale(value: object, exp: int) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError(f"value {value!r} is not a number")
    if isinstance(value, float):
        return value
    return round(value * 10.0**exp, -exp) if exp < 0 else float(value * 10**exp)


def quantize(value: float, quantity_code: str) -> float:
    """The value as the receiver will see it after a compact round trip."""
    exp = _EXP_CACHE.get(quantity_code)
    if exp is None:
        exp = _EXP_CACHE[quantity_code] = _exponent(quantity_code)
    return _unscale(_scale(value, exp), exp)


def encode_batch(
    batch: Batch,
    gaps: Sequence[tuple[int, int, int, str]] = (),
    sent_ms: int = 0,
) -> bytes:
    """Encode committed observations (sequence set, ascending) as one compact CBOR message."""
    obs = batch.observations
    if not obs:
        raise ValueError("empty batch")
    streams: dict[tuple[Datastream, Provenance], int] = {}
    table: list[list[object]] = []
    si: list[int] = []
    val: list[int | float] = []
    dt: list[int] = []
    sd: list[int] = []
    dur: dict[int, int] = {}
    rt: dict[int, int] = {}
    raw: dict[int, int | float] = {}
    quality: dict[int, dict[str, object]] = {}
    exps: list[int] = []
    prev_t = obs[0].phenomenon_ms
    prev_seq = obs[0].sequence
    if prev_seq is None:
        raise ValueError("observation without sequence number")
    for row, o in enumerate(obs):
        key = (o.stream, o.provenance)
        idx = streams.get(key)
        if idx is None:
            idx = streams[key] = len(table)
            exp = _EXP_CACHE.get(o.stream.quantity_code)
            if exp is None:
                exp = _EXP_CACHE[o.stream.quantity_code] = _exponent(o.stream.quantity_code)
            q = QUANTITIES.get(o.stream.quantity_code)
            table.append(
                [
                    o.stream.sensor_id,
                    o.stream.quantity_code,
                    q.unit if q else "",
                    exp,
                    o.provenance.as_dict(),
                ]
            )
            exps.append(exp)
        exp = exps[idx]
        si.append(idx)
        val.append(_scale(o.result, exp))
        dt.append(o.phenomenon_ms - prev_t)
        prev_t = o.phenomenon_ms
        seq = o.sequence
        if seq is None:
            raise ValueError("observation without sequence number")
        sd.append(seq - prev_seq)
        prev_seq = seq
        end = o.phenomenon_end_ms
        if end is not None:
            dur[row] = end - o.phenomenon_ms
        if o.result_ms is not None:
            rt[row] = o.result_ms - (end if end is not None else o.phenomenon_ms)
        if o.raw_result is not None:
            raw[row] = _scale(o.raw_result, exp)
        if o.quality is not None:
            quality[row] = o.quality.as_dict()
    message: dict[str, object] = {
        "ver": CONTRACT_VERSION,
        "gw": batch.gateway_id,
        "sent": sent_ms,
        "st": table,
        "s0": obs[0].sequence,
        "t0": obs[0].phenomenon_ms,
        "dt": dt,
        "si": si,
        "val": val,
    }
    if any(d != 1 for d in sd[1:]):
        message["sd"] = sd[1:]
    for name, column in (("dur", dur), ("rt", rt), ("raw", raw), ("q", quality)):
        if column:
            message[name] = column
    if gaps:
        message["gaps"] = [list(g) for g in gaps]
    return cbor2.dumps(message)


@dataclass(slots=True)
class DecodedBatch:
    """A received batch: observations with their ids, and the gaps the gateway announced."""

    gateway_id: str
    observations: list[Observation]
    ids: list[str]
    gaps: list[tuple[int, int, int, str]] = field(default_factory=list)
    sent_ms: int = 0


def decode_batch(payload: bytes) -> DecodedBatch:
    """Decode and validate one compact batch; raises :class:`ContractError` with the reason."""
    try:
        msg = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise ContractError(f"not CBOR: {exc}") from None
    if not isinstance(msg, dict):
        raise ContractError("top level is not a map")
    ver = msg.get("ver")
    if ver != CONTRACT_VERSION:
        raise ContractError(
            f"unsupported contract version {ver!r} (this receiver speaks {CONTRACT_VERSION})"
        )
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
    streams = [_stream(gw, entry) for entry in table]
    seq = _typed(msg, "s0", int)
    t = _typed(msg, "t0", int)
    dur = _sparse(msg, "dur", n)
    rt = _sparse(msg, "rt", n)
    raw = _sparse(msg, "raw", n)
    qual = _sparse(msg, "q", n)
    observations: list[Observation] = []
    ids: list[str] = []
    for row in range(n):
        idx = si[row]
        if not isinstance(idx, int) or not 0 <= idx < len(streams):
            raise ContractError(f"row {row}: stream index {idx!r} out of range")
        if row:
            step = 1 if sd is None else sd[row - 1]
            if not isinstance(step, int) or step <= 0:
                raise ContractError(f"row {row}: sequence must increase")
            seq += step
        delta = dt[row]
        if not isinstance(delta, int):
            raise ContractError(f"row {row}: time delta {delta!r} is not an integer")
        t += delta
        stream, prov, exp = streams[idx]
        end = None
        if row in dur:
            d = dur[row]
            if not isinstance(d, int) or d < 0:
                raise ContractError(f"row {row}: interval length {d!r} invalid")
            end = t + d
        result_ms = None
        if row in rt:
            off = rt[row]
            if not isinstance(off, int):
                raise ContractError(f"row {row}: result time offset {off!r} invalid")
            result_ms = (end if end is not None else t) + off
        quality = None
        if row in qual:
            qd = qual[row]
            if not isinstance(qd, dict):
                raise ContractError(f"row {row}: quality is not a map")
            try:
                quality = Quality.from_dict(qd)
            except (TypeError, ValueError) as exc:
                raise ContractError(f"row {row}: quality invalid: {exc}") from None
        observations.append(
            Observation(
                stream=stream,
                result=_unscale(val[row], exp),
                phenomenon_ms=t,
                provenance=prov,
                phenomenon_end_ms=end,
                result_ms=result_ms,
                raw_result=_unscale(raw[row], exp) if row in raw else None,
                quality=quality,
                sequence=seq,
            )
        )
        ids.append(str(observation_id(gw, seq)))
    gaps = [_gap(g) for g in msg.get("gaps", [])]
    sent = msg.get("sent", 0)
    return DecodedBatch(gw, observations, ids, gaps, sent if isinstance(sent, int) else 0)


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


def _stream(gw: str, entry: object) -> tuple[Datastream, Provenance, int]:
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
    return Datastream(gw, sensor, qty), Provenance.from_dict(prov), exp


def _gap(g: object) -> tuple[int, int, int, str]:
    if (
        not isinstance(g, list)
        or len(g) != 4
        or not all(isinstance(x, int) for x in g[:3])
        or not isinstance(g[3], str)
    ):
        raise ContractError(f"gap entry {g!r} must be [first, last, count, reason]")
    return g[0], g[1], g[2], g[3]
