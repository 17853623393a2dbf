"""OPS243 radar as a traffic counter: per-object detections → per-interval traffic observations.

The serial handling (port, start commands, reconnects) is the generic serial source's; only
what becomes an observation differs. Detections are aggregated into Telraam-compatible
intervals (edge.sensors.ops243.traffic); each closed interval becomes one observation per field, with an
interval phenomenon time. Time the radar was not connected lowers ``uptime`` for that
interval: an outage is a gap, never interpolated.
"""

from __future__ import annotations

import time

from edge.codec import Frame
from edge.config import SourceSettings
from edge.model import Datastream, Observation
from edge.seams import SourceContext
from edge.sensors.ops243 import Ops243Options
from edge.sensors.ops243.traffic import TrafficAggregator, TrafficSettings, detection_from_frame
from edge.sources.serial import SerialSource


class RadarTrafficSource(SerialSource):
    def __init__(self, settings: SourceSettings, gateway_id: str) -> None:
        options = Ops243Options.model_validate(settings.options)
        self.traffic = TrafficSettings.model_validate(
            options.model_dump(include=set(TrafficSettings.model_fields))
        )
        super().__init__(settings, gateway_id)
        self.aggregator = TrafficAggregator(self.traffic)
        self._connected_at: float | None = None
        self._traffic_streams: dict[str, Datastream] = {}

    async def run(self, ctx: SourceContext) -> None:
        self._connected_at = time.time()
        try:
            await super().run(ctx)
        finally:
            self._account_uptime(time.time())
            self._connected_at = None

    def _account_uptime(self, now: float) -> None:
        if self._connected_at is not None and now > self._connected_at:
            self.aggregator.counted(self._connected_at, now)
            self._connected_at = now

    def _observations(self, ctx: SourceContext, frames: list[Frame]) -> list[Observation]:
        now = time.time()
        for frame in frames:
            ctx.health.frame_result(True)
            detection = detection_from_frame(frame, now, self.traffic.inbound_side)
            if detection is not None:
                ctx.health.frames_ok += 1
                ctx.health.last_frame_ms = ctx.clock_ms()
                self.aggregator.add(detection)
        self._account_uptime(now)
        out: list[Observation] = []
        for interval in self.aggregator.close_until(now):
            start_ms = int(interval.start * 1000)
            end_ms = start_ms + int(interval.interval_s * 1000)
            for reading in interval.readings():
                stream = self._traffic_streams.get(reading.quantity)
                if stream is None:
                    stream = self._traffic_streams[reading.quantity] = Datastream(
                        self.gateway_id, self.name, reading.quantity
                    )
                out.append(Observation(stream, reading.value, start_ms, self.provenance, end_ms))
        return out



