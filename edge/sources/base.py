"""What the runtime gives a source, and what a source promises the runtime.

A source is any object with a ``name`` and ``async def run(self, ctx: SourceContext)`` that
loops until cancelled. It hands observations to ``ctx.emit``. If ``run`` raises (port gone,
adapter gone), the runtime logs it once per state change and starts it again with
exponential backoff and jitter, forever.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from edge.model import Observation

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
    name: str

    async def run(self, ctx: SourceContext) -> None: ...
