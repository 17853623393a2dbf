"""Exponential backoff with jitter, used for every reconnect (sources and uplinks)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delay doubles from ``initial_s`` up to ``max_s``; "equal jitter" keeps half of it random.

    Equal jitter (half fixed, half random) spreads a fleet of gateways reconnecting to a
    restarted broker while still growing the minimum wait.
    """

    initial_s: float = 0.5
    max_s: float = 30.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0
