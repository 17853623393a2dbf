"""Loader for the ASN(x) wireless-sensor-node recordings with labelled real faults.

The data (MIT, Widhalm et al. 2021; ``bench/data/asnx-wsn-faults/README.md``) are three
real week-long recordings of one environmental node (``base_datasets``) and copies of them
with recorded fault signatures injected (``faulty_datasets``, ``fault`` = 1 on affected
rows). The base recordings hold real events that are not faults: windows opened in an office
(room airing) and heavy rain outdoors.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# CSV column → (quantity code, whether the column is a real measurement in that setting)
COLUMNS = {"T_air [°C]": "T_air", "T_soil [°C]": "T_soil", "H_air [%RH]": "H_air",
           "H_soil [%RH]": "H_soil"}
QUANTITY = {"T_air": "temperature", "T_soil": "temperature", "H_air": "humidity",
            "H_soil": "humidity"}
SETTINGS = ("indoor_-_stable", "indoor_-_room_airing", "outdoor_-_heavy_rain")
CHANGED = 0.05  # a fault changed a column where it differs from the base by more than this


@dataclass(frozen=True)
class Recording:
    """One file: times (epoch ms) and the columns measured in its setting."""

    name: str
    setting: str
    times_ms: np.ndarray
    values: dict[str, np.ndarray]
    fault: np.ndarray  # bool per row (all False in a base recording)


def measured(setting: str) -> tuple[str, ...]:
    """Indoors the node had no soil probe: its soil columns are a constant 0, not data."""
    return ("T_air", "H_air") if setting.startswith("indoor") else tuple(COLUMNS.values())


def read(path: Path, setting: str) -> Recording:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path}: no rows")
    keep = measured(setting)
    times = np.array([int(r["timestamp [UNIX]"]) * 1000 for r in rows], np.int64)
    values = {short: np.array([float(r[col]) for r in rows])
              for col, short in COLUMNS.items() if short in keep}
    fault = np.array([r.get("fault", "0") == "1" for r in rows], bool)
    return Recording(path.stem, setting, times, values, fault)


def base(root: Path, setting: str) -> Recording:
    return read(root / "base_datasets" / f"base_-_{setting}.csv", setting)


def faulty(root: Path, setting: str) -> list[Recording]:
    files = sorted((root / "faulty_datasets").glob(f"base_-_{setting}-faulty-*.csv"),
                   key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    return [read(p, setting) for p in files]


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive row ranges of consecutive True values."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def fault_runs(rec: Recording, clean: Recording, column: str) -> list[tuple[int, int]]:
    """The labelled fault runs that changed ``column`` (a fault may hit other columns)."""
    changed = np.abs(rec.values[column] - clean.values[column]) > CHANGED
    return [(a, b) for a, b in runs(rec.fault) if changed[a : b + 1].any()]


def event_rows(rec: Recording) -> np.ndarray:
    """Rows inside the real events of a base recording (documented in docs/quality.md).

    Room airing: from a drop of the air temperature by more than 1 °C within 15 minutes
    until it is back within 0.5 °C of where it started. Heavy rain: from the fifth day on.
    """
    inside = np.zeros(len(rec.times_ms), bool)
    if rec.setting == "outdoor_-_heavy_rain":
        inside[rec.times_ms >= rec.times_ms[0] + 4 * 86_400_000] = True
    elif rec.setting == "indoor_-_room_airing":
        t = rec.values["T_air"]
        i = 0
        while i < len(t) - 15:
            if t[i] - t[i : i + 15].min() > 1.0:
                j = i + int(np.argmin(t[i : i + 15]))  # well into the drop
                while j < len(t) and t[j] < t[i] - 0.5:
                    j += 1
                inside[i:j] = True
                i = j
            i += 1
    return inside
