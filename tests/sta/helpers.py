"""Observation builders shared by the SensorThings tests."""

from __future__ import annotations

from edge.model import QC_PASS, QC_SUSPECT, Datastream, Observation, Provenance, Quality

T0_MS = 1_764_064_800_123  # 2025-11-25T10:00:00.123Z


def make_obs(
    gateway_id: str,
    seq: int,
    *,
    sensor_id: str = "sds011-1",
    quantity: str = "pm2_5",
    result: float = 12.5,
    interval_s: int | None = None,
    t_ms: int | None = None,
) -> Observation:
    """A committed observation; ``interval_s`` makes its phenomenon time an interval."""
    start = T0_MS + seq * 60_000 if t_ms is None else t_ms
    quality = Quality()
    quality.set("gross_range", QC_PASS)
    quality.set("spike", QC_SUSPECT if result > 100 else QC_PASS)
    return Observation(
        stream=Datastream(gateway_id, sensor_id, quantity),
        result=result,
        phenomenon_ms=start,
        phenomenon_end_ms=None if interval_s is None else start + interval_s * 1000,
        provenance=Provenance("SDS011", sensor_serial="A1B2", calibration_id="cal-7"),
        raw_result=result * 1.1,
        quality=quality,
        sequence=seq,
    )
