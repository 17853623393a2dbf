"""``[quality]`` as a gateway capability: the quality-control pipeline stage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.plugins import Capability
from edge.quality.settings import QualitySettings
from edge.seams import Stage

if TYPE_CHECKING:
    from edge.config import GatewayConfig


class QualityCapability(Capability[QualitySettings]):
    key = "quality"
    model = QualitySettings
    order = 20  # after calibration: judge the calibrated values

    def stages(self, settings: QualitySettings, config: GatewayConfig) -> list[Stage]:
        from edge.quality.stage import QualityStage

        return [QualityStage(settings)]


CAPABILITY = QualityCapability()
