"""A synthetic multi-sensor co-location campaign to practise the workflow on (clearly not real).

``duet-edge calibrate demo-campaign --out-dir DIR`` writes what a real campaign hands a
technician: ``sensors.csv`` (several PMS5003-type units in one file, a ``sensor`` id column,
10-minute values in UTC labelled by the start of the interval, CF=1 PM2.5, the unit's own T and
RH, a few ``-999`` dropouts) and ``reference.csv`` (hourly PM2.5 of a station, Brussels local
time, hour-ending labels, ``;`` separator and decimal comma, as VMM exports look).

The truth behind it: each unit reads ``gain · PM_dry · (1 + κ·a_w/(1 − a_w)) + offset`` with
κ = 0.3 (Petters & Kreidenweis form, RH clamped at 95 %), unit gains 1.35–1.75 and noise, so the
numbers in docs/calibration.md can be reproduced exactly (fixed seed). Real data are messier;
the tool's checks (lag, sentinels, coverage) are what carry over.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

START = datetime(2026, 1, 5, tzinfo=UTC)
KAPPA = 0.3
UNITS = ("pa-01", "pa-02", "pa-03", "pa-04", "pa-05", "pa-06")
GAINS = (1.35, 1.45, 1.5, 1.55, 1.6, 1.75)


def write_campaign(out_dir: Path, days: int = 120, seed: int = 16) -> tuple[Path, Path]:
    """Write ``sensors.csv`` and ``reference.csv``; returns their paths."""
    rng = np.random.default_rng(seed)
    hours = days * 24
    h = np.arange(hours)
    season = np.cos(2 * np.pi * h / (24 * 365))  # winter start: wetter and more polluted
    synoptic = np.convolve(rng.normal(0, 1, hours + 96), np.ones(96) / 96, mode="valid")[:hours]
    dry = np.exp(2.2 + 0.35 * season + 1.4 * synoptic + 0.25 * np.sin(2 * np.pi * h / 24 + 1)
                 + rng.normal(0, 0.15, hours))
    rh = np.clip(72 + 10 * season + 17 * np.cos(2 * np.pi * h / 24) + 20 * synoptic
                 + rng.normal(0, 4, hours), 25, 100)
    temp = 6 - 5 * season + 4 * np.sin(2 * np.pi * (h - 9) / 24) + rng.normal(0, 1, hours)
    out_dir.mkdir(parents=True, exist_ok=True)
    sensors = out_dir / "sensors.csv"
    with sensors.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "sensor", "pm2_5_cf1", "temperature", "humidity"])
        for unit, gain in zip(UNITS, GAINS, strict=True):
            offset = rng.normal(0.8, 0.4)
            for i in range(hours):
                a_w = min(rh[i], 95.0) / 100
                wet = gain * dry[i] * (1 + KAPPA * a_w / (1 - a_w)) + offset
                for m in range(0, 60, 10):
                    t = START + timedelta(hours=int(i), minutes=m)
                    value = max(wet * rng.normal(1, 0.08) + rng.normal(0, 0.4), 0.0)
                    if rng.random() < 0.002:  # the odd dropout, written as the sensor's -999
                        value = -999.0
                    w.writerow([t.strftime("%Y-%m-%dT%H:%M:%SZ"), unit, f"{value:.2f}",
                                f"{temp[i] + 2.5 + rng.normal(0, 0.3):.2f}",
                                f"{min(rh[i] * 0.93 + rng.normal(0, 1.5), 100):.1f}"])
    reference = out_dir / "reference.csv"
    brussels = ZoneInfo("Europe/Brussels")
    with reference.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter=";")
        w.writerow(["datum", "uur", "PM2.5 (µg/m³)"])
        for i in range(hours):
            end = (START + timedelta(hours=int(i) + 1)).astimezone(brussels)
            value = f"{dry[i] + rng.normal(0, 0.6):.1f}".replace(".", ",")
            w.writerow([end.strftime("%d/%m/%Y"), end.strftime("%H:%M"), value])
    return sensors, reference
