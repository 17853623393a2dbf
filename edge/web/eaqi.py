"""European Air Quality Index (EEA) bands for the quantities a gateway measures.

Bands of the EAQI as revised by the EEA in 2021 (hourly concentrations, µg/m³). Our sensors
report minute-scale values: the band shown is an indication for the host, not an official
index value. Levels: 1 good, 2 fair, 3 moderate, 4 poor, 5 very poor, 6 extremely poor.
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


def band_level(name: str) -> int:
    """1 (good) … 6 (extremely poor)."""
    return BANDS.index(name) + 1


def worst(bands: list[str]) -> str | None:
    return max(bands, key=band_level) if bands else None
