"""``[quality]`` configuration section: per-quantity thresholds with documented defaults.

Every threshold has a default per quantity (``DEFAULT_THRESHOLDS``, documented in
docs/quality.md); a ``[quality.quantities.<code>]`` table overrides only the keys it names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.quantities import QUANTITIES


class ClimatologyRange(BaseModel):
    """Values outside ``[min, max]`` during ``months`` are suspect (QARTOD climatology test)."""

    model_config = ConfigDict(extra="forbid")

    months: list[int] = Field(
        default_factory=lambda: list(range(1, 13)),
        description="Months (1-12, UTC) this range applies to, e.g. [12, 1, 2] for winter.",
    )
    min: float = Field(description="Lowest plausible value at this site and season.")
    max: float = Field(description="Highest plausible value at this site and season.")

    @field_validator("months")
    @classmethod
    def _months_valid(cls, value: list[int]) -> list[int]:
        bad = [m for m in value if not 1 <= m <= 12]
        if bad or not value:
            raise ValueError(f"months must be 1..12 and non-empty, got {value!r}")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> ClimatologyRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


class QuantityThresholds(BaseModel):
    """Thresholds of the rule-based tests for one quantity (units: the quantity's UCUM unit)."""

    model_config = ConfigDict(extra="forbid")

    fail_min: float | None = Field(None, description="Sensor lower limit: below → fail (4).")
    fail_max: float | None = Field(None, description="Sensor upper limit: above → fail (4).")
    suspect_min: float | None = Field(
        None, description="Operational lower limit: below → suspect (3)."
    )
    suspect_max: float | None = Field(
        None, description="Operational upper limit: above → suspect (3)."
    )
    climatology: list[ClimatologyRange] = Field(
        default_factory=list, description="Per-season plausible ranges for this site."
    )
    spike_window: int = Field(
        5, ge=3, le=64, description="Previous values whose median is the spike reference."
    )
    spike_suspect: float = Field(
        8.0, gt=0, description="|x - median| above this many robust scales → suspect."
    )
    spike_fail: float = Field(
        16.0, gt=0, description="|x - median| above this many robust scales → fail."
    )
    spike_min_abs: float = Field(
        0.0, ge=0, description="Deviations smaller than this (absolute) never count as spikes."
    )
    spike_accept: int = Field(
        3, ge=2, le=16,
        description="Spike-flagged values in a row at one new level after which that level "
        "is accepted as the reference (a lasting step is flagged briefly, not forever).",
    )
    rate_of_change_max: float | None = Field(
        None, gt=0, description="Largest plausible |dx/dt| per second; above → suspect."
    )
    flat_line_tolerance: float = Field(
        0.0, ge=0, description="Values within this of the current one count as 'the same'."
    )
    flat_line_suspect: int = Field(
        5, ge=2, description="This many identical values in a row → suspect (stuck-at)."
    )
    flat_line_fail: int = Field(
        10, ge=2, description="This many identical values in a row → fail (stuck-at)."
    )
    flat_line_min_level: float | None = Field(
        None, description="Flat lines at or below this value are normal (e.g. clean air)."
    )
    flat_line_max_level: float | None = Field(
        None, description="Flat lines at or above this value are normal (e.g. saturated "
        "humidity in fog or rain)."
    )
    gap_factor: float = Field(
        3.0, gt=1, description="An interval longer than this × the usual one is a gap."
    )

    @model_validator(mode="after")
    def _consistent(self) -> QuantityThresholds:
        if self.spike_fail < self.spike_suspect:
            raise ValueError(
                f"spike_fail ({self.spike_fail}) must be >= spike_suspect ({self.spike_suspect})"
            )
        if self.flat_line_fail < self.flat_line_suspect:
            raise ValueError(
                f"flat_line_fail ({self.flat_line_fail}) must be >= "
                f"flat_line_suspect ({self.flat_line_suspect})"
            )
        return self


# Defaults per quantity. PM sensors report whole µg/m³: below 10 µg/m³ one step is 10 % or
# more of the value and a reading legitimately holds for many minutes, so flat lines there
# are not flagged (a frozen PMS5003 still shows as flat particle counts, nc*). Sensor limits
# come from the common low-cost sensors' data sheets
# (PMS5003/SPS30: 0-1000 µg/m³; SHT3x/BME280: -40..85 °C, 0..100 %RH; electrochemical NO2/O3
# and CO cells of the ranges below). See docs/quality.md for the full table and rationale.
DEFAULT_THRESHOLDS: dict[str, dict[str, Any]] = {
    "pm1": {"fail_min": 0, "fail_max": 1000, "suspect_max": 500, "spike_min_abs": 5.0,
            "flat_line_suspect": 30, "flat_line_fail": 120, "flat_line_min_level": 10.0},
    "pm2_5": {"fail_min": 0, "fail_max": 1000, "suspect_max": 500, "spike_min_abs": 5.0,
              "flat_line_suspect": 30, "flat_line_fail": 120, "flat_line_min_level": 10.0},
    "pm4": {"fail_min": 0, "fail_max": 1000, "suspect_max": 500, "spike_min_abs": 5.0,
            "flat_line_suspect": 30, "flat_line_fail": 120, "flat_line_min_level": 10.0},
    "pm10": {"fail_min": 0, "fail_max": 1000, "suspect_max": 600, "spike_min_abs": 5.0,
             "flat_line_suspect": 30, "flat_line_fail": 120, "flat_line_min_level": 10.0},
    "pm1_cf1": {"fail_min": 0, "fail_max": 1000, "spike_min_abs": 5.0,
                "flat_line_suspect": 30, "flat_line_fail": 120, "flat_line_min_level": 10.0},
    "pm2_5_cf1": {"fail_min": 0, "fail_max": 1000, "spike_min_abs": 5.0,
                  "flat_line_suspect": 30, "flat_line_fail": 120, "flat_line_min_level": 10.0},
    "pm10_cf1": {"fail_min": 0, "fail_max": 1000, "spike_min_abs": 5.0,
                 "flat_line_suspect": 30, "flat_line_fail": 120, "flat_line_min_level": 10.0},
    **{code: {"fail_min": 0, "spike_min_abs": 50.0, "flat_line_suspect": 30,
              "flat_line_fail": 120, "flat_line_min_level": 0.0}
       for code in ("nc0_3", "nc0_5", "nc1", "nc2_5", "nc5", "nc10")},
    "no2": {"fail_min": -20, "fail_max": 2000, "suspect_min": 0, "suspect_max": 400,
            "spike_min_abs": 20.0, "flat_line_suspect": 5, "flat_line_fail": 10},
    "o3": {"fail_min": -20, "fail_max": 2000, "suspect_min": 0, "suspect_max": 400,
           "spike_min_abs": 20.0, "flat_line_suspect": 5, "flat_line_fail": 10},
    "co": {"fail_min": -1, "fail_max": 100, "suspect_min": 0, "suspect_max": 20,
           "spike_min_abs": 0.5, "flat_line_suspect": 5, "flat_line_fail": 12,
           "flat_line_min_level": 0.2},
    "co2": {"fail_min": 0, "fail_max": 40000, "suspect_min": 350, "suspect_max": 5000,
            "spike_min_abs": 50.0, "flat_line_suspect": 30, "flat_line_fail": 120},
    "temperature": {"fail_min": -40, "fail_max": 85, "suspect_min": -25, "suspect_max": 45,
                    "spike_min_abs": 2.0, "rate_of_change_max": 0.05,
                    "flat_line_suspect": 60, "flat_line_fail": 240},
    "humidity": {"fail_min": 0, "fail_max": 100, "suspect_min": 5, "suspect_max": 100,
                 "spike_min_abs": 5.0, "rate_of_change_max": 0.2,
                 "flat_line_suspect": 60, "flat_line_fail": 240, "flat_line_max_level": 98.0},
    "pressure": {"fail_min": 30000, "fail_max": 110000, "suspect_min": 95000,
                 "suspect_max": 105000, "spike_min_abs": 200.0,
                 "flat_line_suspect": 120, "flat_line_fail": 600},
    "voc_index": {"fail_min": 1, "fail_max": 500, "flat_line_suspect": 120,
                  "flat_line_fail": 600},
    "nox_index": {"fail_min": 1, "fail_max": 500, "flat_line_suspect": 120,
                  "flat_line_fail": 600, "flat_line_min_level": 1.0},
    "sound_level": {"fail_min": 0, "fail_max": 150, "suspect_min": 20, "suspect_max": 130},
    "illuminance": {"fail_min": 0, "fail_max": 200000, "flat_line_min_level": 1.0},
    "battery_voltage": {"fail_min": 0, "fail_max": 6, "flat_line_suspect": 1000,
                        "flat_line_fail": 10000},
    "v85": {"fail_min": 0, "fail_max": 250, "suspect_max": 150, "flat_line_min_level": 0.0},
    "speed": {"fail_min": 0, "fail_max": 300, "suspect_max": 200, "flat_line_min_level": 0.0},
    "uptime": {"fail_min": 0, "fail_max": 1, "flat_line_suspect": 1000,
               "flat_line_fail": 10000},
}

# Counts per interval (traffic): zero is a normal run at night, and bursts are real traffic.
COUNT_DEFAULTS: dict[str, Any] = {
    "fail_min": 0, "spike_suspect": 30.0, "spike_fail": 60.0, "spike_min_abs": 20.0,
    "flat_line_min_level": 0.0, "flat_line_suspect": 48, "flat_line_fail": 96,
}


def default_thresholds(code: str) -> dict[str, Any]:
    """The documented defaults of one quantity (count quantities share COUNT_DEFAULTS)."""
    if code in DEFAULT_THRESHOLDS:
        return DEFAULT_THRESHOLDS[code]
    known = QUANTITIES.get(code)
    if known is not None and known.unit == "{count}":
        return COUNT_DEFAULTS
    return {}


class ColocatedPair(BaseModel):
    """Two sensors measuring the same quantity side by side (or a dual-channel sensor)."""

    model_config = ConfigDict(extra="forbid")

    sensor_a: str = Field(description="sensor_id of the first sensor.")
    sensor_b: str = Field(description="sensor_id of the second sensor.")
    quantity: str = Field(description="Quantity code both sensors report.")
    abs_tolerance: float = Field(5.0, ge=0, description="Always-allowed |a - b|.")
    rel_tolerance: float = Field(
        0.7, ge=0, description="Allowed |a - b| / mean(a, b) above abs_tolerance (EPA: 70 %)."
    )
    ratio_floor: float = Field(
        1.0, gt=0,
        description="Added to both values before the drift log-ratio: about the sensors' noise "
        "floor, so near-zero readings do not dominate.",
    )
    max_dt_s: float = Field(120.0, gt=0, description="Readings further apart are not compared.")
    drift_threshold: float = Field(
        8.0, gt=0,
        description="CUSUM alarm level on the log-ratio log(a/b), in units of its normal spread.",
    )
    drift_slack: float = Field(
        0.5, ge=0, description="CUSUM allowance per comparison, in units of the normal spread."
    )
    drift_warmup: int = Field(
        168, ge=8, description="Comparisons used to learn the pair's normal log-ratio and spread."
    )

    @field_validator("quantity")
    @classmethod
    def _known_quantity(cls, value: str) -> str:
        if value not in QUANTITIES:
            raise ValueError(f"unknown quantity {value!r}; known: {', '.join(sorted(QUANTITIES))}")
        return value


class MlSettings(BaseModel):
    """TinyML anomaly detection (LiteRT)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Score windows with the anomaly models.")
    model_dir: Path | None = Field(
        None, description="Folder of model artefacts; default: the models shipped with duet-edge."
    )
    reload_interval_s: float = Field(
        600.0, ge=10.0,
        description="How often model_dir is checked for new or changed artefacts (hot swap).",
    )
    retrain: bool = Field(
        False,
        description="Retrain each model on the gateway from its own recent clean data and "
        "write it into model_dir (which must then be set and writable).",
    )
    retrain_interval_s: float = Field(
        7 * 86_400.0, ge=3600.0, description="How often the models are retrained."
    )
    history_days: int = Field(
        28, ge=7, le=365, description="Days of recent data kept per scored datastream."
    )

    @model_validator(mode="after")
    def _retrain_needs_a_folder(self) -> MlSettings:
        if self.retrain and self.model_dir is None:
            raise ValueError("retrain = true needs model_dir: the folder the retrained "
                             "models are written to (e.g. /var/lib/duet-edge/models)")
        return self


class AnomalySettings(BaseModel):
    """The learned online anomaly detector (one per datastream; needs no model or runtime)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Score every observation with the online detector.")
    threshold: float = Field(
        0.5, gt=0.0, le=1.0,
        description="Alarm level of the anomaly score (0.5: about 1 in 100 000 values of a "
        "stream behaving as it has so far); an alarm sets tests.anomaly = 3.",
    )
    warmup: int = Field(
        100, ge=10, le=100_000,
        description="Values a new datastream is learned from before its scores count "
        "(tests.anomaly = 2 until then).",
    )
    checkpoint_interval_s: float = Field(
        1800.0, ge=600.0,
        description="How often the learned state is staged into the outbox (and at a clean "
        "stop); a crash falls back to the last checkpoint.",
    )


class QualitySettings(BaseModel):
    """The ``[quality]`` section."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Run the quality stage at all.")
    quantities: dict[str, QuantityThresholds] = Field(
        default_factory=dict,
        description="Per-quantity overrides, merged key by key over the documented defaults.",
    )
    pm_order_tolerance: float = Field(
        1.0, ge=0, description="Allowed excess in PM1 ≤ PM2.5 ≤ PM10 (µg/m³)."
    )
    pm_cf1_tolerance: float = Field(
        1.0, ge=0, description="Allowed excess of a PMS sensor's atmospheric over CF=1 reading."
    )
    colocated: list[ColocatedPair] = Field(
        default_factory=list, description="Co-located sensor pairs to compare."
    )
    anomaly: AnomalySettings = Field(
        default_factory=lambda: AnomalySettings.model_validate({}),
        description="The learned online anomaly detector.",
    )
    ml: MlSettings = Field(
        default_factory=lambda: MlSettings.model_validate({}), description="Anomaly models."
    )

    @field_validator("quantities", mode="before")
    @classmethod
    def _merge_defaults(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = {}
        for code, override in value.items():
            if code not in QUANTITIES:
                known = ", ".join(sorted(QUANTITIES))
                raise ValueError(f"quality.quantities: unknown quantity {code!r}; known: {known}")
            if isinstance(override, QuantityThresholds):
                merged[code] = override
            elif isinstance(override, dict):
                merged[code] = {**default_thresholds(code), **override}
            else:
                merged[code] = override
        return merged

    def thresholds(self, code: str) -> QuantityThresholds:
        """The effective thresholds for ``code`` (override, else default, else generic)."""
        found = self.quantities.get(code)
        if found is not None:
            return found
        return QuantityThresholds(**default_thresholds(code))
