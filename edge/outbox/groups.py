"""Groups: one group commit's observations as one compact record, and the dictionary it uses.

An SD card wears with every page written, so observations are never stored one row each. A
**group** holds a whole group commit as a CBOR array of columns — datastream and provenance
indices, time deltas, float64 values (exact), sparse optional fields — and is stored as one
journal record (:mod:`edge.outbox.journal`) and, if it must outlive the spill window, as one
``grp`` row. Datastreams and provenance documents are numbered once in a **dictionary**
(tables ``datastream``/``provenance``), owned here.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from array import array
from dataclasses import dataclass, field

import cbor2

from edge.model import Datastream, Observation, Provenance, Quality
from edge.outbox.schema import OutboxError

GROUP_FORMAT = 1


@dataclass(slots=True, eq=False)
class Group:
    """One stored group. ``observations`` is set while it is held in memory."""

    first: int
    last: int
    n: int
    t_min: int
    t_max: int
    row_id: int | None = None  # its ``grp`` row once spilled to the database
    observations: list[Observation] | None = None
    segment: int = 0  # journal segment holding it while in memory (0: none)
    committed_at: float = 0.0  # monotonic time of its commit
    seqs: list[int] | None = field(default=None, repr=False)  # explicit numbers, None: a run
    blob: bytes = field(default=b"", repr=False)  # its encoding (journal record) while in memory

    @property
    def in_memory(self) -> bool:
        return self.observations is not None


DictEntry = tuple[str, int, str, str]  # ("ds", id, sensor, quantity) or ("prov", id, doc, "")


class Dictionary:
    """Datastream and provenance numbering, shared by every group of one outbox."""

    def __init__(self, gateway_id: str) -> None:
        self.gateway_id = gateway_id
        self.ds_ids: dict[tuple[str, str], int] = {}
        self.prov_ids: dict[Provenance, int] = {}
        self.ds_by_id: dict[int, Datastream] = {}
        self.prov_by_id: dict[int, Provenance] = {}
        self.fresh: list[DictEntry] = []  # numbered, in no record yet
        self.unsaved: list[DictEntry] = []  # in the journal, not yet in the database
        # Sources intern their Datastream/Provenance objects: look them up by identity first
        # (hashing a frozen dataclass per observation costs more than the rest of the row).
        self.by_identity: dict[int, tuple[object, int]] = {}

    def load(self, db: sqlite3.Connection) -> None:
        for ds_id, sensor, qty in db.execute("SELECT id, sensor, quantity FROM datastream"):
            self._add(("ds", int(ds_id), str(sensor), str(qty)))
        for prov_id, doc in db.execute("SELECT id, doc FROM provenance"):
            self._add(("prov", int(prov_id), str(doc), ""))

    def _add(self, entry: DictEntry) -> None:
        kind, ident, a, b = entry
        if kind == "ds":
            self.ds_ids[(a, b)] = ident
            self.ds_by_id[ident] = Datastream(self.gateway_id, a, b)
        else:
            prov = Provenance.from_dict(json.loads(a))
            self.prov_ids[prov] = ident
            self.prov_by_id[ident] = prov

    def learn(self, entries: list[DictEntry]) -> None:
        """Entries found in a journal record; those the database lacks are saved with the
        next snapshot."""
        for e in entries:
            known = self.ds_by_id if e[0] == "ds" else self.prov_by_id
            if e[1] not in known:
                self._add(e)
                self.unsaved.append(e)

    def entries(self) -> list[DictEntry]:
        """Every entry (a new journal segment starts with them, so it decodes on its own)."""
        out: list[DictEntry] = [
            ("ds", i, d.sensor_id, d.quantity_code) for i, d in self.ds_by_id.items()
        ]
        out += [
            ("prov", i, json.dumps(p.as_dict(), sort_keys=True), "")
            for i, p in self.prov_by_id.items()
        ]
        return out

    def take_fresh(self) -> list[DictEntry]:
        """Entries numbered since the last call: they go into the record being written."""
        fresh, self.fresh = self.fresh, []
        self.unsaved.extend(fresh)
        return fresh

    def drop_fresh(self) -> None:
        """The record carrying fresh entries was not written: forget their numbers."""
        for kind, ident, _a, _b in self.fresh:
            if kind == "ds":
                stream = self.ds_by_id.pop(ident)
                self.ds_ids.pop((stream.sensor_id, stream.quantity_code), None)
            else:
                self.prov_ids.pop(self.prov_by_id.pop(ident), None)
        self.fresh = []
        self.by_identity.clear()

    def save(self, db: sqlite3.Connection) -> None:
        """Write entries not yet in the database (inside the caller's transaction)."""
        for kind, ident, a, b in [*self.unsaved, *self.fresh]:
            if kind == "ds":
                db.execute(
                    "INSERT OR IGNORE INTO datastream(id, sensor, quantity) VALUES(?,?,?)",
                    (ident, a, b),
                )
            else:
                db.execute("INSERT OR IGNORE INTO provenance(id, doc) VALUES(?,?)", (ident, a))

    def saved(self) -> None:
        self.unsaved = []
        self.fresh = []

    def ds_id(self, stream: Datastream) -> int:
        known = self.by_identity.get(id(stream))
        if known is not None and known[0] is stream:
            return known[1]
        ident = self.ds_ids.get((stream.sensor_id, stream.quantity_code))
        if ident is None:
            ident = max(self.ds_by_id, default=0) + 1
            entry: DictEntry = ("ds", ident, stream.sensor_id, stream.quantity_code)
            self._add(entry)
            self.fresh.append(entry)
        self.by_identity[id(stream)] = (stream, ident)
        return ident

    def prov_id(self, prov: Provenance) -> int:
        known = self.by_identity.get(id(prov))
        if known is not None and known[0] is prov:
            return known[1]
        ident = self.prov_ids.get(prov)
        if ident is None:
            ident = max(self.prov_by_id, default=0) + 1
            entry: DictEntry = ("prov", ident, json.dumps(prov.as_dict(), sort_keys=True), "")
            self._add(entry)
            self.fresh.append(entry)
        self.by_identity[id(prov)] = (prov, ident)
        return ident


def encode_group(
    dictionary: Dictionary, obs: list[Observation], seqs: list[int] | None
) -> tuple[bytes, int, int]:
    """One group as a CBOR array of columns (values as raw float64, exact); with t_min, t_max."""
    ds_col: list[int] = []
    prov_col: list[int] = []
    t_col: list[int] = []
    values = array("d")
    dur: dict[int, int] = {}
    rt: dict[int, int] = {}
    raw: dict[int, float] = {}
    qual: dict[int, dict[str, object]] = {}
    t_base = obs[0].phenomenon_ms
    t_min = t_max = t_base
    # the hot loop: identity look-ups inline, the dictionary's methods only for a miss
    by_identity = dictionary.by_identity
    for i, o in enumerate(obs):
        stream = o.stream
        known = by_identity.get(id(stream))
        ds_col.append(known[1] if known is not None and known[0] is stream
                      else dictionary.ds_id(stream))
        provenance = o.provenance
        known = by_identity.get(id(provenance))
        prov_col.append(known[1] if known is not None and known[0] is provenance
                        else dictionary.prov_id(provenance))
        t = o.phenomenon_ms
        t_col.append(t - t_base)
        t_min = t if t < t_min else t_min
        t_max = t if t > t_max else t_max
        values.append(o.result)
        if o.phenomenon_end_ms is not None:
            dur[i] = o.phenomenon_end_ms - t
        if o.result_ms is not None:
            rt[i] = o.result_ms
        if o.raw_result is not None:
            raw[i] = o.raw_result
        if o.quality is not None:
            qual[i] = o.quality.as_dict()
    if sys.byteorder != "little":
        values.byteswap()
    record = [GROUP_FORMAT, seqs, t_base, ds_col, prov_col, t_col, values.tobytes(), dur, rt,
              raw, qual]
    return cbor2.dumps(record), t_min, t_max


def decode_group(dictionary: Dictionary, first: int, n: int, data: bytes) -> list[Observation]:
    """The observations of an encoded group, ascending by sequence number."""
    fmt, seqs, t_base, ds_col, prov_col, t_col, raw_values, dur, rt, raw, qual = cbor2.loads(data)
    if fmt != GROUP_FORMAT:
        raise OutboxError(f"group format {fmt} not supported")
    values = array("d")
    values.frombytes(raw_values)
    if sys.byteorder != "little":
        values.byteswap()
    seq_list = seqs if seqs is not None else range(first, first + n)
    ds_by_id, prov_by_id = dictionary.ds_by_id, dictionary.prov_by_id
    out = []
    for i, seq in enumerate(seq_list):
        t = t_base + t_col[i]
        q = qual.get(i)
        d = dur.get(i)
        out.append(
            Observation(
                ds_by_id[ds_col[i]],
                values[i],
                t,
                prov_by_id[prov_col[i]],
                None if d is None else t + d,
                rt.get(i),
                raw.get(i),
                None if q is None else Quality.from_dict(q),
                seq,
            )
        )
    return out


class GroupRows:
    """The ``grp`` table: groups spilled to the database, with a small decoded cache."""

    CACHE = 16  # decoded groups kept in memory for draining

    def __init__(self, db: sqlite3.Connection, dictionary: Dictionary) -> None:
        self.db = db
        self.dictionary = dictionary
        self._decoded: dict[int, list[Observation]] = {}

    def load(self) -> list[Group]:
        return [
            Group(first, last, n, t_min, t_max, row_id=row_id)
            for row_id, first, last, n, t_min, t_max in self.db.execute(
                "SELECT id, first_seq, last_seq, n, t_min, t_max FROM grp ORDER BY first_seq, id"
            )
        ]

    def insert(self, obs: list[Observation]) -> Group:
        """Insert ``obs`` (sequence numbers set, ascending) as one row; in a transaction."""
        seqs = [o.sequence or 0 for o in obs]
        contiguous = seqs[-1] - seqs[0] + 1 == len(seqs)
        data, t_min, t_max = encode_group(self.dictionary, obs, None if contiguous else seqs)
        cur = self.db.execute(
            "INSERT INTO grp(first_seq, last_seq, n, t_min, t_max, data) VALUES(?,?,?,?,?,?)",
            (seqs[0], seqs[-1], len(seqs), t_min, t_max, data),
        )
        assert cur.lastrowid is not None
        return Group(seqs[0], seqs[-1], len(seqs), t_min, t_max, row_id=cur.lastrowid)

    def insert_encoded(self, g: Group) -> Group:
        """Insert a memory group as it was encoded for the journal (no second encoding)."""
        cur = self.db.execute(
            "INSERT INTO grp(first_seq, last_seq, n, t_min, t_max, data) VALUES(?,?,?,?,?,?)",
            (g.first, g.last, g.n, g.t_min, g.t_max, g.blob),
        )
        assert cur.lastrowid is not None
        return Group(g.first, g.last, g.n, g.t_min, g.t_max, row_id=cur.lastrowid)

    def delete(self, groups: list[Group]) -> None:
        self.db.executemany(
            "DELETE FROM grp WHERE id=?", [(g.row_id,) for g in groups if g.row_id is not None]
        )

    def forget(self, groups: list[Group]) -> None:
        for g in groups:
            if g.row_id is not None:
                self._decoded.pop(g.row_id, None)

    def observations(self, group: Group) -> list[Observation]:
        if group.observations is not None:
            return group.observations
        assert group.row_id is not None
        cached = self._decoded.get(group.row_id)
        if cached is not None:
            return cached
        (data,) = self.db.execute("SELECT data FROM grp WHERE id=?", (group.row_id,)).fetchone()
        out = decode_group(self.dictionary, group.first, group.n, data)
        if len(self._decoded) >= self.CACHE:
            self._decoded.pop(next(iter(self._decoded)))
        self._decoded[group.row_id] = out
        return out
