"""Reading co-location CSVs and aligning sensor and reference data in time.

Nothing about the schema is assumed: the caller names the time column(s), their format and
time zone, the labelling convention of averaged values (hour-beginning or hour-ending), the
separator, the decimal mark and the missing-value markers. Errors name the file, the row or
column, and what to change.

Alignment: every value is turned into the start of the interval it describes (UTC), values
are averaged into bins of ``period_s`` (default one hour), and sensor and reference bins are
joined on their start time. Bins with a missing value in any column are dropped.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

Convention = Literal["begin", "end"]
SEPARATORS = (";", ",", "\t", "|")
_NUMBER_COMMA = re.compile(r"^[+-]?\d+,\d+$")


class DataError(ValueError):
    """A CSV that cannot be used, with a message saying what to change."""


@dataclass(frozen=True)
class TableSpec:
    """How to read one CSV: which columns, and how its timestamps are written."""

    path: Path
    columns: dict[str, str]  # role (e.g. 'reference', 'signal', 'rh') → column name
    time_columns: tuple[str, ...] = ("time",)  # joined with a space before parsing
    time_format: str | None = None  # strptime format; None: ISO 8601
    tz: str = "UTC"  # zone of naive timestamps (IANA name)
    convention: Convention = "begin"  # the label is the start (begin) or end of the interval
    label_period_s: int | None = None  # length of the labelled interval (default: period_s)
    sep: str | None = None  # None: detect from the header
    decimal: str | None = None  # None: detect ('.' or ',')
    na_values: tuple[str, ...] = ("", "NA", "NaN", "nan", "null", "-")
    flag_column: str | None = None  # rows whose flag is not in flag_ok are dropped
    flag_ok: tuple[str, ...] = ()


@dataclass
class Table:
    """Parsed CSV: interval start times (UTC epoch seconds) and float columns by role."""

    start_s: np.ndarray
    values: dict[str, np.ndarray]
    source: str
    dropped_flagged: int = 0
    skipped_rows: int = 0


@dataclass
class Aligned:
    """Sensor and reference values on a common time base (bin starts, UTC epoch seconds)."""

    start_s: np.ndarray
    values: dict[str, np.ndarray]
    period_s: int
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.start_s.size)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise DataError(
            f"unknown time zone {name!r}; use an IANA name like 'Europe/Brussels' or 'UTC'"
        ) from None


def _detect_sep(header: str, wanted: Sequence[str]) -> str:
    best, best_hits, best_fields = ";", -1, 0
    for sep in SEPARATORS:
        fields = [f.strip().strip('"') for f in header.split(sep)]
        hits = sum(1 for w in wanted if w in fields)
        if (hits, len(fields)) > (best_hits, best_fields):
            best, best_hits, best_fields = sep, hits, len(fields)
    return best


def _sep_name(sep: str) -> str:
    return {"\t": "tab", ";": "';'", ",": "','", "|": "'|'"}.get(sep, repr(sep))


def read_table(spec: TableSpec) -> Table:
    """Read a CSV per ``spec``; raise :class:`DataError` with an actionable message."""
    try:
        text = spec.path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"{spec.path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DataError(f"{spec.path}: not UTF-8 text") from None
    lines = text.splitlines()
    if not lines:
        raise DataError(f"{spec.path}: the file is empty")
    wanted = [*spec.time_columns, *spec.columns.values()]
    if spec.flag_column:
        wanted.append(spec.flag_column)
    sep = spec.sep or _detect_sep(lines[0], wanted)
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    header = [h.strip() for h in next(reader)]
    missing = [c for c in wanted if c not in header]
    if missing:
        other = _detect_sep(lines[0], wanted)
        hint = ""
        if other != sep:
            hint = (
                f"; the header looks {_sep_name(other)}-separated: try separator {_sep_name(other)}"
            )
        shown = ", ".join(repr(h) for h in header[:20] if h)
        raise DataError(
            f"{spec.path}: column(s) {', '.join(repr(m) for m in missing)} not found with separator "
            f"{_sep_name(sep)}; header has: {shown}{hint}"
        )
    idx = {name: header.index(name) for name in wanted}
    zone = _zone(spec.tz)
    reader_rows = list(reader)
    decimal = spec.decimal
    if decimal is None:
        decimal = "," if sep != "," and _looks_decimal_comma(reader_rows, idx, spec) else "."
    na = set(spec.na_values)
    starts: list[float] = []
    cols: dict[str, list[float]] = {role: [] for role in spec.columns}
    dropped = skipped = 0
    for row_no, row in enumerate(reader_rows, start=2):
        if not row or all(not c.strip() for c in row[: len(header)]):
            skipped += 1
            continue
        stamp = " ".join(_cell(row, idx[c]) for c in spec.time_columns).strip()
        if not stamp:
            skipped += 1
            continue
        if spec.flag_column and _cell(row, idx[spec.flag_column]) not in spec.flag_ok:
            dropped += 1
            continue
        starts.append(_parse_time(stamp, spec, zone, row_no))
        for role, col in spec.columns.items():
            cols[role].append(_parse_number(_cell(row, idx[col]), decimal, na, spec, row_no, col))
    if not starts:
        raise DataError(f"{spec.path}: no data rows")
    start = np.asarray(starts, dtype=float)
    return Table(
        start,
        {k: np.asarray(v, dtype=float) for k, v in cols.items()},
        str(spec.path),
        dropped,
        skipped,
    )


def _cell(row: list[str], i: int) -> str:
    return row[i].strip().strip('"') if i < len(row) else ""


def _looks_decimal_comma(rows: list[list[str]], idx: dict[str, int], spec: TableSpec) -> bool:
    comma = dot = 0
    for row in rows[:500]:
        for col in spec.columns.values():
            cell = _cell(row, idx[col])
            if _NUMBER_COMMA.match(cell):
                comma += 1
            elif "." in cell:
                dot += 1
    return comma > dot


def _parse_number(
    cell: str, decimal: str, na: set[str], spec: TableSpec, row_no: int, col: str
) -> float:
    if cell in na:
        return math.nan
    text = cell.replace(",", ".") if decimal == "," else cell
    try:
        value = float(text)
    except ValueError:
        hint = ""
        if decimal == "." and _NUMBER_COMMA.match(cell):
            hint = " (decimal comma? set the decimal mark to ',')"
        raise DataError(
            f"{spec.path}, row {row_no}, column {col!r}: {cell!r} is not a number{hint}"
        ) from None
    if not math.isfinite(value) or value in _numeric_markers(na):
        return math.nan
    return value


def _numeric_markers(na: set[str]) -> frozenset[float]:
    """Numeric missing-value markers ('-200' also matches '-200,0' and '-200.0')."""
    key = frozenset(na)
    cached = _MARKER_CACHE.get(key)
    if cached is None:
        found = set()
        for marker in na:
            with contextlib.suppress(ValueError):
                found.add(float(marker.replace(",", ".")))
        cached = _MARKER_CACHE[key] = frozenset(found)
    return cached


_MARKER_CACHE: dict[frozenset[str], frozenset[float]] = {}


def _parse_time(stamp: str, spec: TableSpec, zone: ZoneInfo, row_no: int) -> float:
    try:
        if spec.time_format:
            moment = datetime.strptime(stamp, spec.time_format)
        else:
            moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        fmt = spec.time_format or "ISO 8601"
        raise DataError(
            f"{spec.path}, row {row_no}: timestamp {stamp!r} does not match {fmt!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC).timestamp()


def interval_starts(table: Table, spec: TableSpec, period_s: int) -> np.ndarray:
    """Start of the interval each value describes (hour-ending labels are shifted back)."""
    if spec.convention == "end":
        return table.start_s - float(spec.label_period_s or period_s)
    return table.start_s


def resample(
    start_s: np.ndarray, values: dict[str, np.ndarray], period_s: int, min_count: int = 1
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Average each column into ``period_s`` bins (NaNs ignored; < min_count values → NaN)."""
    bins = np.floor(start_s / period_s) * period_s
    uniq, inverse = np.unique(bins, return_inverse=True)
    out: dict[str, np.ndarray] = {}
    for role, v in values.items():
        ok = ~np.isnan(v)
        sums = np.bincount(inverse[ok], weights=v[ok], minlength=uniq.size)
        counts = np.bincount(inverse[ok], minlength=uniq.size)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums / counts
        mean[counts < min_count] = np.nan
        out[role] = mean
    return uniq, out


def _fmt(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def align(
    sensor: TableSpec, reference: TableSpec, period_s: int = 3600, min_count: int = 1
) -> Aligned:
    """Read both CSVs, resample to ``period_s`` and join them; drop bins with any gap."""
    s_tab, r_tab = read_table(sensor), read_table(reference)
    overlapping = set(sensor.columns) & set(reference.columns)
    if overlapping:
        raise DataError(
            f"roles {sorted(overlapping)} are mapped in both the sensor and reference files"
        )
    s_t, s_v = resample(interval_starts(s_tab, sensor, period_s), s_tab.values, period_s, min_count)
    r_t, r_v = resample(
        interval_starts(r_tab, reference, period_s), r_tab.values, period_s, min_count
    )
    common, si, ri = np.intersect1d(s_t, r_t, return_indices=True)
    if common.size == 0:
        raise DataError(
            f"no overlap in time: sensor data cover {_fmt(s_t[0])} – {_fmt(s_t[-1])}, reference "
            f"data cover {_fmt(r_t[0])} – {_fmt(r_t[-1])} (after time-zone conversion and "
            f"{period_s} s averaging); check the files, time zones and timestamp formats"
        )
    values = {k: v[si] for k, v in s_v.items()} | {k: v[ri] for k, v in r_v.items()}
    ok = np.ones(common.size, dtype=bool)
    for v in values.values():
        ok &= ~np.isnan(v)
    notes = [
        f"{common.size} common {period_s} s bins, {int((~ok).sum())} dropped for gaps/missing values",
    ]
    if s_tab.dropped_flagged or r_tab.dropped_flagged:
        notes.append(f"{s_tab.dropped_flagged + r_tab.dropped_flagged} flagged rows dropped")
    if int(ok.sum()) == 0:
        raise DataError("sensor and reference overlap in time but no bin has all values present")
    return Aligned(common[ok], {k: v[ok] for k, v in values.items()}, period_s, notes)


def write_aligned(aligned: Aligned, path: Path) -> None:
    """CSV with ``time_utc`` (bin start, ISO 8601) and one column per role."""
    roles = list(aligned.values)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["time_utc", *roles])
        for i, t in enumerate(aligned.start_s):
            stamp = datetime.fromtimestamp(float(t), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            w.writerow([stamp, *(repr(float(aligned.values[r][i])) for r in roles)])


def read_aligned(path: Path, roles: Sequence[str], period_s: int = 3600) -> Aligned:
    """Read a file written by :func:`write_aligned` (or any CSV with time_utc + role columns)."""
    spec = TableSpec(
        path=path, columns={r: r for r in roles}, time_columns=("time_utc",), sep=",", decimal="."
    )
    table = read_table(spec)
    ok = np.ones(table.start_s.size, dtype=bool)
    for v in table.values.values():
        ok &= ~np.isnan(v)
    return Aligned(table.start_s[ok], {k: v[ok] for k, v in table.values.items()}, period_s)


def export_outbox(db_path: Path, out_csv: Path) -> int:
    """Write the gateway outbox's observations as a wide CSV for ``calibrate fit``.

    Columns: ``time_utc`` (phenomenon start, ISO 8601 UTC) and one column per datastream named
    ``<sensor_id>/<quantity>`` holding the *raw* value (``raw`` when the gateway calibrated the
    observation, else the result). Rows are sparse: each observation fills one cell; ``fit``
    averages every column into the common period, ignoring empty cells. Returns the row count.

    The outbox only keeps observations no uplink has confirmed yet: for a co-location run the
    gateway is configured without uplinks (or with a long TTL), so it keeps everything.
    """
    import sqlite3

    # edge.config must be imported before edge.outbox: importing edge.outbox first runs into
    # the import cycle edge.outbox -> edge.config -> edge.uplinks -> edge.outbox (being fixed
    # on main; this order is the local workaround and is harmless once the cycle is gone).
    import edge.config  # noqa: F401
    from edge.outbox import iter_unsent

    if not db_path.is_file():
        raise DataError(f"{db_path}: no such outbox database")
    try:
        rows = sorted(
            (
                o.phenomenon_ms,
                o.stream.sensor_id,
                o.stream.quantity_code,
                o.raw_result if o.raw_result is not None else o.result,
            )
            for o in iter_unsent(db_path)
        )
    except (sqlite3.Error, ValueError, KeyError) as exc:
        raise DataError(f"{db_path}: not a readable duet-edge outbox ({exc})") from None
    keys = sorted({f"{sensor}/{qty}" for _, sensor, qty, _ in rows})
    col = {k: i for i, k in enumerate(keys)}
    with out_csv.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["time_utc", *keys])
        for t_ms, sensor, qty, value in rows:
            cells = [""] * len(keys)
            cells[col[f"{sensor}/{qty}"]] = repr(float(value))
            stamp = datetime.fromtimestamp(t_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            w.writerow([stamp, *cells])
    return len(rows)
