"""What the twin stores: a received batch as columns, with its streams normalised.

The receiver decodes a compact batch (:mod:`edge.contract`) into an :class:`IngestBatch`: one
list per column, and a small table of :class:`StreamDef` (sensor, quantity, unit, provenance)
that rows point into. Stores write the columns as they are and keep each distinct stream once
(a row carries a small integer, never its provenance JSON), and key rows on (gateway, seq):
observation ids (UUIDv5 of ``"<gateway>/<seq>"``) are derived, never stored.

Quality is split the same way: the aggregate QARTOD flag and the anomaly score (× 1000, an
integer) are columns; the per-test flags of a row are a :class:`QualityProfile` (e.g.
``{"gross_range": 1, "spike": 1}``) that few rows differ in, stored once and referenced.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import cbor2

from edge.contract import ContractError, DecodedBatch
from edge.model import Datastream, Observation, Provenance, Quality
from edge.quantities import QUANTITIES

Gap = tuple[int, int, int, str]

ANOMALY_SCORE = "anomaly"


@dataclass(frozen=True, slots=True)
class StreamDef:
    """One (sensor, quantity, provenance) of a gateway, as every row of it shares.

    Its hash is computed once (the stores look streams up for every batch), and whether any of
    its texts holds a NUL character (no database text column can) is noted at creation.
    """

    sensor: str
    quantity: str
    unit: str
    provenance: tuple[tuple[str, str], ...]  # sorted (key, value) pairs: hashable and canonical
    _hash: int = field(init=False, repr=False, compare=False)
    has_nul: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.sensor, self.quantity, self.unit,
                                                self.provenance)))
        texts = (self.sensor, self.quantity, self.unit, *(t for kv in self.provenance
                                                          for t in kv))
        object.__setattr__(self, "has_nul", any("\x00" in t for t in texts))

    def __hash__(self) -> int:
        return self._hash

    @classmethod
    def of(cls, sensor: str, quantity: str, provenance: dict[str, str]) -> StreamDef:
        q = QUANTITIES.get(quantity)
        return cls(sensor, quantity, q.unit if q else "", tuple(sorted(provenance.items())))

    def provenance_json(self) -> str:
        return json.dumps(dict(self.provenance), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class QualityProfile:
    """The per-test QARTOD flags of a row, e.g. ``(("gross_range", 1), ("spike", 3))``."""

    tests: tuple[tuple[str, int], ...]

    def as_json(self) -> str:
        return json.dumps(dict(self.tests), sort_keys=True, separators=(",", ":"))


@dataclass(slots=True)
class IngestBatch:
    """One received message's observations as columns (all lists have one entry per row)."""

    gateway: str
    streams: list[StreamDef]
    stream_index: list[int] = field(default_factory=list)
    seq: list[int] = field(default_factory=list)
    phenomenon_ms: list[int] = field(default_factory=list)
    duration_ms: list[int | None] = field(default_factory=list)
    result_offset_ms: list[int | None] = field(default_factory=list)  # result time − end
    result: list[float] = field(default_factory=list)
    raw_result: list[float | None] = field(default_factory=list)
    quality_flag: list[int | None] = field(default_factory=list)
    quality_profile: list[QualityProfile | None] = field(default_factory=list)
    anomaly_milli: list[int | None] = field(default_factory=list)
    other_scores: list[str | None] = field(default_factory=list)  # JSON of non-anomaly scores
    gaps: list[Gap] = field(default_factory=list)
    sent_ms: int = 0

    def __len__(self) -> int:
        return len(self.seq)

    @property
    def first_seq(self) -> int:
        return self.seq[0]

    @property
    def last_seq(self) -> int:
        return self.seq[-1]

    def seq_ranges(self) -> list[tuple[int, int]]:
        """The batch's sequence numbers as inclusive ranges (usually one)."""
        return ranges_of(self.seq)

    def select(self, keep: Iterable[int]) -> IngestBatch:
        """A batch with only the rows at the given positions (streams and gaps kept)."""
        rows = list(keep)
        out = IngestBatch(self.gateway, self.streams, gaps=self.gaps, sent_ms=self.sent_ms)
        for name in _COLUMNS:
            column = getattr(self, name)
            setattr(out, name, [column[i] for i in rows])
        return out


_COLUMNS = (
    "stream_index", "seq", "phenomenon_ms", "duration_ms", "result_offset_ms", "result",
    "raw_result", "quality_flag", "quality_profile", "anomaly_milli", "other_scores",
)


def ranges_of(sequences: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted inclusive ranges covering the given numbers: [1,2,3,7] → [(1,3),(7,7)]."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(sequences)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def quality_columns(quality: Quality | None) -> tuple[int | None, QualityProfile | None,
                                                       int | None, str | None]:
    """(flag, profile, anomaly × 1000, other scores JSON) of one row's quality."""
    if quality is None:
        return None, None, None, None
    milli, other_json = score_cells(quality.scores)
    return quality.aggregate, profile_of(quality.tests), milli, other_json


def profile_of(tests: Mapping[str, int]) -> QualityProfile | None:
    """The per-test flags of a row as a profile (None when no test ran)."""
    return QualityProfile(tuple(sorted(tests.items()))) if tests else None


def score_cells(scores: Mapping[str, float]) -> tuple[int | None, str | None]:
    """(anomaly score × 1000, JSON of the other scores) of one row's quality scores."""
    anomaly = scores.get(ANOMALY_SCORE)
    milli = round(anomaly * 1000) if anomaly is not None and 0.0 <= anomaly <= 1.0 else None
    others = {k: v for k, v in scores.items() if k != ANOMALY_SCORE or milli is None}
    return milli, json.dumps(others, sort_keys=True) if others else None


EARLIEST_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
FUTURE_SLACK_MS = 86_400_000  # a gateway clock may run ahead, but not by more than a day
_INT63 = 2**63 - 1


def check_storable(batch: IngestBatch, now_ms: int) -> None:
    """Refuse (ContractError) what no store column can hold or no partition should get.

    The contract decoder validates types; this bounds values so one message can never make a
    database transaction fail (which would hold up every message stored with it).
    """
    if not batch.seq:
        raise ContractError("empty batch")
    if not 1 <= min(batch.seq) <= max(batch.seq) <= _INT63:
        raise ContractError(f"sequence numbers {min(batch.seq)}..{max(batch.seq)} outside "
                            f"1..2^63-1")
    latest = now_ms + FUTURE_SLACK_MS
    if not EARLIEST_MS <= min(batch.phenomenon_ms) <= max(batch.phenomenon_ms) <= latest:
        raise ContractError("phenomenon time outside 2000-01-01 .. now + 1 day")
    for name, column in (("duration", batch.duration_ms), ("result time offset",
                                                          batch.result_offset_ms)):
        values = [v for v in column if v is not None]
        if values and not -_INT63 <= min(values) <= max(values) <= _INT63:
            raise ContractError(f"{name} out of range")
    flags = [f for f in batch.quality_flag if f is not None]
    if flags and not 0 <= min(flags) <= max(flags) <= 255:
        raise ContractError("quality flag outside 0..255")
    if any(len(s.sensor) > 200 or len(s.quantity) > 100 for s in batch.streams):
        raise ContractError("sensor or quantity name too long")
    if "\x00" in batch.gateway or any(s.has_nul for s in batch.streams):
        raise ContractError("a name or provenance value contains a NUL character")
    for other in batch.other_scores:
        if other is not None and ("NaN" in other or "Infinity" in other):
            raise ContractError("quality score is not a finite number")


# (sensor, quantity, provenance) → its StreamDef, shared by messages and gateways alike
_STREAM_DEFS: dict[tuple[str, str, Provenance], StreamDef] = {}
_STREAM_DEFS_MAX = 50_000


def from_decoded(batch: DecodedBatch) -> IngestBatch:
    """Columns of a batch decoded by :func:`edge.contract.decode_batch`.

    Streams and quality maps repeat across rows: each distinct one is converted once (by value:
    the decoder may build a new object per row)."""
    streams: dict[StreamDef, int] = {}
    by_value: dict[tuple[Datastream, Provenance], int] = {}
    qualities: dict[tuple[object, ...], tuple[int | None, QualityProfile | None, int | None,
                                               str | None]] = {}
    out = IngestBatch(batch.gateway_id, [], gaps=list(batch.gaps), sent_ms=batch.sent_ms)
    stream_index, seq_col, t_col = out.stream_index, out.seq, out.phenomenon_ms
    dur_col, off_col, res_col, raw_col = (out.duration_ms, out.result_offset_ms, out.result,
                                          out.raw_result)
    flag_col, prof_col, milli_col, other_col = (out.quality_flag, out.quality_profile,
                                                out.anomaly_milli, out.other_scores)
    for obs in batch.observations:
        key = (obs.stream, obs.provenance)
        idx = by_value.get(key)
        if idx is None:
            skey = (obs.stream.sensor_id, obs.stream.quantity_code, obs.provenance)
            sdef = _STREAM_DEFS.get(skey)
            if sdef is None:
                if len(_STREAM_DEFS) >= _STREAM_DEFS_MAX:
                    _STREAM_DEFS.clear()
                sdef = _STREAM_DEFS[skey] = StreamDef.of(
                    obs.stream.sensor_id, obs.stream.quantity_code, obs.provenance.as_dict())
            idx = by_value[key] = streams.setdefault(sdef, len(streams))
        assert obs.sequence is not None
        start, end = obs.phenomenon_ms, obs.phenomenon_end_ms
        stream_index.append(idx)
        seq_col.append(obs.sequence)
        t_col.append(start)
        dur_col.append(None if end is None else end - start)
        off_col.append(None if obs.result_ms is None
                       else obs.result_ms - (end if end is not None else start))
        res_col.append(obs.result)
        raw_col.append(obs.raw_result)
        q = obs.quality
        if q is None:
            cells: tuple[int | None, QualityProfile | None, int | None, str | None] = (
                None, None, None, None)
        elif q.scores:
            cells = quality_columns(q)
        else:
            qkey = (q.aggregate, *q.tests.items())
            found = qualities.get(qkey)
            cells = found if found is not None else qualities.setdefault(
                qkey, quality_columns(q))
        flag_col.append(cells[0])
        prof_col.append(cells[1])
        milli_col.append(cells[2])
        other_col.append(cells[3])
    out.streams = list(streams)
    return out


# ---------------------------------------------------------------------------------------
# Self-contained encoding of a batch's columns (the forward queue) and back to observations


def to_cbor(batch: IngestBatch) -> bytes:
    """The batch as one CBOR map of its columns (streams and quality profiles inline)."""
    return cbor2.dumps({
        "gw": batch.gateway,
        "st": [[s.sensor, s.quantity, s.unit, dict(s.provenance)] for s in batch.streams],
        "cols": {name: _plain_column(name, getattr(batch, name)) for name in _COLUMNS},
        "gaps": [list(g) for g in batch.gaps],
        "sent": batch.sent_ms,
    })


def _plain_column(name: str, column: list[object]) -> list[object]:
    if name == "quality_profile":
        return [None if p is None else [list(t) for t in p.tests]  # type: ignore[attr-defined]
                for p in column]
    return column


def from_cbor(data: bytes) -> IngestBatch:
    """Inverse of :func:`to_cbor` (only ever reads what this process's store wrote)."""
    msg = cbor2.loads(data)
    streams = [StreamDef(s[0], s[1], s[2], tuple(sorted(s[3].items()))) for s in msg["st"]]
    out = IngestBatch(msg["gw"], streams, gaps=[tuple(g) for g in msg["gaps"]],
                      sent_ms=msg["sent"])
    for name in _COLUMNS:
        column = msg["cols"][name]
        if name == "quality_profile":
            column = [None if p is None else QualityProfile(tuple((str(k), int(v)) for k, v in p))
                      for p in column]
        setattr(out, name, column)
    return out


def to_observations(batch: IngestBatch) -> list[Observation]:
    """Rebuild :class:`edge.model.Observation` objects (for the SensorThings forwarder)."""
    streams = [(Datastream(batch.gateway, s.sensor, s.quantity),
                Provenance.from_dict(dict(s.provenance))) for s in batch.streams]
    out: list[Observation] = []
    for i, seq in enumerate(batch.seq):
        stream, prov = streams[batch.stream_index[i]]
        start = batch.phenomenon_ms[i]
        dur = batch.duration_ms[i]
        end = None if dur is None else start + dur
        offset = batch.result_offset_ms[i]
        out.append(Observation(
            stream=stream, result=batch.result[i], phenomenon_ms=start, provenance=prov,
            phenomenon_end_ms=end,
            result_ms=None if offset is None else (end if end is not None else start) + offset,
            raw_result=batch.raw_result[i], quality=_quality_of(batch, i), sequence=seq))
    return out


def _quality_of(batch: IngestBatch, i: int) -> Quality | None:
    flag = batch.quality_flag[i]
    if flag is None:
        return None
    profile = batch.quality_profile[i]
    scores: dict[str, float] = {}
    others = batch.other_scores[i]
    if others is not None:
        scores.update(json.loads(others))
    milli = batch.anomaly_milli[i]
    if milli is not None:
        scores[ANOMALY_SCORE] = milli / 1000
    return Quality(aggregate=flag, tests=dict(profile.tests) if profile else {}, scores=scores)
