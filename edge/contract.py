"""The upload contract: compact CBOR batches (v2, reads v1) and twin acks, shared by gateway and twin.

One MQTT message on ``<prefix>/<gw>/obs`` carries one batch as a CBOR map (RFC 8949) of columns.
The twin answers on ``<prefix>/<gw>/ack`` (:func:`encode_ack`) after its database commit. The
normative description, with an annotated example a test decodes, is docs/upload-contract.md;
this module is its reference implementation.

Batch keys (v2; ``*``: v2 only, ``¹``: v1 only)
=========  ==================================================================================
``ver``    contract major version: 2 (a receiver also reads 1)
``gw``     gateway id; must equal the ``<gw>`` of the topic
``sent``   when the batch was encoded, ms since epoch UTC (0: unknown)
``sr`` *   8-byte reference of the session dictionary (BLAKE2b of its canonical CBOR)
``st``     stream table ``[[sensor, quantity, ucum, exponent, provenance], ...]``: in v2 part
           of the session dictionary, sent only when the twin may not know ``sr`` yet
``qn`` *   quality names (tests and scores), the rest of the session dictionary
``s0``     sequence number of row 0; ``sd`` optional deltas for rows 1..n-1 (absent: all 1)
``t0``     phenomenon time of row 0, ms since epoch UTC; ``dt`` per-row deltas (row 0: 0)
``si``     per row: index into ``st`` (v2: a single int when every row has the same stream)
``val``    per row: result as an integer multiple of ``10**exponent`` or a float64
``dur``    interval lengths in ms: map row → length (v2: an int when every row has it)
``rt``     map row → result time minus phenomenon end (absent: equal)
``raw``    map row → uncalibrated result, encoded like ``val``
``q`` ¹    map row → ``{"agg": flag, "tests": {...}, "scores": {...}}``
``qk`` *   quality templates: ``[agg, name, flag, name, flag, ...]`` (names index ``qn``)
``qs`` *   per row: index into ``qk``, -1 for no quality (an int: the same for every row)
``qv`` *   score columns ``[name, decimals, values]``: values a list (null: absent) or a map
``gaps``   ``[first, last, count, reason]``: numbers the twin will never receive (count -1:
           unknown)
=========  ==================================================================================

Observation ids are not sent: both sides derive ``UUIDv5(gateway_id/sequence)``.

Validation is strict and total: :func:`decode_batch` raises nothing but :class:`ContractError`
(or its subclass :class:`UnknownDictionary`) for any input, and checks every field — types,
integer ranges, finite quality numbers — before a receiver touches its database. Rows whose
times are implausible (before 2000 or more than a day ahead) are refused one by one
(:attr:`DecodedBatch.rejected`); the rest of the batch stands.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import cbor2

from edge.model import Batch, Datastream, Observation, Provenance, Quality, observation_id
from edge.quantities import QUANTITIES

CONTRACT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
MAX_ROWS = 100_000
MAX_PAYLOAD = 16 * 2**20
MAX_SEQ = 2**53 - 1  # sequence numbers, like every integer on the wire, stay exact in a double
MAX_INT = 2**53
EARLIEST_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: anything before is a clock that was not set
FUTURE_SLACK_MS = 86_400_000  # a row more than a day ahead of the twin's clock is refused
REF_BYTES = 8
MAX_GAPS = 10_000
MAX_ACK_ENTRIES = 100_000
MAX_DICTIONARY = 4096  # stream + name entries in one session dictionary
QC_FLAGS = frozenset({1, 2, 3, 4, 9})
GAP_REASONS = (
    "evicted:size",
    "evicted:ttl",
    "refused:full",
    "restart:unclean",
    "moved-aside:corrupt",
    "disk-full",
)
_GATEWAY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,128}")
_SCORE_DECIMALS = 6

Range = tuple[int, int]
Gap = tuple[int, int, int, str]


class ContractError(ValueError):
    """A message that does not follow the upload contract; the text says what is wrong.

    ``gateway_id`` and ``ranges`` are set when the message was readable far enough to say
    whose sequence numbers it carried (the twin then answers with an ``x`` ack).
    """

    def __init__(
        self, reason: str, gateway_id: str | None = None, ranges: Sequence[Range] = ()
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.gateway_id = gateway_id
        self.ranges = list(ranges)


class UnknownDictionary(ContractError):
    """A v2 batch names a session dictionary (``sr``) this receiver does not hold.

    Not a defect of the batch: the twin answers ``need`` and the gateway resends the rows with
    the full dictionary.
    """

    def __init__(self, gateway_id: str, ref: bytes, ranges: Sequence[Range]) -> None:
        super().__init__(f"unknown session dictionary {ref.hex()}", gateway_id, ranges)
        self.ref = ref


# ---------------------------------------------------------------------------------- values


def _exponent(quantity_code: str) -> int:
    q = QUANTITIES.get(quantity_code)
    resolution = q.resolution if q is not None else 0.001
    return math.floor(math.log10(resolution) + 1e-9)


_EXP_CACHE: dict[str, int] = {}


def exponent_of(quantity_code: str) -> int:
    """The value-scaling exponent of a quantity (from its resolution in edge/quantities.py)."""
    exp = _EXP_CACHE.get(quantity_code)
    if exp is None:
        exp = _EXP_CACHE[quantity_code] = _exponent(quantity_code)
    return exp


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


def _unscale(value: int | float, exp: int) -> float:
    if type(value) is float:
        return value
    return round(value * 10.0**exp, -exp) if exp < 0 else float(value * 10**exp)


def quantize(value: float, quantity_code: str) -> float:
    """The value as the receiver will see it after a compact round trip."""
    exp = exponent_of(quantity_code)
    return _unscale(_scale(value, exp), exp)


def _score_decimals(value: float) -> int | None:
    """Fewest decimals (0..6) at which ``value`` survives ``n / 10**k`` exactly, else None."""
    if not math.isfinite(value) or abs(value) >= 1e9:
        return None
    for k in range(_SCORE_DECIMALS + 1):
        n = round(value * 10**k)
        if n / 10**k == value:
            return k
    return None


def merge_ranges(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, merged closed ranges."""
    out: list[Range] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def seq_ranges(seqs: Iterable[int]) -> list[Range]:
    """Sorted, merged closed ranges covering ``seqs``."""
    return merge_ranges((s, s) for s in seqs)


# ----------------------------------------------------------------------- session dictionary


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One entry of the stream table: a datastream of the gateway with one provenance."""

    sensor_id: str
    quantity_code: str
    unit: str
    exponent: int
    provenance: Provenance

    def wire(self) -> list[object]:
        return [
            self.sensor_id,
            self.quantity_code,
            self.unit,
            self.exponent,
            self.provenance.as_dict(),
        ]


@dataclass(frozen=True, slots=True)
class SessionDictionary:
    """The tables a v2 gateway sends once per connection: streams (``st``) and quality names
    (``qn``). ``body`` is their canonical CBOR ``[st, qn]`` (what a receiver persists);
    ``ref`` (``sr`` on the wire) its 8-byte BLAKE2b."""

    streams: tuple[StreamEntry, ...]
    names: tuple[str, ...]
    body: bytes
    ref: bytes

    @classmethod
    def build(cls, streams: Sequence[StreamEntry], names: Sequence[str]) -> SessionDictionary:
        body = cbor2.dumps([[s.wire() for s in streams], list(names)], canonical=True)
        return cls(tuple(streams), tuple(names), body, _ref(body))

    @classmethod
    def from_body(cls, body: bytes) -> SessionDictionary:
        """A dictionary a receiver stored earlier (raises ContractError if it is not one)."""
        try:
            value = cbor2.loads(body)
        except Exception as exc:  # cbor2 raises several types on garbage
            raise ContractError(f"stored dictionary is not CBOR: {exc}") from None
        if type(value) is not list or len(value) != 2:
            raise ContractError("stored dictionary is not [st, qn]")
        return _dictionary_from_wire(value[0], value[1])


def _ref(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=REF_BYTES).digest()


def _dictionary_from_wire(st: object, qn: object) -> SessionDictionary:
    if type(st) is not list or len(st) > MAX_DICTIONARY:
        raise ContractError(f"'st' must be a list of at most {MAX_DICTIONARY} stream entries")
    if type(qn) is not list or len(qn) > MAX_DICTIONARY:
        raise ContractError(f"'qn' must be a list of at most {MAX_DICTIONARY} names")
    streams = tuple(_stream_entry(e) for e in st)
    names = tuple(_name(n, "quality name") for n in qn)
    body = cbor2.dumps([st, qn], canonical=True)
    return SessionDictionary(streams, names, body, _ref(body))


def _stream_entry(entry: object) -> StreamEntry:
    if type(entry) is not list or len(entry) != 5:
        raise ContractError("stream entry must be [sensor, quantity, unit, exponent, provenance]")
    sensor, qty, unit, exp, prov = entry
    sensor_id = _name(sensor, "sensor id")
    code = _name(qty, "quantity code")
    if type(unit) is not str or len(unit) > 64:
        raise ContractError(f"stream {sensor_id}/{code}: unit must be text of at most 64 chars")
    exponent = _int(exp, f"stream {sensor_id}/{code}: exponent", -12, 12)
    if type(prov) is not dict or len(prov) > 32:
        raise ContractError(f"stream {sensor_id}/{code}: provenance must be a map")
    for key, value in prov.items():
        if type(key) is not str or type(value) is not str or len(key) > 64 or len(value) > 256:
            raise ContractError(f"stream {sensor_id}/{code}: provenance must map text to text")
    return StreamEntry(sensor_id, code, unit, exponent, Provenance.from_dict(prov))


DictionaryLookup = Callable[[str, bytes], "SessionDictionary | None"]


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """One message to publish: its bytes, the dictionary it refers to, and whether it carries
    that dictionary in full."""

    payload: bytes
    ref: bytes
    full: bool


class SessionEncoder:
    """The gateway side of v2: one per uplink, encodes batches against a session dictionary.

    The dictionary grows as new streams, provenances and quality names appear (each change is a
    new ``ref``). A batch carries the full dictionary when its ``ref`` has not been sent on this
    connection yet (:meth:`reset` at every connect), when the twin asked for it
    (:meth:`forget`), or when ``full=True``.
    """

    def __init__(self, gateway_id: str, max_entries: int = MAX_DICTIONARY) -> None:
        self.gateway_id = gateway_id
        self.max_entries = max_entries
        self._streams: list[StreamEntry] = []
        self._stream_index: dict[tuple[Datastream, Provenance], int] = {}
        self._names: list[str] = []
        self._name_index: dict[str, int] = {}
        self._dictionary: SessionDictionary | None = None
        self._sent: set[bytes] = set()

    def reset(self) -> None:
        """A new connection: the next batch carries the full dictionary again."""
        self._sent.clear()

    def forget(self, ref: bytes) -> None:
        """The twin does not know ``ref``: send it in full with the next batch that uses it."""
        self._sent.discard(ref)

    @property
    def dictionary(self) -> SessionDictionary:
        if self._dictionary is None:
            self._dictionary = SessionDictionary.build(self._streams, self._names)
        return self._dictionary

    def encode(
        self, batch: Batch, gaps: Sequence[Gap] = (), sent_ms: int = 0, *, full: bool = False
    ) -> EncodedBatch:
        obs = batch.observations
        if not obs:
            raise ValueError("empty batch")
        if len(self._streams) + len(self._names) > self.max_entries:
            self._clear()  # a long session with many provenance changes: start a new table
        message = self._columns(obs)
        dictionary = self.dictionary
        send_full = full or dictionary.ref not in self._sent
        head: dict[str, object] = {"ver": 2, "gw": batch.gateway_id, "sent": sent_ms,
                                   "sr": dictionary.ref}
        if send_full:
            head["st"] = [s.wire() for s in dictionary.streams]
            head["qn"] = list(dictionary.names)
            self._sent.add(dictionary.ref)
        head.update(message)
        if gaps:
            head["gaps"] = [list(g) for g in gaps]
        return EncodedBatch(cbor2.dumps(head), dictionary.ref, send_full)

    def _clear(self) -> None:
        self._streams.clear()
        self._stream_index.clear()
        self._names.clear()
        self._name_index.clear()
        self._dictionary = None

    def _stream(self, o: Observation) -> int:
        key = (o.stream, o.provenance)
        idx = self._stream_index.get(key)
        if idx is None:
            code = o.stream.quantity_code
            q = QUANTITIES.get(code)
            entry = StreamEntry(
                o.stream.sensor_id, code, q.unit if q else "", exponent_of(code), o.provenance
            )
            idx = self._stream_index[key] = len(self._streams)
            self._streams.append(entry)
            self._dictionary = None
        return idx

    def _name(self, name: str) -> int:
        idx = self._name_index.get(name)
        if idx is None:
            idx = self._name_index[name] = len(self._names)
            self._names.append(name)
            self._dictionary = None
        return idx

    def _columns(self, obs: Sequence[Observation]) -> dict[str, object]:
        cols = _row_columns(obs, self._stream, lambda idx: self._streams[idx].exponent)
        qs: list[int] = []
        templates: dict[tuple[int, tuple[tuple[str, int], ...]], int] = {}
        scores: dict[str, dict[int, float]] = {}
        for row, q in enumerate(cols.quality):
            if q is None:
                qs.append(-1)
                continue
            key = (q.aggregate, tuple(q.tests.items()))
            template = templates.get(key)
            if template is None:
                template = templates[key] = len(templates)
            qs.append(template)
            for name, score in q.scores.items():
                scores.setdefault(name, {})[row] = score
        out = cols.head()
        out["si"] = cols.si[0] if len(set(cols.si)) == 1 else cols.si
        out["val"] = cols.val
        if cols.dur:
            lengths = set(cols.dur.values())
            uniform = len(cols.dur) == len(obs) and len(lengths) == 1
            out["dur"] = lengths.pop() if uniform else cols.dur
        cols.sparse_into(out, ("rt", "raw"))
        if templates:
            out["qk"] = [self._template(agg, tests) for agg, tests in templates]
            out["qs"] = qs[0] if len(set(qs)) == 1 else qs
        if scores:
            out["qv"] = [self._score_column(name, col, len(obs)) for name, col in scores.items()]
        return out

    def _template(self, agg: int, tests: tuple[tuple[str, int], ...]) -> list[int]:
        flat = [agg]
        for name, flag in tests:
            flat += [self._name(name), flag]
        return flat

    def _score_column(self, name: str, column: dict[int, float], n: int) -> list[object]:
        places = [_score_decimals(v) for v in column.values()]
        decimals = max((p for p in places if p is not None), default=0)
        scale = 10**decimals

        def encoded(value: float, exact: int | None) -> int | float:
            return float(value) if exact is None else round(value * scale)

        pairs = {row: encoded(v, p) for (row, v), p in zip(column.items(), places, strict=True)}
        dense = 2 * len(pairs) >= n  # a list with nulls is smaller than a map of row numbers
        values: object = [pairs.get(row) for row in range(n)] if dense else pairs
        return [self._name(name), decimals, values]


def _sequence(o: Observation) -> int:
    if o.sequence is None:
        raise ValueError("observation without sequence number")
    return o.sequence


def encode_batch(
    batch: Batch,
    gaps: Sequence[Gap] = (),
    sent_ms: int = 0,
    *,
    version: int = CONTRACT_VERSION,
) -> bytes:
    """Encode committed observations (sequence set, ascending) as one self-contained message.

    Version 2 carries its full dictionary (no session state needed to read it); use
    :class:`SessionEncoder` to send only the reference on later batches.
    """
    if version == 1:
        return _encode_v1(batch, gaps, sent_ms)
    if version != 2:
        raise ValueError(f"cannot encode contract version {version}")
    return SessionEncoder(batch.gateway_id).encode(batch, gaps, sent_ms, full=True).payload


def _encode_v1(batch: Batch, gaps: Sequence[Gap], sent_ms: int) -> bytes:
    obs = batch.observations
    if not obs:
        raise ValueError("empty batch")
    streams: dict[tuple[Datastream, Provenance], int] = {}
    table: list[list[object]] = []
    exps: list[int] = []

    def stream_of(o: Observation) -> int:
        key = (o.stream, o.provenance)
        idx = streams.get(key)
        if idx is None:
            idx = streams[key] = len(table)
            code = o.stream.quantity_code
            q = QUANTITIES.get(code)
            exps.append(exponent_of(code))
            table.append([o.stream.sensor_id, code, q.unit if q else "", exps[idx],
                          o.provenance.as_dict()])
        return idx

    cols = _row_columns(obs, stream_of, exps.__getitem__)
    message: dict[str, object] = {
        "ver": 1, "gw": batch.gateway_id, "sent": sent_ms, "st": table, "s0": cols.s0,
        "t0": cols.t0, "dt": cols.dt, "si": cols.si, "val": cols.val,
    }
    if any(d != 1 for d in cols.sd):
        message["sd"] = cols.sd
    quality = {row: q.as_dict() for row, q in enumerate(cols.quality) if q is not None}
    cols.sparse_into(message, ("dur", "rt", "raw"))
    if quality:
        message["q"] = quality
    if gaps:
        message["gaps"] = [list(g) for g in gaps]
    return cbor2.dumps(message)


@dataclass(slots=True)
class _Columns:
    """The columns both contract versions share, built in one pass over the rows."""

    s0: int
    t0: int
    si: list[int] = field(default_factory=list)
    val: list[int | float] = field(default_factory=list)
    dt: list[int] = field(default_factory=list)
    sd: list[int] = field(default_factory=list)
    dur: dict[int, int] = field(default_factory=dict)
    rt: dict[int, int] = field(default_factory=dict)
    raw: dict[int, int | float] = field(default_factory=dict)
    quality: list[Quality | None] = field(default_factory=list)

    def head(self) -> dict[str, object]:
        out: dict[str, object] = {"s0": self.s0}
        if any(d != 1 for d in self.sd):
            out["sd"] = self.sd
        out["t0"] = self.t0
        out["dt"] = self.dt
        return out

    def sparse_into(self, message: dict[str, object], keys: Sequence[str]) -> None:
        columns = {"dur": self.dur, "rt": self.rt, "raw": self.raw}
        for key in keys:
            if columns[key]:
                message[key] = columns[key]


def _row_columns(
    obs: Sequence[Observation],
    stream_of: Callable[[Observation], int],
    exponent: Callable[[int], int],
) -> _Columns:
    cols = _Columns(_sequence(obs[0]), obs[0].phenomenon_ms)
    prev_t, prev_seq = cols.t0, cols.s0
    for row, o in enumerate(obs):
        idx = stream_of(o)
        exp = exponent(idx)
        cols.si.append(idx)
        cols.val.append(_scale(o.result, exp))
        cols.dt.append(o.phenomenon_ms - prev_t)
        prev_t = o.phenomenon_ms
        seq = _sequence(o)
        if row:
            cols.sd.append(seq - prev_seq)
        prev_seq = seq
        end = o.phenomenon_end_ms
        if end is not None:
            cols.dur[row] = end - o.phenomenon_ms
        if o.result_ms is not None:
            cols.rt[row] = o.result_ms - (end if end is not None else o.phenomenon_ms)
        if o.raw_result is not None:
            cols.raw[row] = _scale(o.raw_result, exp)
        cols.quality.append(o.quality)
    return cols


# ----------------------------------------------------------------------------------- decoding


@dataclass(slots=True)
class DecodedBatch:
    """A received batch: observations with their ids, and the gaps the gateway announced.

    ``rejected`` maps the sequence number of each refused row to the reason (those rows are
    not in ``observations``). ``dictionary`` is set when the batch carried its session
    dictionary in full: the receiver persists it with the batch.
    """

    gateway_id: str
    observations: list[Observation]
    ids: list[str]
    gaps: list[Gap] = field(default_factory=list)
    sent_ms: int = 0
    version: int = CONTRACT_VERSION
    rejected: dict[int, str] = field(default_factory=dict)
    dictionary: SessionDictionary | None = None

    @property
    def sequences(self) -> list[int]:
        return [o.sequence for o in self.observations if o.sequence is not None]


def decode_batch(
    payload: bytes, lookup: DictionaryLookup | None = None, *, now_ms: int | None = None
) -> DecodedBatch:
    """Decode and validate one batch (v1 or v2).

    ``lookup(gateway_id, ref)`` returns a session dictionary the receiver holds; without one a
    v2 batch that carries only ``sr`` raises :class:`UnknownDictionary`. Every other problem
    raises :class:`ContractError` with the reason.
    """
    msg = _load(payload)
    ver = msg.get("ver")
    if type(ver) is not int or ver not in SUPPORTED_VERSIONS:
        raise ContractError(
            f"unsupported contract version {_show(ver)} (this receiver speaks 1 and 2)"
        )
    gw = _gateway(msg.get("gw"))
    seqs = _sequences(msg, gw)
    ranges = seq_ranges(seqs)
    try:
        return _decode_rows(msg, ver, gw, seqs, ranges, lookup, now_ms)
    except UnknownDictionary:
        raise
    except ContractError as exc:
        raise ContractError(exc.reason, gw, ranges) from None


def _decode_rows(
    msg: dict[object, object],
    ver: int,
    gw: str,
    seqs: list[int],
    ranges: list[Range],
    lookup: DictionaryLookup | None,
    now_ms: int | None,
) -> DecodedBatch:
    n = len(seqs)
    sent = msg.get("sent", 0)
    sent_ms = _int(sent, "'sent'", 0, MAX_INT)
    gaps = _gaps(msg.get("gaps", []), allow_unknown_count=ver >= 2)
    carried: SessionDictionary | None = None
    if ver == 1:
        table = msg.get("st")
        if type(table) is not list or len(table) > MAX_DICTIONARY:
            raise ContractError("'st' missing or not a list")
        streams: Sequence[StreamEntry] = [_stream_entry(e) for e in table]
        names: Sequence[str] = ()
    else:
        dictionary, carried = _dictionary(msg, gw, ranges, lookup)
        streams, names = dictionary.streams, dictionary.names
    if not streams:
        raise ContractError("stream table is empty")
    si = _column_or_constant(msg, "si", n, 0, len(streams) - 1, "stream index")
    val = _values(msg.get("val"), "val", n, dense=True)
    dt = _int_list(msg.get("dt"), "'dt'", n, -MAX_INT, MAX_INT)
    t0 = _int(msg.get("t0"), "'t0'", -MAX_INT, MAX_INT)
    durations = _durations(msg.get("dur"), n)
    rt = _int_map(msg.get("rt"), "'rt'", n, -MAX_INT, MAX_INT)
    raw = _values(msg.get("raw", {}), "raw", n, dense=False)
    quality = _quality_v1(msg.get("q"), n) if ver == 1 else _quality_v2(msg, n, names)
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    latest = now + FUTURE_SLACK_MS
    observations: list[Observation] = []
    ids: list[str] = []
    rejected: dict[int, str] = {}
    ds_cache: dict[int, Datastream] = {}
    t = t0
    for row in range(n):
        t += dt[row]
        entry = streams[si[row]]
        length = durations[row]
        end = None if length is None else t + length
        offset = rt.get(row)
        result_ms = None if offset is None else (end if end is not None else t) + offset
        problem = _implausible_time(t, end, result_ms, latest)
        seq = seqs[row]
        if problem:
            rejected[seq] = problem
            continue
        ds = ds_cache.get(si[row])
        if ds is None:
            ds = ds_cache[si[row]] = Datastream(gw, entry.sensor_id, entry.quantity_code)
        raw_value = raw.get(row)
        observations.append(
            Observation(
                stream=ds,
                result=_unscale(val[row], entry.exponent),
                phenomenon_ms=t,
                provenance=entry.provenance,
                phenomenon_end_ms=end,
                result_ms=result_ms,
                raw_result=None if raw_value is None else _unscale(raw_value, entry.exponent),
                quality=quality[row],
                sequence=seq,
            )
        )
        ids.append(str(observation_id(gw, seq)))
    return DecodedBatch(gw, observations, ids, gaps, sent_ms, ver, rejected, carried)


def _load(payload: bytes) -> dict[object, object]:
    if not isinstance(payload, bytes | bytearray) or len(payload) > MAX_PAYLOAD:
        raise ContractError(f"payload must be bytes of at most {MAX_PAYLOAD} bytes")
    try:
        msg = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise ContractError(f"not CBOR: {_clip(str(exc))}") from None
    if type(msg) is not dict:
        raise ContractError("top level is not a map")
    return msg


def _gateway(value: object) -> str:
    if type(value) is not str or not _GATEWAY_ID.fullmatch(value):
        raise ContractError(f"'gw' missing or not a gateway id: {_show(value)}")
    return value


def _sequences(msg: dict[object, object], gw: str) -> list[int]:
    """Row count and sequence numbers, checked first: they name what an ``x`` ack refers to."""
    dt = msg.get("dt")
    if type(dt) is not list or not 0 < len(dt) <= MAX_ROWS:
        raise ContractError(f"'dt' must be a list of 1..{MAX_ROWS} time deltas", gw)
    n = len(dt)
    s0 = _int(msg.get("s0"), "'s0' (first sequence number)", 1, MAX_SEQ, gw)
    sd = msg.get("sd")
    if sd is None:
        if s0 + n - 1 > MAX_SEQ:
            raise ContractError(f"sequence numbers pass {MAX_SEQ}", gw, [(s0, s0)])
        return list(range(s0, s0 + n))
    if type(sd) is not list or len(sd) != n - 1:
        raise ContractError("'sd' must list n-1 sequence deltas", gw, [(s0, s0)])
    seqs = [s0]
    seq = s0
    for row, step in enumerate(sd, 1):
        if type(step) is not int or step <= 0:
            raise ContractError(
                f"row {row}: sequence must increase (delta {_show(step)})", gw, [(s0, seq)]
            )
        seq += step
        if seq > MAX_SEQ:
            raise ContractError(f"sequence numbers pass {MAX_SEQ}", gw, [(s0, s0)])
        seqs.append(seq)
    return seqs


def _dictionary(
    msg: dict[object, object], gw: str, ranges: list[Range], lookup: DictionaryLookup | None
) -> tuple[SessionDictionary, SessionDictionary | None]:
    """The batch's dictionary, and the same again when the batch carried it in full."""
    ref = msg.get("sr")
    if type(ref) is not bytes or len(ref) != REF_BYTES:
        raise ContractError(f"'sr' must be {REF_BYTES} bytes")
    if "st" in msg or "qn" in msg:
        carried = _dictionary_from_wire(msg.get("st"), msg.get("qn", []))
        if carried.ref != ref:
            raise ContractError(
                f"'sr' {ref.hex()} does not match its dictionary ({carried.ref.hex()})"
            )
        return carried, carried
    known = lookup(gw, ref) if lookup is not None else None
    if known is None:
        raise UnknownDictionary(gw, ref, ranges)
    return known, None


def _column_or_constant(
    msg: dict[object, object], key: str, n: int, lo: int, hi: int, what: str
) -> list[int]:
    value = msg.get(key)
    if type(value) is int:
        return [_int(value, f"'{key}' {what}", lo, hi)] * n
    return _int_list(value, f"'{key}' {what}", n, lo, hi)


def _int_list(value: object, what: str, n: int, lo: int, hi: int) -> list[int]:
    if type(value) is not list or len(value) != n:
        raise ContractError(f"{what} must be a list of {n} integers (one per row)")
    for row, item in enumerate(value):
        if type(item) is not int or not lo <= item <= hi:
            raise ContractError(f"{what}, row {row}: {_show(item)} is not an integer in {lo}..{hi}")
    return value


def _int_map(value: object, what: str, n: int, lo: int, hi: int) -> dict[int, int]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise ContractError(f"{what} must be a map row → integer")
    for row, item in value.items():
        _row_key(row, what, n)
        if type(item) is not int or not lo <= item <= hi:
            raise ContractError(f"{what}, row {row}: {_show(item)} is not an integer in {lo}..{hi}")
    return value


def _row_key(row: object, what: str, n: int) -> None:
    if type(row) is not int or not 0 <= row < n:
        raise ContractError(f"{what}: row {_show(row)} out of range")


def _value_ok(value: object) -> bool:
    return type(value) is float or (type(value) is int and -MAX_INT <= value <= MAX_INT)


def _values(value: object, key: str, n: int, *, dense: bool) -> dict[int, int | float]:
    """``val`` (a list, one per row) or ``raw`` (a sparse map): ints in ±2^53 or floats."""
    problem = f"'{key}' values are integers within ±2^53 or floats"
    if dense:
        if type(value) is not list or len(value) != n:
            raise ContractError(f"'{key}' must be a list of {n} values (one per row)")
        items: Iterable[tuple[object, object]] = enumerate(value)
    else:
        if type(value) is not dict:
            raise ContractError(f"'{key}' must be a map row → value")
        items = value.items()
    out: dict[int, int | float] = {}
    for row, item in items:
        _row_key(row, f"'{key}'", n)
        if not _value_ok(item):
            raise ContractError(f"{problem}; row {row} has {_show(item)}")
        out[row] = item  # type: ignore[index,assignment]  # both checked just above
    return out


def _durations(value: object, n: int) -> list[int | None]:
    if value is None:
        return [None] * n
    if type(value) is int:  # v2 shortcut: every row is an interval of this length
        return [_int(value, "'dur'", 0, MAX_INT)] * n
    lengths = _int_map(value, "'dur' interval length", n, 0, MAX_INT)
    return [lengths.get(row) for row in range(n)]


def _implausible_time(t: int, end: int | None, result_ms: int | None, latest: int) -> str:
    for label, ms in (("phenomenon time", t), ("phenomenon end", end), ("result time", result_ms)):
        if ms is None:
            continue
        if ms < EARLIEST_MS:
            return f"{label} {ms} ms is before 2000-01-01 (gateway clock not set?)"
        if ms > latest:
            return f"{label} {ms} ms is more than a day ahead of the twin's clock"
    return ""


def _quality_v1(value: object, n: int) -> list[Quality | None]:
    out: list[Quality | None] = [None] * n
    if value is None:
        return out
    if type(value) is not dict:
        raise ContractError("'q' must be a map row → quality")
    for row, qd in value.items():
        _row_key(row, "'q'", n)
        if type(qd) is not dict:
            raise ContractError(f"row {row}: quality is not a map")
        agg = _flag(qd.get("agg", 2), f"row {row}: quality 'agg'")
        tests = qd.get("tests", {})
        scores = qd.get("scores", {})
        if type(tests) is not dict or type(scores) is not dict:
            raise ContractError(f"row {row}: quality tests/scores must be maps")
        out[row] = Quality(
            agg,
            {_name(k, "test name"): _flag(v, f"row {row}: test flag") for k, v in tests.items()},
            {_name(k, "score name"): _score(v, f"row {row}: score") for k, v in scores.items()},
        )
    return out


def _quality_v2(msg: dict[object, object], n: int, names: Sequence[str]) -> list[Quality | None]:
    qk, qs = msg.get("qk"), msg.get("qs")
    qv = msg.get("qv")
    if qk is None and qs is None:
        if qv is not None:
            raise ContractError("'qv' scores without 'qk'/'qs' quality")
        return [None] * n
    templates = _templates(qk, names)
    index = _column_or_constant(msg, "qs", n, -1, len(templates) - 1, "quality template")
    out: list[Quality | None] = [
        None if i < 0 else Quality(templates[i][0], dict(templates[i][1])) for i in index
    ]
    for name, column in _score_columns(qv, n, names):
        for row, score in column.items():
            q = out[row]
            if q is None:
                raise ContractError(f"'qv': row {row} has a score but no quality")
            q.scores[name] = score
    return out


def _templates(qk: object, names: Sequence[str]) -> list[tuple[int, list[tuple[str, int]]]]:
    if type(qk) is not list or not 0 < len(qk) <= MAX_ROWS:
        raise ContractError("'qk' must be a non-empty list of quality templates")
    out = []
    for i, template in enumerate(qk):
        if type(template) is not list or len(template) % 2 != 1 or len(template) > 257:
            raise ContractError(f"'qk'[{i}] must be [agg, name, flag, name, flag, ...]")
        agg = _flag(template[0], f"'qk'[{i}] aggregate")
        tests = []
        for j in range(1, len(template), 2):
            name = _int(template[j], f"'qk'[{i}] name index", 0, len(names) - 1)
            tests.append((names[name], _flag(template[j + 1], f"'qk'[{i}] flag")))
        out.append((agg, tests))
    return out


def _score_columns(
    qv: object, n: int, names: Sequence[str]
) -> Iterable[tuple[str, dict[int, float]]]:
    if qv is None:
        return []
    if type(qv) is not list or len(qv) > MAX_DICTIONARY:
        raise ContractError("'qv' must be a list of score columns")
    out = []
    for i, column in enumerate(qv):
        if type(column) is not list or len(column) != 3:
            raise ContractError(f"'qv'[{i}] must be [name, decimals, values]")
        name = names[_int(column[0], f"'qv'[{i}] name index", 0, len(names) - 1)]
        decimals = _int(column[1], f"'qv'[{i}] decimals", 0, _SCORE_DECIMALS)
        values = column[2]
        items: Iterable[tuple[object, object]]
        if type(values) is list and len(values) == n:
            items = ((row, v) for row, v in enumerate(values) if v is not None)
        elif type(values) is dict:
            items = values.items()
        else:
            raise ContractError(f"'qv'[{i}] values must be a list of {n} or a map row → value")
        scores: dict[int, float] = {}
        for row, value in items:
            _row_key(row, f"'qv'[{i}]", n)
            if type(value) is int and abs(value) <= MAX_INT:
                scores[row] = value / 10**decimals  # type: ignore[index]  # checked above
            else:
                scores[row] = _score(value, f"'qv'[{i}] row {row}")  # type: ignore[index]
        out.append((name, scores))
    return out


def _gaps(value: object, *, allow_unknown_count: bool) -> list[Gap]:
    if type(value) is not list or len(value) > MAX_GAPS:
        raise ContractError(f"'gaps' must be a list of at most {MAX_GAPS} entries")
    out = []
    for g in value:
        if type(g) is not list or len(g) != 4:
            raise ContractError(f"gap entry {_show(g)} must be [first, last, count, reason]")
        first = _int(g[0], "gap first", 1, MAX_SEQ)
        last = _int(g[1], "gap last", first, MAX_SEQ)
        count = _int(g[2], "gap count", -1 if allow_unknown_count else 0, last - first + 1)
        reason = g[3]
        if type(reason) is not str or not 0 < len(reason) <= 64:
            raise ContractError("gap reason must be text of 1..64 characters")
        out.append((first, last, count, reason))
    return out


def _int(
    value: object, what: str, lo: int, hi: int, gateway_id: str | None = None
) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise ContractError(f"{what} must be an integer in {lo}..{hi}, not {_show(value)}",
                            gateway_id)
    return value


def _flag(value: object, what: str) -> int:
    if type(value) is not int or value not in QC_FLAGS:
        raise ContractError(f"{what} must be a QARTOD flag (1, 2, 3, 4, 9), not {_show(value)}")
    return value


def _score(value: object, what: str) -> float:
    if type(value) is int and abs(value) <= MAX_INT:
        return float(value)
    if type(value) is not float or not math.isfinite(value):
        raise ContractError(f"{what} must be a finite number, not {_show(value)}")
    return value


def _name(value: object, what: str) -> str:
    if type(value) is not str or not _NAME.fullmatch(value):
        raise ContractError(f"{what} must be 1..128 printable characters, not {_show(value)}")
    return value


def _show(value: object) -> str:
    """A short, safe description of any decoded value (huge ints and deep nests included)."""
    if type(value) is int:
        return str(value) if abs(value) < 10**30 else f"an integer of {value.bit_length()} bits"
    if type(value) in (float, bool) or value is None:
        return repr(value)
    if type(value) is str:
        return repr(_clip(value, 40))
    if type(value) is bytes:
        return f"{len(value)} bytes"
    if isinstance(value, list | dict | tuple):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------- for fast decoders (receivers)
# A receiver may decode batches its own way (edge.ingest.columns reads them straight into
# columns) as long as it accepts, refuses and produces exactly what decode_batch does. These
# are the reference's own checks, for the parts such a decoder hands back to it unchanged.

GATEWAY_ID = _GATEWAY_ID
"""What a gateway id looks like (``gw`` and the ``<gw>`` of a topic)."""
SCORE_DECIMALS = _SCORE_DECIMALS
"""Most decimals a ``qv`` score column may declare."""


def check_dictionary(st: object, qn: object) -> SessionDictionary:
    """A session dictionary as a batch carries it (``st``, ``qn``), validated; its ``ref`` is
    computed from its content. Raises :class:`ContractError`."""
    return _dictionary_from_wire(st, qn)


def check_stream_entry(entry: object) -> StreamEntry:
    """One entry of a stream table, validated. Raises :class:`ContractError`."""
    return _stream_entry(entry)


def check_name(value: object) -> bool:
    """Whether ``value`` is a valid quality test or score name."""
    return type(value) is str and _NAME.fullmatch(value) is not None


def unscale(value: int | float, exponent: int) -> float:
    """A wire value (``val``, ``raw``) as the float it stands for."""
    return _unscale(value, exponent)


# ------------------------------------------------------------------------------------- acks


@dataclass(slots=True)
class Ack:
    """The twin's answer on ``<prefix>/<gw>/ack`` (published after its commit).

    ``ok``: ranges now stored (duplicates included); ``x``: ranges refused for good, with the
    reason; ``need``: ranges to resend with the full session dictionary ``ref``.
    """

    ok: list[Range] = field(default_factory=list)
    x: list[tuple[int, int, str]] = field(default_factory=list)
    need: list[tuple[bytes, int, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.ok or self.x or self.need)


def encode_ack(ack: Ack) -> bytes:
    message: dict[str, object] = {"ver": 2}
    if ack.ok:
        message["ok"] = [list(r) for r in ack.ok]
    if ack.x:
        message["x"] = [[a, b, _clip(reason, 500)] for a, b, reason in ack.x]
    if ack.need:
        message["need"] = [list(n) for n in ack.need]
    return cbor2.dumps(message)


def decode_ack(payload: bytes) -> Ack:
    """Decode and validate an ack; raises :class:`ContractError` with the reason."""
    msg = _load(payload)
    if msg.get("ver") != 2 or type(msg.get("ver")) is not int:
        raise ContractError(f"unsupported ack version {_show(msg.get('ver'))}")
    ack = Ack()
    for entry in _ack_list(msg, "ok"):
        ack.ok.append(_ack_range(entry, 2, "ok"))
    for entry in _ack_list(msg, "x"):
        first, last = _ack_range(entry, 3, "x")
        reason = entry[2]  # type: ignore[index]  # length checked by _ack_range
        if type(reason) is not str or len(reason) > 500:
            raise ContractError("'x' reason must be text of at most 500 characters")
        ack.x.append((first, last, reason))
    for entry in _ack_list(msg, "need"):
        if type(entry) is not list or len(entry) != 3:
            raise ContractError("'need' entries are [ref, first, last]")
        ref = entry[0]
        if type(ref) is not bytes or len(ref) != REF_BYTES:
            raise ContractError(f"'need' ref must be {REF_BYTES} bytes")
        first, last = _ack_range(entry[1:], 2, "need")
        ack.need.append((ref, first, last))
    return ack


def _ack_list(msg: dict[object, object], key: str) -> list[object]:
    value = msg.get(key, [])
    if type(value) is not list or len(value) > MAX_ACK_ENTRIES:
        raise ContractError(f"'{key}' must be a list of at most {MAX_ACK_ENTRIES} entries")
    return value


def _ack_range(entry: object, length: int, key: str) -> Range:
    if type(entry) is not list or len(entry) != length:
        raise ContractError(f"'{key}' entries must have {length} elements")
    first = _int(entry[0], f"'{key}' first", 1, MAX_SEQ)
    return first, _int(entry[1], f"'{key}' last", first, MAX_SEQ)
