"""``[calibration]`` as a gateway capability: the calibration pipeline stage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from calibration.settings import CalibrationSettings
from edge.plugins import Capability
from edge.seams import Stage

if TYPE_CHECKING:
    from edge.config import GatewayConfig


class CalibrationCapability(Capability[CalibrationSettings]):
    key = "calibration"
    model = CalibrationSettings
    order = 10  # calibrate before quality control judges the values

    def stages(self, settings: CalibrationSettings, config: GatewayConfig) -> list[Stage]:
        from calibration.stage import CalibrationStage

        return [CalibrationStage(settings)]


CAPABILITY = CalibrationCapability()
