"""Loader for the UCI Air Quality CSV (the real base signal for training and evaluation).

The file is hourly; times are local (Italy) without a zone, taken here as UTC+1 fixed so the
series is monotonic (the hour lost/repeated at DST changes does not matter for QC).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

import numpy as np

MISSING = -200.0
_TZ = timezone(timedelta(hours=1))

# CSV column → quantity code in edge.quantities (reference analysers and meteo only).
COLUMNS: dict[str, str] = {
    "CO(GT)": "co",
    "NO2(GT)": "no2",
    "T": "temperature",
    "RH": "humidity",
}


@dataclass(frozen=True)
class UciSeries:
    """Time-ordered hourly series; ``values[code]`` has NaN where the file says -200."""

    times_ms: np.ndarray  # int64
    values: dict[str, np.ndarray]  # float64


def default_path() -> Path:
    """The one copy of the data set in the repository (shipped with the calibration package,
    see calibration/data/README.md for attribution and licence)."""
    return Path(str(resources.files("calibration") / "data" / "AirQualityUCI.csv"))


def _number(text: str) -> float:
    text = text.strip().replace(",", ".")
    if not text:
        return float("nan")
    value = float(text)
    return float("nan") if value == MISSING else value


def load(path: Path | None = None) -> UciSeries:
    """Parse the file, skipping the empty trailing rows."""
    path = path or default_path()
    times: list[int] = []
    cols: dict[str, list[float]] = {code: [] for code in COLUMNS.values()}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter=";")
        for row in reader:
            date, clock = (row.get("Date") or "").strip(), (row.get("Time") or "").strip()
            if not date or not clock:
                continue
            stamp = datetime.strptime(f"{date} {clock}", "%d/%m/%Y %H.%M.%S").replace(tzinfo=_TZ)
            times.append(int(stamp.timestamp() * 1000))
            for column, code in COLUMNS.items():
                cols[code].append(_number(row.get(column) or ""))
    order = np.argsort(np.asarray(times, dtype=np.int64), kind="stable")
    return UciSeries(
        times_ms=np.asarray(times, dtype=np.int64)[order],
        values={code: np.asarray(v, dtype=np.float64)[order] for code, v in cols.items()},
    )
