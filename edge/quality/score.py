"""Score any CSV series through the gateway's own quality stage, and read scored results back.

``duet-edge quality score INPUT.csv`` reads a ``timestamp`` column (ISO 8601, or epoch seconds
or milliseconds) and one or more value columns. Each value column is one datastream
(``sensor`` = the column name, quantity = the column name when it is a quantity code, else
``--quantity``); every row is one batch through a fresh :class:`QualityStage`, in file order,
exactly as a gateway's source would hand it over. Per value column one CSV comes out::

    timestamp,value,anomaly_score[,flag,tests]

``anomaly_score`` is ``quality.scores["anomaly"]`` as the gateway uploads it (3 decimals);
``flag`` the aggregate QARTOD flag and ``tests`` the tests that flagged the value (suspect 3,
fail 4, or the informational gap 9; ``name=flag`` separated by spaces). A row without a value for the column keeps its timestamp with the other
fields empty, so output rows line up with input rows (what NAB-style scoring needs).

A *results folder* (for ``quality evaluate --results``) holds one CSV per series with at
least ``anomaly_score`` and ``label`` (1 inside an anomaly window, 0 outside) — the layout of
the Numenta Anomaly Benchmark's results files, and of ``quality score`` output with a
``label`` column added.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import numpy as np

from edge.model import Datastream, Observation, Provenance
from edge.quality.nab import LabelledScores
from edge.quality.settings import QualitySettings
from edge.quality.stage import QualityStage
from edge.quantities import QUANTITIES

GATEWAY = "score"
PROVENANCE = Provenance(sensor_model="csv")
TIME_COLUMN = "timestamp"
_EPOCH_S_BELOW = 100_000_000_000  # a bare number below this is epoch seconds, else ms


class InputError(ValueError):
    """The input cannot be scored; the message names the problem and the fix."""


def parse_timestamp(text: str) -> int:
    """ISO 8601 (UTC unless a zone is given), or epoch seconds / milliseconds → epoch ms."""
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if math.isfinite(number):
        return int(number * 1000) if abs(number) < _EPOCH_S_BELOW else int(number)
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"timestamp {text!r} is neither ISO 8601 nor epoch s/ms") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return int(stamp.timestamp() * 1000)


def _number(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        return math.nan  # not a number: the stage flags it (gross range fails)


@dataclass
class ScoredRow:
    timestamp: str
    value: float | None
    score: float | None
    flag: int | None
    tests: dict[str, int] = field(default_factory=dict)


def value_columns(header: list[str]) -> list[str]:
    if TIME_COLUMN not in header:
        raise InputError(f"no {TIME_COLUMN!r} column (columns: {', '.join(header) or 'none'})")
    columns = [c for c in header if c != TIME_COLUMN and c]
    if not columns:
        raise InputError("no value column besides 'timestamp'")
    return columns


def score_rows(
    fh: TextIO, settings: QualitySettings, quantity: str
) -> tuple[list[str], dict[str, list[ScoredRow]]]:
    """Stream every row of an open CSV through a fresh stage; results per value column."""
    reader = csv.DictReader(fh)
    columns = value_columns(list(reader.fieldnames or []))
    stage = QualityStage(settings)
    streams = {
        c: Datastream(GATEWAY, c, c if c in QUANTITIES else quantity) for c in columns
    }
    out: dict[str, list[ScoredRow]] = {c: [] for c in columns}
    for line, row in enumerate(reader, start=2):
        stamp = row.get(TIME_COLUMN) or ""
        try:
            ms = parse_timestamp(stamp)
        except InputError as exc:
            raise InputError(f"line {line}: {exc}") from None
        batch: list[tuple[str, Observation]] = []
        for c in columns:
            value = _number(row.get(c))
            if value is None:
                out[c].append(ScoredRow(stamp, None, None, None))
            else:
                batch.append((c, Observation(streams[c], value, ms, PROVENANCE)))
        stage.process([o for _, o in batch])
        for c, o in batch:
            q = o.quality
            score = None if q is None else q.scores.get("anomaly")
            tests = {} if q is None else {k: v for k, v in q.tests.items() if v >= 3}
            out[c].append(ScoredRow(stamp, o.result, score, None if q is None else q.aggregate,
                                    tests))
    return columns, out


def write_rows(rows: list[ScoredRow], fh: TextIO, flags: bool) -> None:
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(["timestamp", "value", "anomaly_score", *(["flag", "tests"] if flags else [])])
    for r in rows:
        cells: list[object] = [
            r.timestamp,
            "" if r.value is None else repr(r.value),
            "" if r.score is None else f"{r.score:.3f}",
        ]
        if flags:
            cells += ["" if r.flag is None else r.flag,
                      " ".join(f"{k}={v}" for k, v in sorted(r.tests.items()))]
        writer.writerow(cells)


# ---------------------------------------------------------------------- results folders
def read_results(folder: Path) -> Iterator[LabelledScores]:
    """Every ``*.csv`` under ``folder`` (recursively) as scores + windows from ``label``."""
    files = sorted(folder.rglob("*.csv"))
    if not files:
        raise InputError(f"no .csv files under {folder}")
    for path in files:
        yield read_result(path, folder)


def read_result(path: Path, root: Path) -> LabelledScores:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        for needed in ("anomaly_score", "label"):
            if needed not in header:
                raise InputError(f"{path}: no {needed!r} column (columns: {', '.join(header)})")
        scores: list[float] = []
        labels: list[bool] = []
        for line, row in enumerate(reader, start=2):
            score = _number(row["anomaly_score"])
            scores.append(math.nan if score is None else score)
            label = (row["label"] or "0").strip()
            if label not in ("0", "1"):
                raise InputError(f"{path}:{line}: label {label!r} is not 0 or 1")
            labels.append(label == "1")
    return LabelledScores(str(path.relative_to(root)), np.asarray(scores, np.float64),
                          windows_of(labels))


def windows_of(labels: list[bool]) -> list[tuple[int, int]]:
    """Row ranges of consecutive labelled rows."""
    windows: list[tuple[int, int]] = []
    start = None
    for i, inside in enumerate(labels):
        if inside and start is None:
            start = i
        elif not inside and start is not None:
            windows.append((start, i - 1))
            start = None
    if start is not None:
        windows.append((start, len(labels) - 1))
    return windows
