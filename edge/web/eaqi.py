"""European Air Quality Index (EEA) bands for the quantities a gateway measures.

The six bands of the EEA's European Air Quality Index (µg/m³). The EEA applies them to hourly
concentrations (NO2) and to 24-hour running means (PM2.5, PM10) of reference stations. A gateway
has low-cost sensors: the band it shows is an indication for the host, computed from the
trailing hour's mean (:mod:`edge.web.air`), never from a single one-second value.
Levels: 1 good, 2 fair, 3 moderate, 4 poor, 5 very poor, 6 extremely poor.
"""

from __future__ import annotations

from bisect import bisect_right

BANDS = ("good", "fair", "moderate", "poor", "very_poor", "extremely_poor")

# Upper bounds of bands 1..5 (band 6 is everything above).
_UPPER: dict[str, tuple[float, ...]] = {
    "pm2_5": (10, 20, 25, 50, 75),
    "pm10": (20, 40, 50, 100, 150),
    "no2": (40, 90, 120, 230, 340),
}
QUANTITIES = tuple(_UPPER)

# A band changes only when the mean is this fraction past the bound it crosses, so a mean
# hovering on a bound (10.0 ± 0.05 µg/m³ PM2.5) does not make the band flip back and forth.
HYSTERESIS = 0.05


def has_band(quantity_code: str) -> bool:
    return quantity_code in _UPPER


def band(quantity_code: str, value: float) -> str | None:
    """The EAQI band name for a value, or None when the quantity has no EAQI band.

    A value exactly on a bound belongs to the lower band (0-10 is "good" for PM2.5).
    """
    bounds = _UPPER.get(quantity_code)
    if bounds is None or value != value:  # NaN has no band
        return None
    index = bisect_right(bounds, value)
    if index > 0 and index <= len(bounds) and value == bounds[index - 1]:
        index -= 1
    return BANDS[index]


def settle(quantity_code: str, value: float, previous: str | None) -> str | None:
    """The band for ``value``, keeping ``previous`` until the value is clearly past its bounds.

    Moving to a worse band needs the value above the previous band's upper bound by
    :data:`HYSTERESIS`; moving to a better band needs it below the lower bound by as much.
    """
    new = band(quantity_code, value)
    if previous is None or new is None or new == previous or previous not in BANDS:
        return new
    bounds = _UPPER[quantity_code]
    level = band_level(previous)
    if band_level(new) > level:
        upper = bounds[level - 1]
        return new if value > upper * (1 + HYSTERESIS) else previous
    lower = bounds[level - 2]
    return new if value < lower * (1 - HYSTERESIS) else previous


def band_level(name: str) -> int:
    """1 (good) … 6 (extremely poor)."""
    return BANDS.index(name) + 1


def worst(bands: list[str]) -> str | None:
    return max(bands, key=band_level) if bands else None


def ranges(quantity_code: str) -> list[tuple[float, float | None]]:
    """(from, to) per band for the legend; ``to`` is None for the open top band."""
    bounds = _UPPER[quantity_code]
    lows = (0, *bounds)
    return [(low, bounds[i] if i < len(bounds) else None) for i, low in enumerate(lows)]
