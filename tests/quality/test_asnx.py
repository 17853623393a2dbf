"""Real faults vs real events on the ASNX node recordings (bench/data, MIT), through the stage:
faults are flagged, a real event (a window opened, heavy rain) raises one to three alarms."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.model import QC_SUSPECT, Datastream, Observation, Provenance
from edge.quality import asnx
from edge.quality.settings import QualitySettings
from edge.quality.stage import QualityStage

ROOT = Path(__file__).parents[2] / "bench" / "data" / "asnx-wsn-faults"
PROV = Provenance(sensor_model="asnx")


def through_stage(rec: asnx.Recording) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per column: (detector alarm, aggregate flag ≥ 3), all columns of a row in one batch."""
    stage = QualityStage(QualitySettings.model_validate({"ml": {"enabled": False}}))
    streams = {c: Datastream("asnx", c, asnx.QUANTITY[c]) for c in rec.values}
    n = len(rec.times_ms)
    out = {c: (np.zeros(n, bool), np.zeros(n, bool)) for c in rec.values}
    for i, t in enumerate(rec.times_ms.tolist()):
        batch = [Observation(streams[c], float(v[i]), t, PROV) for c, v in rec.values.items()]
        stage.process(batch)
        for o in batch:
            assert o.quality is not None
            alarm, flagged = out[o.stream.sensor_id]
            alarm[i] = o.quality.tests.get("anomaly") == QC_SUSPECT
            flagged[i] = o.quality.aggregate >= QC_SUSPECT
    return out


def test_recorded_faults_are_flagged() -> None:
    clean = asnx.base(ROOT, "indoor_-_stable")
    found = alarmed = total = 0
    for rec in asnx.faulty(ROOT, "indoor_-_stable")[:4]:
        flags = through_stage(rec)
        for column, (alarm, flagged) in flags.items():
            for a, b in asnx.fault_runs(rec, clean, column):
                if a < 120:  # the detector's warm-up
                    continue
                total += 1
                found += bool(flagged[a - 1 : b + 2].any())
                alarmed += bool(alarm[a - 1 : b + 2].any())
    assert total >= 40
    assert found >= 0.9 * total, (found, total)  # the gateway's decision: rules + detector
    assert alarmed >= total / 3, (alarmed, total)  # the detector alone (one alarm per episode)


def test_real_events_raise_few_alarms() -> None:
    rec = asnx.base(ROOT, "indoor_-_room_airing")
    events = asnx.runs(asnx.event_rows(rec))
    assert len(events) == 4  # the four times a window was opened
    total = 0
    for column, (alarm, flagged) in through_stage(rec).items():
        for a, b in events:  # 1.5 to 2.5 hours each
            assert alarm[a : b + 1].sum() <= 3, (column, a, b)
            total += int(alarm[a : b + 1].sum())
        inside = asnx.event_rows(rec)
        assert flagged[inside].mean() < 0.03, column
        assert flagged.mean() < 0.01, column  # the whole week, events included
    assert total <= 12  # 4 events × 2 columns


def test_heavy_rain_is_accepted_after_its_onset() -> None:
    rec = asnx.base(ROOT, "outdoor_-_heavy_rain")
    rain = asnx.event_rows(rec)
    flags = through_stage(rec)
    alarm, _ = flags["H_soil"]
    onset = int(np.flatnonzero(np.diff(rec.values["H_soil"]) > 15)[0]) + 1  # +20 %RH at once
    assert rain[onset]
    assert alarm[onset]  # the first jump is flagged (it could be a fault)…
    after = alarm[onset + 1 : onset + 60]
    assert after.sum() <= 2  # …the new level is accepted
