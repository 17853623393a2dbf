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
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from edge.backoff import Backoff
from edge.config import GatewayConfig
from edge.model import Observation
from edge.outbox import Outbox
from edge.plugins import Service
from edge.seams import (
    BundleSink,
    GatewayCounters,
    Source,
    SourceContext,
    SourceHealth,
    Stage,
    Uplink,
    UplinkHealth,
)
from edge.sources import build_source
from edge.uplinks import OutboxPort

log = logging.getLogger("duet.runtime")


SOURCE_STOP_TIMEOUT_S = 5.0


@dataclass(slots=True)
class RuntimeOptions:
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_reset_after_s: float = 30.0
    drain_timeout_s: float = 5.0
    commit_poll_s: float = 0.05


def build_stages(config: GatewayConfig) -> list[Stage]:
    """The pipeline stages of every configured capability, in their declared order."""
    ordered = sorted(config.capabilities, key=lambda c: c.order)
    return [stage for capability in ordered for stage in capability.stages(config)]


def build_uplinks(config: GatewayConfig) -> list[Uplink]:
    return [uplink for capability in config.capabilities for uplink in capability.uplinks(config)]


def build_services(config: GatewayConfig) -> list[Service]:
    return [svc for capability in config.capabilities for svc in capability.services(config)]


def find_bundle_sink(config: GatewayConfig) -> BundleSink | None:
    sinks = [s for c in config.capabilities if (s := c.bundle_sink(config)) is not None]
    return sinks[0] if sinks else None


class OutboxStateStore:
    """A stage's :class:`edge.seams.StateStore`: keys prefixed, values kept by the outbox."""

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
        sources: list[Source] | None = None,
        uplinks: list[Uplink] | None = None,
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
        self.bundle_sink = find_bundle_sink(config)
        built = uplinks if uplinks is not None else build_uplinks(config)
        # sorted by name: the outbox keeps each uplink's books by position in this order
        self.uplinks: dict[str, Uplink] = {u.name: u for u in sorted(built, key=lambda u: u.name)}
        self.stages = stages if stages is not None else build_stages(config)
        self.services = build_services(config)
        self.outbox = Outbox(
            config.outbox_path,
            config.buffer,
            self.gateway_id,
            uplinks=list(self.uplinks) or ["none"],
        )
        self.counters = GatewayCounters()
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
                    extra={"event": "stage_error", "stage": stage.name},
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
        if self.bundle_sink is None:
            return
        outcome = self.bundle_sink(payload)
        if not outcome.applied:
            log.error(
                "bundle refused; keeping the active version",
                extra={"event": "bundle_refused", **outcome.detail},
            )
            return
        log.warning(
            "bundle applied; restarting to load it",
            extra={"event": "bundle_applied", **outcome.detail},
        )
        self.restart_requested = True
        if self._stop is not None:
            self._stop.set()

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        tasks: list[asyncio.Task[None]] = []
        for service in self.services:  # e.g. the status page: sees every batch from the first
            tasks.append(asyncio.create_task(service(self), name="service"))
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
            stage.open(OutboxStateStore(self.outbox, f"stage:{stage.name}/"))
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

    def _start_source(self, source: Source) -> asyncio.Task[None]:
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

    def _uplink_runner(self, name: str, uplink: Uplink) -> Callable[[], Awaitable[None]]:
        port = OutboxPort(
            name,
            self.outbox,
            self.new_data,
            self.uplink_health[name],
            on_bundle=self.apply_bundle if self.bundle_sink is not None else None,
            status=self.status,
        )
        return lambda: uplink.run(port)

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
    def status(self) -> dict[str, object]:
        oldest = self.outbox.oldest_unsent_ms()
        c = self.outbox.counters
        return {
            "gateway": self.gateway_id,
            "started_ms": self.counters.started_ms,
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
