"""Reading co-location CSVs and aligning sensor and reference data in time.

Nothing about the schema is assumed: the caller names the time column(s), their format and
time zone, the labelling convention of averaged values (hour-beginning or hour-ending), the
separator, the decimal mark and the missing-value markers. Errors name the file, the row or
column, and what to change.

Alignment: every value is turned into the start of the interval it describes (UTC), values
are averaged into bins of ``period_s`` (default: the longer of the two files' own intervals,
detected from the data), and sensor and reference bins are joined on their start time. Bins
with a missing value in any column are dropped.

Co-location campaigns: several sensors beside one reference, either one file per sensor or one
file with a sensor-id column. Each sensor is averaged on its own, so a sample is one sensor in
one interval: different sensors are never averaged into one sample.

Alignment cannot shift silently: after joining, the raw signal is cross-correlated with the
reference at lags of ±1..3 intervals; a better match away from lag 0 raises
:class:`AlignmentError` (a wrong labelling convention or time zone), and values such as −200 or
−999 that repeat in a column and were not declared missing raise :class:`SentinelError`.
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

Convention = Literal["begin", "end", "auto"]  # auto: end for sub-daily data, begin for daily
SEPARATORS = (";", ",", "\t", "|")
_NUMBER_COMMA = re.compile(r"^[+-]?\d+,\d+$")


class DataError(ValueError):
    """A CSV that cannot be used, with a message saying what to change."""


class RefusedError(DataError):
    """The data could be used, but would very probably give a wrong calibration."""


class AlignmentError(RefusedError):
    """Sensor and reference match better at a non-zero lag: a convention or time-zone error."""


class SentinelError(RefusedError):
    """Missing-value markers (−200, −999, ...) would be used as data."""


SENTINELS = (-200.0, -999.0, -9999.0, -99.0, 9999.0, -9999.9, 999.9)
IMPOSSIBLE_ZERO = frozenset({"humidity", "pressure", "mox_response"})  # 0 means "no value"


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
    group_column: str | None = None  # sensor-id column: one sample per sensor and interval
    name: str = ""  # the sensor's id when the file holds one sensor
    quantities: dict[str, str] = field(default_factory=dict)  # role → quantity (0-checks)


@dataclass
class Table:
    """Parsed CSV: interval start times (UTC epoch seconds) and float columns by role."""

    start_s: np.ndarray
    values: dict[str, np.ndarray]
    source: str
    dropped_flagged: int = 0
    skipped_rows: int = 0
    groups: np.ndarray | None = None  # sensor id per row (group_column)
    sentinels: list[str] = field(default_factory=list)  # undeclared missing-value markers
    warnings: list[str] = field(default_factory=list)


@dataclass
class Aligned:
    """Sensor and reference values on a common time base (bin starts, UTC epoch seconds)."""

    start_s: np.ndarray
    values: dict[str, np.ndarray]
    period_s: int
    notes: list[str] = field(default_factory=list)
    groups: np.ndarray | None = None  # sensor id of each sample (None: a single sensor)
    warnings: list[str] = field(default_factory=list)  # printed loudly, on stderr

    def __len__(self) -> int:
        return int(self.start_s.size)

    @property
    def sensors(self) -> list[str]:
        return sorted(set(self.groups.tolist())) if self.groups is not None else []


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
    if spec.group_column:
        wanted.append(spec.group_column)
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
    groups: list[str] = []
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
        if spec.group_column:
            groups.append(_cell(row, idx[spec.group_column]))
        for role, col in spec.columns.items():
            cols[role].append(_parse_number(_cell(row, idx[col]), decimal, na, spec, row_no, col))
    if not starts:
        raise DataError(f"{spec.path}: no data rows")
    start = np.asarray(starts, dtype=float)
    values = {k: np.asarray(v, dtype=float) for k, v in cols.items()}
    sentinels, warnings = _suspicious_values(spec, values)
    return Table(start, values, str(spec.path), dropped, skipped,
                 np.asarray(groups, dtype=str) if spec.group_column else None, sentinels, warnings)


def _suspicious_values(spec: TableSpec, values: dict[str, np.ndarray]) -> tuple[list[str], list[str]]:
    """Undeclared missing-value markers (refused) and impossible zeros (warned about)."""
    sentinels: list[str] = []
    warnings: list[str] = []
    for role, v in values.items():
        col = spec.columns[role]
        n = int(v.size)
        for marker in SENTINELS:
            count = int((v == marker).sum())
            if count >= 3 and count >= 0.001 * n:
                sentinels.append(
                    f"{spec.path.name}: column {col!r} holds {count} of {n} values equal to "
                    f"{marker:g}, a usual missing-value marker: pass --na {marker:g} to drop "
                    f"them (or --keep-sentinels if they are real data)"
                )
        zeros = int((v == 0.0).sum())
        if spec.quantities.get(role) in IMPOSSIBLE_ZERO and zeros >= 3 and zeros >= 0.01 * n:
            warnings.append(
                f"{spec.path.name}: column {col!r} ({spec.quantities[role]}) holds {zeros} values "
                f"of exactly 0, which is impossible: probably a missing-value marker (--na 0)"
            )
    return sentinels, warnings


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


NICE_PERIODS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def _nice_period(step: float) -> int:
    return next((p for p in NICE_PERIODS if step <= p * 1.05), round(step))


def detect_interval(start_s: np.ndarray) -> int:
    """The data's own sampling interval (s): the most common spacing of distinct timestamps (to
    the minute; ties go to the shorter one), rounded up to a usual averaging period (1 min …
    1 day).

    The most common spacing, not the median: an hourly export with more than half of its hours
    missing (outages, or rows left out of a published subset) has a median spacing of two
    hours or more, but its most common spacing is still one hour."""
    ts = np.unique(start_s)
    if ts.size < 2:
        return 0
    steps = np.diff(ts)
    steps = np.where(steps >= 60, np.round(steps / 60) * 60, steps)  # clock jitter below 30 s
    values, counts = np.unique(steps, return_counts=True)
    return _nice_period(float(values[int(np.argmax(counts))]))


def interval_starts(table: Table, spec: TableSpec, period_s: int) -> np.ndarray:
    """Start of the interval each value describes (interval-ending labels are shifted back by
    the file's own interval, not by the averaging period)."""
    label = float(spec.label_period_s or period_s)
    if spec.convention == "end" or (spec.convention == "auto" and label < 86400):
        return table.start_s - label
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


@dataclass
class _Sensor:
    name: str
    start_s: np.ndarray
    values: dict[str, np.ndarray]
    interval_s: int
    spec: TableSpec


def _split_sensors(specs: Sequence[TableSpec]) -> tuple[list[_Sensor], list[Table]]:
    sensors: list[_Sensor] = []
    tables: list[Table] = []
    for spec in specs:
        table = read_table(spec)
        tables.append(table)
        if table.groups is None:
            sensors.append(_Sensor(spec.name or (spec.path.stem if len(specs) > 1 else ""),
                                   table.start_s, table.values, detect_interval(table.start_s),
                                   spec))
            continue
        for name in sorted(set(table.groups.tolist())):
            rows = table.groups == name
            sensors.append(_Sensor(name, table.start_s[rows],
                                   {k: v[rows] for k, v in table.values.items()},
                                   detect_interval(table.start_s[rows]), spec))
    names = [s.name for s in sensors]
    if len(set(names)) != len(names):
        raise DataError(f"sensor ids are not unique: {names}; name the files --sensor ID=PATH")
    return sensors, tables


def align(
    sensor: TableSpec | Sequence[TableSpec],
    reference: TableSpec,
    period_s: int | None = None,
    min_count: int = 1,
    *,
    allow_lag: bool = False,
    keep_sentinels: bool = False,
) -> Aligned:
    """Read sensor file(s) and the reference, average to ``period_s`` and join them.

    One sample per sensor and interval; bins with any gap are dropped. Raises
    :class:`SentinelError` / :class:`AlignmentError` instead of fitting on data that are
    probably wrong (unless ``keep_sentinels`` / ``allow_lag``).
    """
    specs = [sensor] if isinstance(sensor, TableSpec) else list(sensor)
    overlapping = {r for s in specs for r in s.columns} & set(reference.columns)
    if overlapping:
        raise DataError(
            f"roles {sorted(overlapping)} are mapped in both the sensor and reference files"
        )
    sensors, tables = _split_sensors(specs)
    r_tab = read_table(reference)
    tables.append(r_tab)
    sentinels = [m for t in tables for m in t.sentinels]
    if sentinels and not keep_sentinels:
        raise SentinelError(sentinels[0] + (f" ({len(sentinels) - 1} more such column(s))"
                                            if len(sentinels) > 1 else ""))
    warnings = [w for t in tables for w in t.warnings] + [
        f"kept as data (--keep-sentinels): {m}" for m in sentinels]
    r_interval = detect_interval(r_tab.start_s)
    s_interval = max((s.interval_s for s in sensors), default=0)
    period = period_s or max(r_interval, s_interval, 1)
    if r_interval and period < 0.95 * r_interval:
        raise DataError(
            f"--period {period} s is shorter than the reference's own interval ({r_interval} s, "
            f"detected from {reference.path.name}): use --period {r_interval} or longer"
        )
    notes = [f"intervals detected: sensor {s_interval or '?'} s, reference {r_interval or '?'} s; "
             f"averaging period {period} s"]
    ref_starts = interval_starts(r_tab, reference, r_interval or period)
    r_t, r_v = resample(ref_starts, r_tab.values, period, min_count)
    parts: list[tuple[str, np.ndarray, dict[str, np.ndarray]]] = []
    n_common = 0
    for sensor_data in sensors:
        table = Table(sensor_data.start_s, sensor_data.values, str(sensor_data.spec.path))
        s_t, s_v = resample(interval_starts(table, sensor_data.spec,
                                            sensor_data.interval_s or period),
                            sensor_data.values, period, min_count)
        common, si, ri = np.intersect1d(s_t, r_t, return_indices=True)
        n_common += common.size
        values = {k: v[si] for k, v in s_v.items()} | {k: v[ri] for k, v in r_v.items()}
        parts.append((sensor_data.name, common, values))
    if n_common == 0:
        raise DataError(_no_overlap_message(sensors, r_tab.start_s, ref_starts, period))
    t_all = np.concatenate([p[1] for p in parts])
    values = {k: np.concatenate([p[2][k] for p in parts]) for k in parts[0][2]}
    groups = np.concatenate([np.full(p[1].size, p[0]) for p in parts])
    ok = np.ones(t_all.size, dtype=bool)
    for v in values.values():
        ok &= ~np.isnan(v)
    notes.append(
        f"{len(sensors)} sensor(s), {t_all.size} sensor-intervals of {period} s in common with "
        f"the reference, {int((~ok).sum())} dropped for gaps/missing values"
    )
    dropped = sum(t.dropped_flagged for t in tables)
    if dropped:
        notes.append(f"{dropped} flagged rows dropped")
    if int(ok.sum()) == 0:
        raise DataError("sensor and reference overlap in time but no interval has all values "
                        "present; check --na markers and the mapped columns")
    order = np.lexsort((groups[ok], t_all[ok]))
    aligned = Aligned(t_all[ok][order], {k: v[ok][order] for k, v in values.items()}, period,
                      notes, groups[ok][order] if any(p[0] for p in parts) else None, warnings)
    lag_problem = check_lag(aligned)
    if lag_problem:
        if not allow_lag:
            raise AlignmentError(lag_problem + "; fix the option, or pass --allow-lag to fit "
                                 "anyway")
        aligned.warnings.append(lag_problem + " (fitting anyway: --allow-lag)")
    return aligned


MAX_LAG = 3
LAG_MARGIN = 0.02  # correlation gain that makes a non-zero lag "clearly better"


def check_lag(aligned: Aligned, signal: str = "signal") -> str:
    """A message when the signal matches the reference clearly better shifted by ±1..3
    intervals ('' when lag 0 is best): the usual cause is a convention or time-zone error."""
    if signal not in aligned.values or "reference" not in aligned.values:
        return ""
    groups = aligned.groups if aligned.groups is not None else np.full(len(aligned), "")
    pairs: dict[int, tuple[list[float], list[float]]] = {k: ([], []) for k in
                                                           range(-MAX_LAG, MAX_LAG + 1)}
    p = aligned.period_s
    for name in set(groups.tolist()):
        rows = groups == name
        t = aligned.start_s[rows]
        sig = dict(zip(t.tolist(), aligned.values[signal][rows].tolist(), strict=True))
        ref = aligned.values["reference"][rows]
        for lag in pairs:
            for ti, r in zip(t.tolist(), ref.tolist(), strict=True):
                s_val = sig.get(ti + lag * p)
                if s_val is not None:
                    pairs[lag][0].append(s_val)
                    pairs[lag][1].append(r)
    corr: dict[int, float] = {}
    for lag, (a, b) in pairs.items():
        if len(a) >= 20 and np.std(a) > 0 and np.std(b) > 0:
            corr[lag] = float(np.corrcoef(a, b)[0, 1])
    if 0 not in corr or len(corr) < 2:
        return ""
    best = max(corr, key=corr.__getitem__)
    if best == 0 or corr[best] - corr[0] < LAG_MARGIN:
        return ""
    hours = best * p / 3600
    return (
        f"sensor and reference match best when the reference is shifted by {best:+d} interval(s) "
        f"({hours:+g} h): correlation {corr[best]:.2f} there vs {corr[0]:.2f} as aligned; a "
        f"wrong labelling convention (--ref-convention/--sensor-convention begin|end) or time "
        f"zone (--sensor-tz/--ref-tz) shifts the data this way"
    )


def _no_overlap_message(sensors: list[_Sensor], r_raw: np.ndarray, r_starts: np.ndarray,
                        period: int) -> str:
    s_lo = min(float(s.start_s.min()) for s in sensors)
    s_hi = max(float(s.start_s.max()) for s in sensors)
    r_lo, r_hi = float(r_raw.min()), float(r_raw.max())
    cover = (f"sensor data cover {_fmt(s_lo)} – {_fmt(s_hi)}, reference data cover "
             f"{_fmt(r_lo)} – {_fmt(r_hi)} (after time-zone conversion)")
    overlap_s = min(s_hi, r_hi) - max(s_lo, r_lo)
    if overlap_s > 0:
        s_phase = sorted({int(t % period) for s in sensors for t in s.start_s[:50].tolist()})[:3]
        r_phase = sorted({int(t % period) for t in r_starts[:50].tolist()})[:3]
        return (
            f"the files overlap for {overlap_s / 86400:.1f} days but no {period} s interval "
            f"matches: {cover}; sensor intervals start {s_phase} s into each period, reference "
            f"intervals {r_phase} s. Check the interval conventions (--ref-convention "
            f"begin|end), the time zones (--sensor-tz/--ref-tz) and --period"
        )
    gap_h = (max(s_lo, r_lo) - min(s_hi, r_hi)) / 3600
    hint = (" — a gap this small is usually a time-zone error (--sensor-tz/--ref-tz)"
            if gap_h <= 14 else "; check the files and timestamp formats")
    return f"no overlap in time: {cover}, {gap_h:.1f} h apart{hint}"


def write_aligned(aligned: Aligned, path: Path) -> None:
    """CSV with ``time_utc`` (bin start, ISO 8601) and one column per role."""
    roles = list(aligned.values)
    sensor = [] if aligned.groups is None else ["sensor"]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["time_utc", *sensor, *roles])
        for i, t in enumerate(aligned.start_s):
            stamp = datetime.fromtimestamp(float(t), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            group = [] if aligned.groups is None else [str(aligned.groups[i])]
            w.writerow([stamp, *group, *(repr(float(aligned.values[r][i])) for r in roles)])


def read_aligned(path: Path, roles: Sequence[str], period_s: int = 3600) -> Aligned:
    """Read a file written by :func:`write_aligned` (or any CSV with time_utc + role columns)."""
    try:
        header = path.read_text(encoding="utf-8").split("\n", 1)[0].strip().split(",")
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    spec = TableSpec(
        path=path, columns={r: r for r in roles}, time_columns=("time_utc",), sep=",", decimal=".",
        group_column="sensor" if "sensor" in header else None,
    )
    table = read_table(spec)
    ok = np.ones(table.start_s.size, dtype=bool)
    for v in table.values.values():
        ok &= ~np.isnan(v)
    period = detect_interval(table.start_s) or period_s
    groups = table.groups[ok] if table.groups is not None else None
    return Aligned(table.start_s[ok], {k: v[ok] for k, v in table.values.items()}, period,
                   groups=groups)


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
