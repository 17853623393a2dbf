"""The seams between the runtime and what it runs: sources, pipeline stages, uplinks.

Each seam is a :class:`typing.Protocol`; mypy checks every implementation against it.

* **Source** — ``name`` and ``async run(ctx)``, looping until cancelled, handing observations
  to ``ctx.emit``. If ``run`` raises (port gone, adapter gone) the runtime logs it once per
  state change and starts it again with exponential backoff and jitter, forever.
* **Stage** — ``process(observations) -> observations`` in arrival order, never raising on
  data; learned state goes through a :class:`StateStore`, committed atomically with the
  outbox's next group (``open`` restores it, ``close`` checkpoints it).
* **Uplink** — ``name`` and ``async run(port)``: owns its connection, takes batches from the
  :class:`UplinkPort` (the outbox as the uplink may see it) and reports deliveries; any
  connection problem ends ``run`` and the runtime reconnects with backoff.
* **BundleSink** — applies a signed configuration/calibration bundle pushed by the twin.
* **GatewayHandle** — what services (the status page) may see of a running gateway.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from edge.model import Batch, Delivery, Observation

if TYPE_CHECKING:
    import asyncio

    from edge.config import GatewayConfig
    from edge.outbox import Outbox

log = logging.getLogger("duet.source")

# A source is "unhealthy" when more than this share of its recent frames were bad.
UNHEALTHY_BAD_RATIO = 0.5
HEALTH_WINDOW = 20


@dataclass(slots=True)
class SourceHealth:
    """Counters and state of one source, shown by the status page and /metrics."""

    name: str
    state: str = (
        "starting"  # starting | connected | disconnected | unhealthy | sleeping | warming-up
    )
    frames_ok: int = 0
    frames_skipped: int = 0
    frames_bad: Counter[str] = field(default_factory=Counter)
    observations: int = 0
    reconnects: int = 0
    last_frame_ms: int | None = None
    last_error: str = ""
    connected_since_ms: int | None = None
    device: dict[str, str] = field(default_factory=dict)  # serial number, firmware version, port
    _recent: deque[bool] = field(default_factory=lambda: deque(maxlen=HEALTH_WINDOW))

    def set_state(self, state: str, reason: str = "") -> None:
        """Change state, logging once per change (never once per frame)."""
        if state == self.state:
            return
        level = logging.WARNING if state in ("disconnected", "unhealthy") else logging.INFO
        log.log(
            level,
            "source state changed",
            extra={
                "event": "source_state",
                "source": self.name,
                "from": self.state,
                "to": state,
                "reason": reason,
            },
        )
        self.state = state
        if reason:
            self.last_error = reason

    def frame_result(self, ok: bool, count: int = 1) -> None:
        """Track the recent good/bad ratio and flip between connected and unhealthy."""
        self._recent.extend([ok] * min(count, HEALTH_WINDOW))
        if len(self._recent) < HEALTH_WINDOW // 2:
            return
        bad_ratio = self._recent.count(False) / len(self._recent)
        if bad_ratio > UNHEALTHY_BAD_RATIO and self.state == "connected":
            self.set_state("unhealthy", f"{bad_ratio:.0%} of recent frames bad")
        elif bad_ratio <= UNHEALTHY_BAD_RATIO / 2 and self.state == "unhealthy":
            self.set_state("connected", "frames good again")

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "state": self.state,
            "frames_ok": self.frames_ok,
            "frames_skipped": self.frames_skipped,
            "frames_bad": dict(self.frames_bad),
            "observations": self.observations,
            "reconnects": self.reconnects,
            "last_frame_ms": self.last_frame_ms,
            "last_error": self.last_error,
            "device": dict(self.device),
        }


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class SourceContext:
    """Handed to ``Source.run``: where observations go and where health is kept."""

    gateway_id: str
    emit: Callable[[list[Observation]], None]
    health: SourceHealth
    clock_ms: Callable[[], int] = wall_clock_ms
    # Durable source state committed atomically with the next emitted observations
    # (stage before emit); ``recall`` reads it back after a restart. No-ops without an outbox.
    stage: Callable[[str, str], None] = lambda _key, _value: None
    recall: Callable[[str], str | None] = lambda _key: None


class Source(Protocol):
    """One sensor or source kind, read by one task of the runtime."""

    @property
    def name(self) -> str: ...

    async def run(self, ctx: SourceContext) -> None: ...


class StateStore(Protocol):
    """A stage's small durable state, kept by the outbox (the only owner of durable state)."""

    def stage(self, key: str, value: bytes) -> None:
        """Write ``key = value`` in the same transaction as the next committed group."""

    def recall(self, key: str) -> bytes | None:
        """The last committed value of ``key`` (None if never written)."""


class Stage(Protocol):
    """One pipeline stage. ``process`` never raises on bad data; it flags instead."""

    @property
    def name(self) -> str: ...

    def open(self, state: StateStore) -> None:
        """Called once before the first ``process``: restore learned state from ``state``."""

    def process(self, observations: list[Observation]) -> list[Observation]:
        """Transform observations (in place or new objects) and return them, in order."""

    def close(self) -> None:
        """Clean shutdown, before the final commit: stage a last checkpoint if it has one."""


class NoState:
    """A :class:`StateStore` that forgets everything (tools and tests without an outbox)."""

    def stage(self, key: str, value: bytes) -> None:
        del key, value

    def recall(self, key: str) -> bytes | None:
        del key
        return None


Gap = tuple[int, int, int, str]  # first sequence, last sequence, count (-1: unknown), reason


@dataclass(slots=True)
class UplinkHealth:
    """Counters and state of one uplink, shown by the status page and /metrics."""

    name: str
    state: str = "starting"
    connected_since_ms: int | None = None
    last_confirmed_ms: int | None = None
    sent_batches: int = 0
    sent_observations: int = 0
    confirmed: int = 0
    rejected: int = 0
    reconnects: int = 0
    bytes_sent: int = 0
    retransmitted: int = 0  # observations sent again because no ack came in time
    awaiting_ack: int = 0  # observations published and not answered by the twin yet
    last_error: str = ""
    latency_s: list[float] = field(default_factory=list)  # recent upload latencies (bounded)

    def record_latency(self, seconds: float) -> None:
        self.latency_s.append(seconds)
        if len(self.latency_s) > 256:
            del self.latency_s[:128]

    def as_dict(self) -> dict[str, object]:
        lat = sorted(self.latency_s)
        return {
            "name": self.name,
            "state": self.state,
            "last_confirmed_ms": self.last_confirmed_ms,
            "sent_batches": self.sent_batches,
            "sent_observations": self.sent_observations,
            "confirmed": self.confirmed,
            "rejected": self.rejected,
            "reconnects": self.reconnects,
            "bytes_sent": self.bytes_sent,
            "retransmitted": self.retransmitted,
            "awaiting_ack": self.awaiting_ack,
            "last_error": self.last_error,
            "latency_p50_s": lat[len(lat) // 2] if lat else None,
        }


GatewayStatus = Callable[[], Mapping[str, object]]


class UplinkPort(Protocol):
    """An uplink's view of the outbox: take batches, report deliveries, wait for new data."""

    @property
    def name(self) -> str: ...

    @property
    def health(self) -> UplinkHealth: ...

    @property
    def accepts_bundles(self) -> bool:
        """True when the gateway takes signed bundles through this uplink's connection."""

    def deliver_bundle(self, payload: bytes) -> None:
        """Hand a signed bundle that arrived on this connection to the gateway."""

    def next_batch(self, limit: int) -> Batch: ...

    @property
    def status(self) -> GatewayStatus | None:
        """The gateway's status document, for uplinks that publish it (None: not offered)."""

    def settle(self, batch: Batch, delivery: Delivery, started: float) -> None:
        """The answer to a whole batch; rows it leaves open are handed out again."""

    def confirm(self, delivery: Delivery, started: float) -> None:
        """Confirmed and refused rows, possibly of several batches (end-to-end acks)."""

    def rewind(self) -> None: ...

    def pending_gaps(self) -> list[Gap]: ...

    def gaps_reported(self, gaps: list[Gap]) -> None: ...

    async def wait_for_data(self, timeout: float = 1.0) -> None: ...


class Uplink(Protocol):
    """A way to the twin. ``run`` returns or raises when the connection is gone."""

    @property
    def name(self) -> str: ...

    async def run(self, port: UplinkPort) -> None: ...


@dataclass(frozen=True, slots=True)
class BundleOutcome:
    """What applying a signed bundle did: ``applied`` (restart to load it) or refused."""

    applied: bool
    detail: dict[str, str] = field(default_factory=dict)


class BundleSink(Protocol):
    """Verifies and applies a signed config/calibration bundle (never raises on bad input)."""

    def __call__(self, payload: bytes) -> BundleOutcome: ...


@dataclass(slots=True)
class GatewayCounters:
    """The runtime's own counters (the outbox keeps the durable ones)."""

    observations_in: int = 0
    stage_errors: int = 0
    started_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)


class GatewayHandle(Protocol):
    """What a service (the status page) may use of a running gateway."""

    @property
    def config(self) -> GatewayConfig: ...

    @property
    def gateway_id(self) -> str: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def counters(self) -> GatewayCounters: ...

    @property
    def source_health(self) -> dict[str, SourceHealth]: ...

    @property
    def uplink_health(self) -> dict[str, UplinkHealth]: ...

    @property
    def listeners(self) -> list[Callable[[list[Observation]], None]]: ...

    @property
    def new_data(self) -> asyncio.Event: ...

    def status(self) -> dict[str, object]: ...

    async def restart_source(self, name: str) -> None: ...
