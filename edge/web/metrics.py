"""/metrics: the runtime's counters in Prometheus text format (prometheus-client).

A custom collector reads the gateway's state at scrape time, so nothing is updated on the
ingest path. Each server has its own registry (no global state between gateways in a test).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge.quantities import QUANTITIES
from edge.web.view import GatewayView, now_ms

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ANOMALY = "anomaly"  # the quality stage's learned score (quality.scores)


def _counter(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Metric:
    family = CounterMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def _gauge(name: str, doc: str, value: float) -> Metric:
    return GaugeMetricFamily(name, doc, value=value)


class GatewayCollector(Collector):
    def __init__(self, view: GatewayView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        gw = self.view.gateway
        c = gw.outbox.counters
        yield _counter("duet_observations_in", "Observations handed to the pipeline by sources.", gw.counters.observations_in)
        yield _counter("duet_stage_errors", "Pipeline stage failures (values passed on).", gw.counters.stage_errors)
        yield _counter("duet_outbox_received", "Observations committed to the outbox.", c.received)
        yield _counter("duet_outbox_confirmed", "Observations confirmed by every uplink.", c.confirmed)
        yield _counter("duet_outbox_evicted", "Observations evicted (buffer full or TTL).", c.evicted)
        yield _counter("duet_outbox_refused", "Observations refused (buffer full, eviction=newest).", c.refused)
        yield _counter("duet_outbox_dead_lettered", "Observations rejected permanently by the twin.", c.dead_lettered)
        yield _counter("duet_outbox_committed_groups", "Group commits.", c.committed_groups)
        facts = self.view.buffer.facts
        yield _gauge("duet_buffer_depth", "Observations waiting in the outbox.", facts.depth + gw.outbox.uncommitted)
        yield _gauge("duet_buffer_bytes", "Outbox size on disk.", facts.size_bytes)
        yield _gauge("duet_buffer_max_bytes", "Outbox size limit.", gw.outbox.settings.max_bytes)
        age = 0.0 if facts.oldest_ms is None else max(0.0, (now_ms() - facts.oldest_ms) / 1000)
        yield _gauge("duet_buffer_oldest_unsent_age_seconds", "Age of the oldest unsent observation.", age)
        yield _gauge("duet_ingest_rate_per_second", "Observations per second (5 min window).", self.view.live.rate.per_second())
        yield _gauge("duet_start_time_seconds", "When the gateway started (Unix time).", self.view.started_ms / 1000)
        yield from self._sources()
        yield from self._uplinks()
        yield from self._latest()

    def _sources(self) -> Iterator[Metric]:
        frames_ok = CounterMetricFamily("duet_source_frames_ok", "Good frames per source.", labels=["source"])
        frames_bad = CounterMetricFamily("duet_source_frames_bad", "Bad frames per source and reason.", labels=["source", "reason"])
        obs = CounterMetricFamily("duet_source_observations", "Observations per source.", labels=["source"])
        reconnects = CounterMetricFamily("duet_source_reconnects", "Restarts of a source.", labels=["source"])
        up = GaugeMetricFamily("duet_source_up", "1 when the source is connected.", labels=["source"])
        last = GaugeMetricFamily("duet_source_last_frame_timestamp_seconds", "Last good frame.", labels=["source"])
        for name, h in self.view.gateway.source_health.items():
            frames_ok.add_metric([name], h.frames_ok)
            for reason, count in sorted(h.frames_bad.items()):
                frames_bad.add_metric([name, reason], count)
            obs.add_metric([name], h.observations)
            reconnects.add_metric([name], h.reconnects)
            up.add_metric([name], 1.0 if h.state == "connected" else 0.0)
            if h.last_frame_ms is not None:
                last.add_metric([name], h.last_frame_ms / 1000)
        yield from (frames_ok, frames_bad, obs, reconnects, up, last)

    def _uplinks(self) -> Iterator[Metric]:
        fams: dict[str, Any] = {
            "confirmed": CounterMetricFamily("duet_uplink_confirmed", "Observations confirmed.", labels=["uplink"]),
            "rejected": CounterMetricFamily("duet_uplink_rejected", "Observations rejected.", labels=["uplink"]),
            "sent_batches": CounterMetricFamily("duet_uplink_sent_batches", "Batches sent.", labels=["uplink"]),
            "bytes_sent": CounterMetricFamily("duet_uplink_sent_bytes", "Bytes sent.", labels=["uplink"]),
            "reconnects": CounterMetricFamily("duet_uplink_reconnects", "Reconnects.", labels=["uplink"]),
        }
        up = GaugeMetricFamily("duet_uplink_up", "1 when the uplink is connected.", labels=["uplink"])
        last = GaugeMetricFamily("duet_uplink_last_confirmed_timestamp_seconds", "Last confirmed upload.", labels=["uplink"])
        for name, h in self.view.gateway.uplink_health.items():
            for attr, fam in fams.items():
                fam.add_metric([name], getattr(h, attr))
            up.add_metric([name], 1.0 if h.state == "connected" else 0.0)
            if h.last_confirmed_ms is not None:
                last.add_metric([name], h.last_confirmed_ms / 1000)
        yield from (*fams.values(), up, last)

    def _latest(self) -> Iterator[Metric]:
        value = GaugeMetricFamily("duet_observation_value", "Latest value per datastream (UCUM unit label).", labels=["sensor", "quantity", "unit"])
        score = GaugeMetricFamily(
            "duet_anomaly_score",
            "Latest learned anomaly score per datastream (0 normal .. 1 anomalous).",
            labels=["sensor", "quantity"],
        )
        for st in self.view.live.streams.values():
            q = QUANTITIES.get(st.quantity)
            value.add_metric([st.sensor, st.quantity, q.unit if q else ""], st.value)
            if st.quality is not None and ANOMALY in st.quality.scores:
                score.add_metric([st.sensor, st.quantity], st.quality.scores[ANOMALY])
        yield value
        yield score


def make_registry(view: GatewayView) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(view))
    return registry


async def render(view: GatewayView, registry: CollectorRegistry) -> bytes:
    await view.buffer.get()
    return generate_latest(registry)
