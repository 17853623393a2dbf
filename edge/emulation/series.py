"""Plausible, reproducible time series for the emulators (not a physical model).

Particulate matter: a diurnal baseline with morning and evening traffic peaks, multiplied by a
slowly varying AR(1) factor plus white noise; PM1 < PM2.5 < PM10 always holds. CO2: outdoor
background plus an occupancy-like daytime bump. Temperature and humidity: anti-correlated
sinusoids. Everything is a pure function of the seed and the simulated hour of day.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


def _peak(hour: float, centre: float, width: float) -> float:
    d = (hour - centre + 12.0) % 24.0 - 12.0
    return math.exp(-0.5 * (d / width) ** 2)


@dataclass
class AirSeries:
    """Generator of correlated air-quality values for a simulated hour of day."""

    seed: int = 0
    base_pm2_5: float = 9.0  # µg/m³, Flemish urban background order of magnitude
    _rng: random.Random = field(init=False, repr=False)
    _ar: float = field(init=False, default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def _slow_factor(self) -> float:
        self._ar = 0.97 * self._ar + self._rng.gauss(0.0, 0.05)
        return math.exp(self._ar)

    def pm(self, hour: float) -> dict[str, float]:
        """PM1/PM2.5/PM10 (µg/m³) and particle counts per 0.1 L (>0.3 … >10 µm)."""
        g = self._rng.gauss
        diurnal = 1.0 + 0.8 * _peak(hour, 8.0, 1.5) + 0.6 * _peak(hour, 18.0, 2.0)
        pm2_5 = max(0.5, self.base_pm2_5 * diurnal * self._slow_factor() * (1 + g(0.0, 0.08)))
        pm1 = pm2_5 * min(0.95, max(0.5, 0.72 + g(0.0, 0.05)))
        pm10 = pm2_5 * max(1.1, 1.55 + g(0.0, 0.15))
        nc0_3 = pm1 * 160.0 * (1 + g(0.0, 0.05))
        return {
            "pm1": pm1,
            "pm2_5": pm2_5,
            "pm10": pm10,
            "nc0_3": nc0_3,
            "nc0_5": nc0_3 * 0.30,
            "nc1": nc0_3 * 0.06,
            "nc2_5": (pm2_5 - pm1) * 1.5,
            "nc5": (pm10 - pm2_5) * 0.3,
            "nc10": (pm10 - pm2_5) * 0.05,
        }

    def co2(self, hour: float) -> float:
        """CO2 in ppm: ~420 background, +150 during the working day, small noise."""
        bump = 150.0 * _peak(hour, 13.0, 3.0)
        return 420.0 + bump + 40.0 * (self._slow_factor() - 1.0) + self._rng.gauss(0.0, 5.0)

    def temperature(self, hour: float) -> float:
        return 12.0 + 5.0 * math.sin((hour - 9.0) / 24.0 * 2 * math.pi) + self._rng.gauss(0, 0.1)

    def humidity(self, hour: float) -> float:
        rh = 75.0 - 15.0 * math.sin((hour - 9.0) / 24.0 * 2 * math.pi) + self._rng.gauss(0, 0.5)
        return min(100.0, max(5.0, rh))
