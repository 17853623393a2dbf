"""Replay a sensor CSV through the gateway's CalibrationStage (``duet-edge calibrate replay``).

The stage is built from the gateway's own ``[calibration]`` settings, as the runtime builds it,
so a technician sees before deployment whether the artefact, the assignment and the co-inputs
fit together and what the calibrated values look like.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from calibration.io import DataError
from calibration.settings import CalibrationSettings
from calibration.stage import STAT_KEYS, CalibrationStage
from edge.model import Datastream, Observation, Provenance
from edge.quantities import QUANTITIES


def _millis(stamp: str) -> int:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def replay_csv(gateway_id: str, settings: CalibrationSettings, path: Path, sensor_column: str,
               time_column: str, sensor_model: str, na: tuple[str, ...]) -> list[str]:
    """Feed every row as observations (one per quantity column); return a printable summary."""
    stage = CalibrationStage(settings)
    streams: dict[tuple[str, str], Datastream] = {}
    prov = Provenance(sensor_model=sensor_model)
    sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    try:
        fh = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    with fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        for needed in (sensor_column, time_column):
            if needed not in header:
                raise DataError(f"{path}: column {needed!r} not found; header has {header}")
        quantities = [c for c in header if c in QUANTITIES]
        if not quantities:
            raise DataError(f"{path}: no column is named by a quantity code (e.g. pm2_5_cf1)")
        for row_no, row in enumerate(reader, start=2):
            try:
                t_ms = _millis(row[time_column])
            except ValueError:
                raise DataError(f"{path}, row {row_no}: timestamp {row[time_column]!r} is not "
                                f"ISO 8601") from None
            batch = []
            for q in quantities:
                cell = row[q].strip()
                if not cell or cell in na:
                    continue
                key = (row[sensor_column], q)
                stream = streams.get(key) or streams.setdefault(
                    key, Datastream(gateway_id, key[0], q))
                batch.append(Observation(stream, float(cell), t_ms, prov))
            for obs in stage.process(batch):
                if obs.raw_result is not None and math.isfinite(obs.result):
                    acc = sums[(obs.stream.sensor_id, obs.stream.quantity_code)]
                    acc[0] += 1
                    acc[1] += obs.raw_result
                    acc[2] += obs.result
    lines = ["stage: " + ", ".join(f"{k} {stage.stats[k]}" for k in STAT_KEYS)]
    for (sensor, qty), (n, raw, cal) in sorted(sums.items()):
        lines.append(f"  {sensor}: {int(n)} calibrated → {qty}, mean raw {raw / n:.2f}, "
                     f"mean calibrated {cal / n:.2f}")
    return lines
