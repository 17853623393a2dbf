"""The gateway runtime: an asyncio supervisor wiring sources → stages → outbox → uplinks.

Each source and each uplink is one task under :func:`supervise`, which restarts it with
exponential backoff and jitter forever. A committer task closes group commits on time.
``Gateway.run`` returns after ``stop`` is set (SIGTERM/SIGINT in :func:`run_gateway`): sources
stop, the pending group is committed, uplinks get ``drain_timeout_s`` to deliver what is
committed, and the outbox is closed cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import importlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from edge.backoff import Backoff
from edge.config import GatewayConfig, SourceSettings
from edge.model import Observation
from edge.outbox import Outbox
from edge.sources import SOURCE_FACTORIES, load_builtin_sources
from edge.sources.base import SourceContext, SourceHealth
from edge.stages import Stage
from edge.uplinks import UplinkHealth, UplinkPort, drain_sequentially

log = logging.getLogger("duet.runtime")


SOURCE_STOP_TIMEOUT_S = 5.0


@dataclass(slots=True)
class RuntimeOptions:
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_reset_after_s: float = 30.0
    drain_timeout_s: float = 5.0
    commit_poll_s: float = 0.05


@dataclass(slots=True)
class Counters:
    observations_in: int = 0
    stage_errors: int = 0
    started_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)


def build_source(settings: SourceSettings, gateway_id: str) -> Any:
    load_builtin_sources()
    factory = SOURCE_FACTORIES.get(settings.type)
    if factory is not None:
        return factory(settings, gateway_id)
    from edge.sources.serial import SerialSource

    return SerialSource(settings, gateway_id)


def build_uplinks(
    config: GatewayConfig, on_bundle: Callable[[bytes], None] | None = None
) -> dict[str, Any]:
    uplinks: dict[str, Any] = {}
    if config.uplinks.mqtt is not None:
        from edge.uplinks.mqtt import MqttUplink

        uplinks["mqtt"] = MqttUplink(config.uplinks.mqtt, config.gateway.id, on_bundle=on_bundle)
    if config.uplinks.sensorthings_http is not None:
        from edge.sensorthings import GeoPoint
        from edge.uplinks.sensorthings_http import SensorThingsHttpUplink

        gw = config.gateway
        location = (
            GeoPoint(gw.longitude, gw.latitude)
            if gw.latitude is not None and gw.longitude is not None
            else None
        )
        uplinks["sensorthings_http"] = SensorThingsHttpUplink(
            config.uplinks.sensorthings_http, gw.id, gw.data_dir, location=location
        )
    return uplinks


def build_stages(config: GatewayConfig) -> list[Stage]:
    stages: list[Stage] = []
    if config.calibration is not None:
        from calibration.stage import CalibrationStage

        stages.append(CalibrationStage(config.calibration))
    if config.quality is not None:
        from edge.quality.stage import QualityStage

        stages.append(QualityStage(config.quality))
    return stages


class _StageState:
    """A stage's :class:`edge.stages.StateStore`: keys prefixed, values kept by the outbox."""

    def __init__(self, outbox: Outbox, prefix: str) -> None:
        self._outbox = outbox
        self._prefix = prefix

    def stage(self, key: str, value: bytes) -> None:
        self._outbox.stage_state(self._prefix + key, value)

    def recall(self, key: str) -> bytes | None:
        value = self._outbox.state(self._prefix + key)
        return value if isinstance(value, bytes) or value is None else value.encode()


class Gateway:
    """One gateway process' worth of state. Build it, then ``await run(stop_event)``."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        options: RuntimeOptions | None = None,
        sources: list[Any] | None = None,
        uplinks: dict[str, Any] | None = None,
        stages: list[Stage] | None = None,
    ) -> None:
        self.config = config
        self.options = options or RuntimeOptions(
            backoff_initial_s=config.runtime.backoff_initial_s,
            backoff_max_s=config.runtime.backoff_max_s,
            drain_timeout_s=config.runtime.drain_timeout_s,
        )
        self.gateway_id = config.gateway.id
        self.sources = (
            sources
            if sources is not None
            else [build_source(s, self.gateway_id) for s in config.sources]
        )
        self.restart_requested = False
        self._source_tasks: dict[str, asyncio.Task[None]] = {}
        self._stop: asyncio.Event | None = None
        bundles = config.security is not None and config.security.bundles is not None
        self.uplinks = (
            uplinks
            if uplinks is not None
            else build_uplinks(config, self.apply_bundle if bundles else None)
        )
        self.stages = stages if stages is not None else build_stages(config)
        self.outbox = Outbox(
            config.outbox_path,
            config.buffer,
            self.gateway_id,
            uplinks=list(self.uplinks) or ["none"],
        )
        self.counters = Counters()
        self.source_health = {s.name: SourceHealth(s.name) for s in self.sources}
        self.uplink_health = {name: UplinkHealth(name) for name in self.uplinks}
        self.new_data = asyncio.Event()
        self.outbox.on_commit.append(lambda _obs: self.new_data.set())
        self.listeners: list[Callable[[list[Observation]], None]] = []

    # ------------------------------------------------------------------ ingest path
    def emit(self, observations: list[Observation]) -> None:
        """Called by sources: run the stages, then queue for the next group commit."""
        self.counters.observations_in += len(observations)
        for stage in self.stages:
            try:
                observations = stage.process(observations)
            except Exception:  # a stage bug must not lose data: pass the values on unprocessed
                self.counters.stage_errors += 1
                log.exception(
                    "pipeline stage failed; observations passed on unprocessed",
                    extra={"event": "stage_error", "stage": type(stage).__name__},
                )
        for listener in self.listeners:
            listener(observations)
        self.outbox.append(observations)

    # ------------------------------------------------------------------ tasks
    def apply_bundle(self, payload: bytes) -> None:
        """A signed bundle arrived: verify and apply it; on success restart to load it.

        On any problem the bundle is refused, the reason logged, and the gateway keeps running
        on the version it has (the bundle store keeps previous versions).
        """
        from provisioning.bundles import BundleError
        from provisioning.settings import apply_bundle_message

        try:
            assert self.config.security is not None
            applied = apply_bundle_message(payload, self.config.security, self.gateway_id)
        except BundleError as exc:
            log.error(
                "bundle refused; keeping the active version",
                extra={"event": "bundle_refused", "reason": str(exc)},
            )
            return
        log.warning(
            "bundle applied; restarting to load it",
            extra={
                "event": "bundle_applied",
                "kind": applied.kind,
                "version": applied.version,
                "previous": applied.previous,
            },
        )
        self.restart_requested = True
        if self._stop is not None:
            self._stop.set()

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        tasks: list[asyncio.Task[None]] = []
        if self.config.web is not None:  # status page: sees every batch from the first one
            tasks.append(importlib.import_module("edge.web").start(self, tasks))
        for source in self.sources:
            tasks.append(self._start_source(source))
        uplink_tasks = [
            asyncio.create_task(
                self._supervise(
                    f"uplink:{name}", self._uplink_runner(name, uplink), self.uplink_health[name]
                ),
                name=f"uplink:{name}",
            )
            for name, uplink in self.uplinks.items()
        ]
        for stage in self.stages:
            stage.open(_StageState(self.outbox, f"stage:{stage.name}/"))
        committer = asyncio.create_task(self._committer(), name="committer")
        log.info(
            "gateway started",
            extra={
                "event": "started",
                "gateway": self.gateway_id,
                "sources": [s.name for s in self.sources],
                "uplinks": list(self.uplinks),
                "outbox_depth": self.outbox.depth(),
            },
        )
        try:
            await stop.wait()
        finally:
            await self._shutdown(tasks, uplink_tasks, committer)

    def _start_source(self, source: Any) -> asyncio.Task[None]:
        health = self.source_health[source.name]
        prefix = f"{source.name}/"
        ctx = SourceContext(
            self.gateway_id,
            self.emit,
            health,
            stage=lambda key, value: self.outbox.stage_state(prefix + key, value),
            recall=lambda key: _text(self.outbox.state(prefix + key)),
        )
        task = asyncio.create_task(
            self._supervise(f"source:{source.name}", functools.partial(source.run, ctx), health),
            name=f"source:{source.name}",
        )
        self._source_tasks[source.name] = task
        return task

    async def restart_source(self, name: str) -> None:
        """Stop one source and start it again (e.g. from the status page); KeyError if unknown."""
        source = next((s for s in self.sources if s.name == name), None)
        if source is None:
            raise KeyError(name)
        old = self._source_tasks.get(name)
        if old is not None:
            old.cancel()
            await asyncio.gather(old, return_exceptions=True)
        health = self.source_health[name]
        health.reconnects += 1
        health.set_state("starting", "restart requested")
        self._start_source(source)

    def _uplink_runner(self, name: str, uplink: Any) -> Callable[[], Awaitable[None]]:
        port = UplinkPort(name, self.outbox, self.new_data, self.uplink_health[name])
        if hasattr(uplink, "run"):
            return lambda: uplink.run(port)
        batch_size = int(getattr(uplink, "batch_size", 500))
        return lambda: drain_sequentially(uplink, port, batch_size)

    async def _supervise(
        self, what: str, start: Callable[[], Awaitable[None]], health: SourceHealth | UplinkHealth
    ) -> None:
        backoff = Backoff(self.options.backoff_initial_s, self.options.backoff_max_s)
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                await start()
                reason = "stopped by itself"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if loop.time() - began >= self.options.backoff_reset_after_s:
                backoff.reset()
            delay = backoff.next_delay()
            if health.state != "disconnected":
                log.warning(
                    "connection lost; retrying with backoff",
                    extra={
                        "event": "disconnected",
                        "task": what,
                        "reason": reason,
                        "retry_in_s": round(delay, 2),
                    },
                )
            if isinstance(health, SourceHealth):
                health.set_state("disconnected", reason)
            else:
                health.state = "disconnected"
                health.last_error = reason
            health.reconnects += 1
            await asyncio.sleep(delay)

    async def _committer(self) -> None:
        """Close group commits on time and let the outbox spill, retire and retry (tick).

        Never dies: an unexpected error is logged and the next round tries again (a dead
        committer would leave every later observation uncommitted)."""
        while True:
            await asyncio.sleep(self.options.commit_poll_s)
            try:
                if self.outbox.commit_due():
                    self.outbox.commit()
                self.outbox.tick()
            except Exception:
                log.exception("outbox commit failed; retrying", extra={"event": "commit_error"})

    async def _shutdown(
        self,
        sources: list[asyncio.Task[None]],
        uplinks: list[asyncio.Task[None]],
        committer: asyncio.Task[None],
    ) -> None:
        sources = list({*sources, *self._source_tasks.values()})  # restarted ones included
        for task in sources:
            task.cancel()
        stuck: set[asyncio.Task[None]] = set()
        if sources:
            _done, stuck = await asyncio.wait(sources, timeout=SOURCE_STOP_TIMEOUT_S)
        if stuck:  # never let one misbehaving source keep the gateway from closing its outbox
            log.error(
                "sources did not stop; closing without them",
                extra={"event": "shutdown_stuck", "tasks": sorted(t.get_name() for t in stuck)},
            )
        committer.cancel()
        await asyncio.gather(committer, return_exceptions=True)
        for stage in self.stages:  # their last checkpoint goes out with the final commit
            try:
                stage.close()
            except Exception:
                log.exception("stage failed to close", extra={"event": "stage_error",
                                                               "stage": stage.name})
        self.outbox.commit()
        deadline = time.monotonic() + self.options.drain_timeout_s
        while uplinks and time.monotonic() < deadline and self._has_unsent():
            await asyncio.sleep(0.05)
        for task in uplinks:
            task.cancel()
        await asyncio.gather(*uplinks, return_exceptions=True)
        self.outbox.close()
        log.info("gateway stopped", extra={"event": "stopped", "gateway": self.gateway_id})

    def _has_unsent(self) -> bool:
        return self.outbox.depth() > 0 and any(
            h.state == "connected" for h in self.uplink_health.values()
        )

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        oldest = self.outbox.oldest_unsent_ms()
        c = self.outbox.counters
        return {
            "gateway": self.gateway_id,
            "observations_in": self.counters.observations_in,
            "received": c.received,
            "confirmed": c.confirmed,
            "evicted": c.evicted,
            "refused": c.refused,
            "dead_lettered": c.dead_lettered,
            "buffer_depth": self.outbox.depth(),
            "oldest_unsent_ms": oldest,
            "sources": [h.as_dict() for h in self.source_health.values()],
            "uplinks": [h.as_dict() for h in self.uplink_health.values()],
        }


def tune_gc() -> None:
    """Fewer cyclic-GC passes: the hot path allocates many short-lived, acyclic objects.

    Observations never form cycles, so collecting young objects every 700 allocations (the
    default) only burns CPU; start-up objects are frozen out of later full collections.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def run_gateway(config: GatewayConfig, options: RuntimeOptions | None = None) -> bool:
    """Run until SIGTERM/SIGINT, then flush and close cleanly. True: restart requested."""
    gateway = Gateway(config, options=options)
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await gateway.run(stop)
    return gateway.restart_requested


def _text(value: str | bytes | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
