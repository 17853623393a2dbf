"""Accuracy metrics, including the expanded uncertainty of the EU equivalence guide.

The expanded relative uncertainty follows the Guide to the Demonstration of Equivalence of
Ambient Air Monitoring Methods (EC working group, 2010), section 9.5: orthogonal regression of
the candidate ``y`` on the reference ``x`` gives ``y = b0 + b1·x``; the combined uncertainty at
a concentration ``x`` is ``u_c²(y) = RSS/(n−2) − u²(x_ref) + (b0 + (b1 − 1)·x)²`` and the
expanded relative uncertainty at the limit value LV is ``W = 2·u_c(LV)/LV``. It is compared
with the data-quality objectives of Directive 2008/50/EC for indicative measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Limit value used for the uncertainty, and the indicative-measurement DQO (fraction).
LIMIT_VALUES: dict[str, tuple[float, float, str]] = {
    "no2": (200.0, 0.25, "hourly limit value 200 µg/m³"),
    "co": (10.0, 0.25, "8-hour limit value 10 mg/m³"),
    "pm10": (50.0, 0.50, "daily limit value 50 µg/m³"),
    "pm2_5": (30.0, 0.50, "GDE daily reference level 30 µg/m³"),
    "o3": (120.0, 0.30, "target value 120 µg/m³"),
}


@dataclass(frozen=True)
class OrthogonalFit:
    slope: float
    intercept: float
    rss: float
    n: int


def orthogonal_regression(x: np.ndarray, y: np.ndarray) -> OrthogonalFit:
    """Orthogonal (Deming, λ = 1) regression of ``y`` on ``x``."""
    xm, ym = float(x.mean()), float(y.mean())
    sxx = float(((x - xm) ** 2).sum())
    syy = float(((y - ym) ** 2).sum())
    sxy = float(((x - xm) * (y - ym)).sum())
    if sxy == 0.0:
        slope = 0.0
    else:
        slope = (syy - sxx + math.sqrt((syy - sxx) ** 2 + 4.0 * sxy**2)) / (2.0 * sxy)
    intercept = ym - slope * xm
    rss = float(((y - intercept - slope * x) ** 2).sum())
    return OrthogonalFit(slope, intercept, rss, int(x.size))


def expanded_uncertainty(
    reference: np.ndarray, candidate: np.ndarray, limit_value: float, u_ref: float = 0.0
) -> float:
    """Expanded relative uncertainty W (fraction) at ``limit_value`` (GDE 2010, eq. 22-23)."""
    fit = orthogonal_regression(reference, candidate)
    if fit.n < 3:
        return math.nan
    random_part = max(fit.rss / (fit.n - 2) - u_ref**2, 0.0)
    bias_at_lv = fit.intercept + (fit.slope - 1.0) * limit_value
    return 2.0 * math.sqrt(random_part + bias_at_lv**2) / limit_value


def metrics(reference: np.ndarray, predicted: np.ndarray, quantity: str | None = None,
            u_ref: float = 0.0) -> dict[str, float]:
    """R², RMSE, MAE, mean bias, CRMSE, orthogonal slope/intercept and W at the limit value."""
    err = predicted - reference
    ss_tot = float(((reference - reference.mean()) ** 2).sum())
    out = {
        "n": float(reference.size),
        "r2": 1.0 - float((err**2).sum()) / ss_tot if ss_tot > 0 else math.nan,
        "rmse": float(np.sqrt((err**2).mean())),
        "mae": float(np.abs(err).mean()),
        "bias": float(err.mean()),
        "crmse": float(np.sqrt(((err - err.mean()) ** 2).mean())),
    }
    fit = orthogonal_regression(reference, predicted)
    out["orth_slope"] = fit.slope
    out["orth_intercept"] = fit.intercept
    if quantity in LIMIT_VALUES:
        lv, dqo, _ = LIMIT_VALUES[quantity]
        out["expanded_uncertainty"] = expanded_uncertainty(reference, predicted, lv, u_ref)
        out["limit_value"] = lv
        out["dqo"] = dqo
    return out


UAT_FRACTION = 0.7  # upper assessment threshold = 70 % of the limit value (2008/50/EC, annex II)
MIN_FRACTION_ABOVE_UAT = 0.2  # the GDE (2010, 9.5.3) wants ≥ 20 % of the results above it


@dataclass(frozen=True)
class Coverage:
    """How many samples lie near the limit value, where the expanded uncertainty is quoted."""

    threshold: float  # the upper assessment threshold (70 % of the limit value)
    limit_value: float
    n_above: int
    n: int

    @property
    def fraction(self) -> float:
        return self.n_above / self.n if self.n else 0.0

    @property
    def thin(self) -> bool:
        return self.fraction < MIN_FRACTION_ABOVE_UAT

    def warning(self, unit: str) -> str:
        """'' when coverage is adequate, else why the uncertainty figure is an extrapolation."""
        if not self.thin:
            return ""
        return (
            f"only {100 * self.fraction:.1f} % of the samples ({self.n_above} of {self.n}) have a "
            f"reference value ≥ {self.threshold:g} {unit} (the upper assessment threshold, 70 % of "
            f"the limit value {self.limit_value:g} {unit}); the Guide to the Demonstration of "
            f"Equivalence asks for ≥ 20 %. The expanded uncertainty at the limit value therefore "
            f"mostly measures the extrapolation of the regression line, not the sensor's error "
            f"there"
        )


def limit_coverage(reference: np.ndarray, quantity: str) -> Coverage | None:
    if quantity not in LIMIT_VALUES:
        return None
    lv = LIMIT_VALUES[quantity][0]
    threshold = UAT_FRACTION * lv
    return Coverage(threshold, lv, int((reference >= threshold).sum()), int(reference.size))
