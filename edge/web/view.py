"""What the pages, the JSON API, /metrics and /healthz show, computed from the gateway's state.

Nothing here touches the outbox's own SQLite connection: buffer figures come from a separate
read-only connection in a worker thread (a WAL reader never blocks the writer), refreshed at
most once per ``outbox_cache_s``; everything else is in-memory state the runtime keeps.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

from edge import plugins
from edge.model import QC_FAIL, QC_MISSING, QC_NOT_EVALUATED, QC_PASS, QC_SUSPECT
from edge.quantities import QUANTITIES
from edge.web import air, eaqi, home, system
from edge.web.settings import WebSettings
from edge.web.state import LiveState, StreamState

FLAG_NAMES = {
    QC_PASS: "pass",
    QC_NOT_EVALUATED: "not_evaluated",
    QC_SUSPECT: "suspect",
    QC_FAIL: "fail",
    QC_MISSING: "missing",
}
DEFAULT_BYTES_PER_OBS = 64.0  # before the buffer holds enough rows to measure it
UPLINK_STALE_S = 300.0  # connected, old data waiting and nothing confirmed this long: "down"
BAD_SOURCE_STATES = ("disconnected", "unhealthy")
UNKNOWN_SENSOR_SILENCE_S = 60.0  # a sensor id of no configured source (BLE device, node) is
# down after max(this, the longest silence limit of any source)


@dataclass(slots=True)
class BufferFacts:
    depth: int = 0
    oldest_ms: int | None = None
    size_bytes: int = 0
    read_ms: int = 0


class BufferReader:
    """Buffer depth, oldest unsent observation and size on disk, cached for ``cache_s``.

    Depth and age come from the outbox's in-memory bookkeeping; the size from a separate
    read-only SQLite connection in a worker thread (schema-independent PRAGMAs; a WAL reader
    never blocks the writer). Nothing here runs SQL on the outbox's own connection.
    """

    def __init__(self, outbox: Any, cache_s: float = 1.0) -> None:
        self.outbox = outbox
        self.path = str(outbox.path)
        self.cache_s = cache_s
        self.facts = BufferFacts()
        self._at = -1e9
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._thread_lock = threading.Lock()

    async def get(self) -> BufferFacts:
        async with self._lock:
            if time.monotonic() - self._at >= self.cache_s:
                self._at = time.monotonic()
                size = self.facts.size_bytes
                try:
                    size = await asyncio.to_thread(self._size)
                except sqlite3.Error:
                    self.close()  # the outbox may have been replaced: reopen next time
                self.facts = BufferFacts(
                    depth=int(self.outbox.depth()) - int(self.outbox.uncommitted),
                    oldest_ms=self.outbox.oldest_unsent_ms(),
                    size_bytes=size,
                    read_ms=time.time_ns() // 1_000_000,
                )
        return self.facts

    def _size(self) -> int:
        with self._thread_lock:
            if self._db is None:
                self._db = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, timeout=0.5
                )
            db = self._db
            page_size = db.execute("PRAGMA page_size").fetchone()[0]
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            free = db.execute("PRAGMA freelist_count").fetchone()[0]
        try:
            wal = os.path.getsize(self.path + "-wal")
        except OSError:
            wal = 0
        return int((pages - free) * page_size + wal)

    def close(self) -> None:
        with self._thread_lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class GatewayView:
    """Read-only view over a running :class:`edge.runtime.Gateway`."""

    def __init__(self, gateway: Any, settings: WebSettings, live: LiveState) -> None:
        self.gateway = gateway
        self.settings = settings
        self.live = live
        self.buffer = BufferReader(gateway.outbox)
        self.intervals = {s.name: float(s.interval_s) for s in gateway.config.sources}
        self.sources = {s.name: s for s in gateway.config.sources}
        self.judge = air.AirJudge()
        self._certs: tuple[float, list[dict[str, Any]]] | None = None
        self._artefact_list: tuple[float, list[dict[str, str]]] | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def started_ms(self) -> int:
        return int(self.gateway.counters.started_ms)

    def _source_last_ms(self, name: str) -> int | None:
        health = self.gateway.source_health.get(name)
        candidates = [self.live.last_data_ms(name)]
        if health is not None:
            candidates.append(health.last_frame_ms)
        present = [c for c in candidates if c is not None]
        return max(present) if present else None

    def _silence_limit_ms(self, name: str | None) -> float:
        """How long a source may stay silent: N intervals, plus its sleep when duty-cycled."""
        if name is None or name not in self.sources:
            known = [self._silence_limit_ms(n) for n in self.sources]
            return max([UNKNOWN_SENSOR_SILENCE_S * 1000, *known])
        source = self.sources[name]
        sleep_s = source.duty_cycle.sleep_s if source.duty_cycle is not None else 0.0
        return (self.settings.healthz_missed_intervals * float(source.interval_s) + sleep_s) * 1000

    def _in_grace(self, at_ms: int) -> bool:
        return at_ms - self.started_ms < self.settings.healthz_grace_s * 1000

    def silent_sources(self, at_ms: int) -> list[dict[str, Any]]:
        """Sources without data for more than N intervals (after the start-up grace)."""
        if self._in_grace(at_ms):
            return []
        out = []
        for name in self.gateway.source_health:
            limit_ms = self._silence_limit_ms(name)
            last = self._source_last_ms(name)
            since = last if last is not None else self.started_ms
            if at_ms - since > limit_ms:
                out.append({"source": name, "silent_s": round((at_ms - since) / 1000, 1)})
        return out

    # ------------------------------------------------------------------ sensors, for the host
    def source_of(self, sensor: str) -> str | None:
        """The configured source a sensor id belongs to: its own name, or ``<source>.<node>``."""
        if sensor in self.sources:
            return sensor
        owners = [name for name in self.sources if sensor.startswith(name + ".")]
        return max(owners, key=len) if owners else None

    def sensor_last_ms(self, sensor: str) -> int | None:
        if sensor in self.sources:
            return self._source_last_ms(sensor)
        return self.live.last_data_ms(sensor)

    def sensor_down(self, sensor: str, at_ms: int) -> bool:
        """Its source is disconnected or unhealthy, or no value came for too long."""
        source = self.source_of(sensor)
        health = self.gateway.source_health.get(source) if source else None
        if health is not None and health.state in BAD_SOURCE_STATES:
            return True
        if self._in_grace(at_ms):
            return False
        last = self.sensor_last_ms(sensor)
        since = last if last is not None else self.started_ms
        return at_ms - since > self._silence_limit_ms(source)

    def expected_buckets(self, sensor: str) -> float:
        """How many chart buckets of an hour this sensor fills when it works."""
        source = self.sources.get(self.source_of(sensor) or "")
        if source is None:
            return air.expected_buckets(self.settings.history_bucket_s, 1.0, None)
        duty = source.duty_cycle
        return air.expected_buckets(
            self.settings.history_bucket_s,
            float(source.interval_s),
            None if duty is None else (float(duty.measure_s), float(duty.sleep_s)),
        )

    def pollutant_sources(self) -> tuple[str, ...]:
        """Configured sources whose sensor type measures PM2.5, PM10 or NO2."""
        out = []
        for name, source in self.sources.items():
            sensor = plugins.sensors().get(source.type)
            if sensor is not None and any(
                eaqi.has_band(q) for q in sensor.descriptor.quantities
            ):
                out.append(name)
        return tuple(out)

    async def home_model(self) -> home.HomeModel:
        at = now_ms()
        buffer = await self.buffer.get()
        return home.build(self, at, self._uplink_down_since(buffer, at))

    # ------------------------------------------------------------------ uplink
    def _uplink_down_since(self, buffer: BufferFacts, at_ms: int) -> int | None:
        """When uploading stopped, or None while it works (or no uplink is configured)."""
        uplinks = list(self.gateway.uplink_health.values())
        if not uplinks:
            return None
        confirmed = [u.last_confirmed_ms for u in uplinks if u.last_confirmed_ms is not None]
        last = max(confirmed) if confirmed else None
        connected = any(u.state == "connected" for u in uplinks)
        stale_ms = UPLINK_STALE_S * 1000
        waiting = buffer.oldest_ms is not None and at_ms - buffer.oldest_ms > stale_ms
        stale = waiting and (last is None or at_ms - last > stale_ms)  # old data, no progress
        if connected and not stale:
            return None
        return last if last is not None else self.started_ms

    def buffer_capacity(self, buffer: BufferFacts) -> dict[str, Any]:
        """How long the buffer can hold the current ingest rate (whole and what is left)."""
        max_bytes = int(self.gateway.outbox.settings.max_bytes)
        rate = self.live.rate.per_second()
        per_obs = buffer.size_bytes / buffer.depth if buffer.depth >= 1000 else DEFAULT_BYTES_PER_OBS
        fill = rate * per_obs
        return {
            "max_bytes": max_bytes,
            "size_bytes": buffer.size_bytes,
            "ingest_per_s": round(rate, 3),
            "bytes_per_observation": round(per_obs, 1),
            "holds_s": round(max_bytes / fill, 1) if fill > 0 else None,
            "full_in_s": round(max(0, max_bytes - buffer.size_bytes) / fill, 1) if fill > 0 else None,
        }

    # ------------------------------------------------------------------ documents
    async def health(self) -> tuple[bool, dict[str, Any]]:
        """The /healthz verdict and its reasons."""
        at = now_ms()
        buffer = await self.buffer.get()
        problems: list[str] = []
        silent = self.silent_sources(at)
        if silent and len(silent) == len(self.gateway.source_health):
            problems.append("no source produced data")
        capacity = self.buffer_capacity(buffer)
        down_since = self._uplink_down_since(buffer, at)
        down_s = None if down_since is None else (at - down_since) / 1000
        holds = capacity["holds_s"]
        if down_s is not None and holds is not None and down_s > holds:
            problems.append("uplink down longer than the buffer can hold")
        return not problems, {
            "ok": not problems,
            "problems": problems,
            "silent_sources": silent,
            "uplink_down_s": None if down_s is None else round(down_s, 1),
            "buffer": capacity,
        }

    async def status(self) -> dict[str, Any]:
        at = now_ms()
        buffer = await self.buffer.get()
        gw = self.gateway
        c = gw.outbox.counters
        down_since = self._uplink_down_since(buffer, at)
        silent = {s["source"] for s in self.silent_sources(at)}
        sources = []
        for name, health in gw.source_health.items():
            info = health.as_dict()
            info["interval_s"] = self.intervals.get(name)
            info["silent"] = name in silent
            info["problem"] = name in silent or health.state in BAD_SOURCE_STATES
            info["last_data_ms"] = self._source_last_ms(name)
            source = self.sources.get(name)
            info["label"] = source.label if source is not None and source.label else None
            sources.append(info)
        return {
            "gateway": gw.gateway_id,
            "name": gw.config.gateway.name,
            "now_ms": at,
            "started_ms": self.started_ms,
            "overall": self._overall(sources, down_since, at),
            "counters": {
                "observations_in": gw.counters.observations_in,
                "stage_errors": gw.counters.stage_errors,
                "received": c.received,
                "confirmed": c.confirmed,
                "evicted": c.evicted,
                "refused": c.refused,
                "dead_lettered": c.dead_lettered,
                "committed_groups": c.committed_groups,
                "recovered_corrupt": c.recovered_corrupt,
            },
            "buffer": {
                "depth": buffer.depth + gw.outbox.uncommitted,
                "uncommitted": gw.outbox.uncommitted,
                "oldest_unsent_ms": buffer.oldest_ms,
                "oldest_unsent_age_s": None
                if buffer.oldest_ms is None
                else round((at - buffer.oldest_ms) / 1000, 1),
                **self.buffer_capacity(buffer),
            },
            "sources": sources,
            "uplinks": [h.as_dict() for h in gw.uplink_health.values()],
            "clock": {"sync": system.clock_sync(), "now_ms": at},
            "certificates": self.certificates(),
            "versions": self.versions(),
        }

    def _overall(self, sources: list[dict[str, Any]], down_since: int | None, at: int) -> dict[str, Any]:
        """One line for the host: ok / starting / sensor_problem / not_uploading (codes)."""
        problems = [s["name"] for s in sources if s["problem"]]
        for st in self.live.streams.values():
            if st.quality is not None and st.quality.aggregate == QC_FAIL and st.sensor not in problems:
                problems.append(st.sensor)
        codes: list[str] = []
        if not self.live.streams and not problems:
            codes.append("starting")
        if problems:
            codes.append("sensor_problem")
        if down_since is not None:
            codes.append("not_uploading")
        if not codes:
            codes.append("ok" if self.gateway.uplink_health else "no_uplink")
        return {
            "codes": codes,
            "level": "ok" if codes in (["ok"], ["no_uplink"]) else "warn",
            "sensors": problems,
            "not_uploading_since_ms": down_since,
        }

    def certificates(self) -> list[dict[str, Any]]:
        if self._certs is None or time.monotonic() - self._certs[0] > 3600:
            self._certs = (time.monotonic(), system.certificates(self.gateway.config))
        return self._certs[1]

    def _artefacts(self) -> list[dict[str, str]]:
        if self._artefact_list is None or time.monotonic() - self._artefact_list[0] > 60:
            self._artefact_list = (time.monotonic(), system.model_artefacts(self.gateway.config))
        return self._artefact_list[1]

    def versions(self) -> dict[str, Any]:
        nodes: dict[str, dict[str, str]] = {}
        for st in self.live.streams.values():
            nodes.setdefault(st.sensor, st.provenance.as_dict())
        for name, health in self.gateway.source_health.items():
            if health.device:
                nodes.setdefault(name, {}).update({f"device.{k}": str(v) for k, v in health.device.items()})
        return {
            "runtime": system.runtime_versions(),
            "sensors": nodes,
            "artefacts": self._artefacts(),
        }

    def latest(self) -> dict[str, Any]:
        at = now_ms()
        sensors: dict[str, list[dict[str, Any]]] = {}
        for st in sorted(self.live.streams.values(), key=lambda s: (s.sensor, s.quantity)):
            sensors.setdefault(st.sensor, []).append(self._stream_doc(st, at))
        return {
            "gateway": self.gateway.gateway_id,
            "now_ms": at,
            "sensors": [
                {"name": name, "label": self._label(name), "values": values}
                for name, values in sensors.items()
            ],
        }

    def _label(self, sensor: str) -> str | None:
        source = self.sources.get(sensor)
        return source.label if source is not None and source.label else None

    def _stream_doc(self, st: StreamState, at: int) -> dict[str, Any]:
        q = QUANTITIES.get(st.quantity)
        flags = []
        if st.quality is not None:
            for test, flag in sorted(st.quality.tests.items()):
                if flag in (QC_SUSPECT, QC_FAIL, QC_MISSING):
                    since = st.flagged_since.get(test)
                    flags.append({
                        "test": test,
                        "flag": FLAG_NAMES.get(flag, str(flag)),
                        "since_ms": since,
                        "for_s": None if since is None else round((at - since) / 1000),
                    })
        return {
            "quantity": st.quantity,
            "label": q.label if q else st.quantity,
            "unit": q.unit if q else "",
            "unit_symbol": q.unit_symbol if q else "",
            "value": st.value,
            "raw_value": st.raw,
            "time_ms": st.time_ms,
            "age_s": round((at - st.updated_ms) / 1000, 1),
            "count": st.count,
            "band": eaqi.band(st.quantity, st.value),
            "quality": None
            if st.quality is None
            else FLAG_NAMES.get(st.quality.aggregate, str(st.quality.aggregate)),
            "flags": flags,
        }

    def history(self) -> dict[str, Any]:
        """Per datastream: ``[bucket start ms, mean, min, max]`` for the last 24 h."""
        return {
            "bucket_s": self.settings.history_bucket_s,
            "streams": [
                {"sensor": st.sensor, "quantity": st.quantity, "points": [b.as_list() for b in st.buckets]}
                for st in sorted(self.live.streams.values(), key=lambda s: (s.sensor, s.quantity))
            ],
        }
