"""The ``[calibration]`` section of the gateway TOML (included by ``edge/config.py``).

Example::

    [calibration]
    artefact_dir = "/etc/duet-edge/calibrations"
    rh_clamp = [0.0, 95.0]
    max_co_input_age_s = 600

    [[calibration.assign]]
    artefact = "pm25-sds011-gent-2026"      # artefact id (file in artefact_dir)
    sensor_id = "sds011-1"                   # optional filters: sensor_id / sensor_model / sensor_serial
    quantity = "pm2_5"
    co_inputs = { rh = "bme280-1/humidity" } # artefact input name → datastream '<sensor_id>/<quantity>'
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.quantities import QUANTITIES


class CalibrationAssignment(BaseModel):
    """Which artefact applies to which datastream, and where its co-inputs come from."""

    model_config = ConfigDict(extra="forbid")

    artefact: str = Field(description="Artefact id, as in the artefact file's 'id' field.")
    quantity: str = Field(description="Quantity code of the datastream to calibrate, e.g. 'pm2_5'.")
    sensor_id: str | None = Field(None, description="Only this sensor id (source/sensor name).")
    sensor_model: str | None = Field(None, description="Only sensors of this model (provenance).")
    sensor_serial: str | None = Field(None, description="Only the sensor with this serial.")
    co_inputs: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Artefact input name → datastream key '<sensor_id>/<quantity>' supplying it. "
            "Inputs not listed are taken from the same sensor id with the input's quantity."
        ),
    )

    @field_validator("quantity")
    @classmethod
    def _known_quantity(cls, value: str) -> str:
        if value not in QUANTITIES:
            raise ValueError(
                f"quantity {value!r} is unknown; allowed: {', '.join(sorted(QUANTITIES))}"
            )
        return value

    @field_validator("co_inputs")
    @classmethod
    def _keys_look_right(cls, value: dict[str, str]) -> dict[str, str]:
        for name, key in value.items():
            sensor, sep, qty = key.rpartition("/")
            if not sep or not sensor or qty not in QUANTITIES:
                raise ValueError(
                    f"co_inputs.{name} = {key!r} must be '<sensor_id>/<quantity>' with a known "
                    f"quantity code (e.g. 'bme280-1/humidity')"
                )
        return value


class CalibrationSettings(BaseModel):
    """Calibrations the gateway applies to observations before quality control."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Apply calibrations (false: pass observations through).")
    artefact_dir: Path = Field(
        description="Directory holding the calibration artefacts (*.json, content-hashed)."
    )
    assign: list[CalibrationAssignment] = Field(
        default_factory=list, description="Per-datastream assignments; the first match wins."
    )
    rh_clamp: tuple[float, float] = Field(
        (0.0, 95.0),
        description="Relative humidity (%) is clamped to [low, high] before any model uses it.",
    )
    max_co_input_age_s: float = Field(
        600.0,
        gt=0,
        description="A co-input reading older (or newer) than this many seconds counts as missing.",
    )

    @field_validator("rh_clamp")
    @classmethod
    def _clamp_order(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo < hi <= 100.0):
            raise ValueError(f"rh_clamp {list(value)!r} must be [low, high] with 0 <= low < high <= 100")
        return value

    @model_validator(mode="after")
    def _dir_exists(self) -> CalibrationSettings:
        if self.enabled and not self.artefact_dir.is_dir():
            raise ValueError(f"artefact_dir {str(self.artefact_dir)!r} is not a directory")
        return self
