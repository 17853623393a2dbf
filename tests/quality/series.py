"""Realistic synthetic series for the quality tests (documented, seeded)."""

from __future__ import annotations

import numpy as np


def clean_site_pm(n: int, seed: int = 0, base: float = 5.0) -> list[float]:
    """PM2.5 as a PMS5003 reports it once a second at a quiet site.

    A slowly varying true level (``base`` ± 30 % over four hours plus a slow random walk),
    20 % counting noise, the sensor's own smoothing (a 20-second exponential average) and
    whole-µg/m³ output: the same integer legitimately repeats for minutes.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    true = base * (1 + 0.3 * np.sin(2 * np.pi * t / 14_400)) + np.cumsum(rng.normal(0, 0.01, n))
    raw = true * (1 + rng.normal(0, 0.2, n))
    out = []
    smooth = float(raw[0])
    for r in raw.tolist():
        smooth += 0.05 * (r - smooth)
        out.append(float(round(smooth)))
    return out
