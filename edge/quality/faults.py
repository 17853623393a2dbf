"""Reproducible fault injection into a real series (known start/end, seeded).

Amplitudes are relative to the series itself so the same definitions work for any quantity:
``sigma`` is the robust standard deviation of the clean values (1.4826 × MAD). Durations are
in samples. Definitions (documented in docs/quality.md):

- ``spike``: one sample, ``+U(3, 6) × sigma`` (upward: optical and electrochemical glitches).
- ``stuck``: the value at onset repeated for ``U(12, 48)`` samples.
- ``drift_linear``: ``x × (1 + r × days since onset)``, r = 2 %/day, for 7 days.
- ``drift_exp``: ``x × (1 + r)^(days since onset)``, r = 2 %/day, for 7 days.
- ``noise``: Gaussian noise of ``U(1, 2) × sigma`` for ``U(6, 24)`` samples (values kept ≥ 0).
- ``dropout``: ``U(3, 24)`` samples removed; the event is the first sample after the gap.
- ``offset``: ``± U(1, 2) × sigma`` added from onset for ``U(48, 168)`` samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FAULT_TYPES = ("spike", "stuck", "drift_linear", "drift_exp", "noise", "dropout", "offset")
DRIFT_RATE_PER_DAY = 0.02
_DRIFT_DAYS = 7


@dataclass(frozen=True)
class FaultEvent:
    kind: str
    start: int  # first faulty index
    end: int  # last faulty index (inclusive); for dropout: the first index after the gap


@dataclass(frozen=True)
class Injected:
    values: np.ndarray  # NaN where the value is missing (incl. dropouts)
    events: list[FaultEvent]


def robust_sigma(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(1.4826 * np.median(np.abs(finite - np.median(finite)))) or 1.0


def _duration(kind: str, rng: np.random.Generator, samples_per_day: float) -> int:
    if kind == "spike":
        return 1
    if kind == "stuck":
        return int(rng.integers(12, 49))
    if kind in ("drift_linear", "drift_exp"):
        return int(_DRIFT_DAYS * samples_per_day)
    if kind == "noise":
        return int(rng.integers(6, 25))
    if kind == "dropout":
        return int(rng.integers(3, 25))
    return int(rng.integers(48, 169))  # offset


def inject(
    values: np.ndarray,
    times_ms: np.ndarray,
    kind: str,
    n_events: int,
    seed: int,
    lo: int = 0,
) -> Injected:
    """Inject ``n_events`` non-overlapping faults of ``kind`` at indices ≥ ``lo``.

    Events are spaced evenly (with seeded jitter) so each has clean data around it; an
    onset is only placed where ≥ 90 % of the event's samples hold real values (the UCI
    series has long gaps), so a slot without such a place gets no event.
    """
    if kind not in FAULT_TYPES:
        raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_TYPES)}")
    rng = np.random.default_rng(seed)
    out = values.astype(np.float64).copy()
    sigma = robust_sigma(values[lo:])
    dt = float(np.median(np.diff(times_ms))) if len(times_ms) > 1 else 3_600_000.0
    per_day = 86_400_000.0 / dt
    slot = (len(values) - lo) // max(n_events, 1)
    events: list[FaultEvent] = []
    for k in range(n_events):
        length = _duration(kind, rng, per_day)
        base = lo + k * slot + int(slot * 0.2)
        start = -1
        for _ in range(50):  # an onset whose window (and the sample after) is ≥ 90 % real data
            cand = base + int(rng.integers(0, max(1, int(slot * 0.6) - length)))
            window = values[cand : cand + length + 1]
            if np.isfinite(values[cand]) and np.mean(np.isfinite(window)) >= 0.9:
                start = cand
                break
        if start < 0 or start >= len(out):
            continue
        end = min(len(out) - 1, start + length - 1)
        events.append(_apply(kind, out, start, end, sigma, times_ms, rng))
    return Injected(out, events)


def _apply(kind: str, out: np.ndarray, start: int, end: int, sigma: float,
           times_ms: np.ndarray, rng: np.random.Generator) -> FaultEvent:
    sl = slice(start, end + 1)
    finite = np.isfinite(out[sl])
    if kind == "spike":
        out[start] += rng.uniform(3.0, 6.0) * sigma
    elif kind == "stuck":
        out[sl] = np.where(finite, out[start], np.nan)
    elif kind in ("drift_linear", "drift_exp"):
        days = (times_ms[sl] - times_ms[start]) / 86_400_000.0
        if kind == "drift_linear":
            factor = 1.0 + DRIFT_RATE_PER_DAY * days
        else:
            factor = (1.0 + DRIFT_RATE_PER_DAY) ** days
        out[sl] = out[sl] * factor
    elif kind == "noise":
        noisy = out[sl] + rng.normal(0.0, rng.uniform(1.0, 2.0) * sigma, end - start + 1)
        out[sl] = np.maximum(noisy, 0.0)
    elif kind == "dropout":
        out[sl] = np.nan
        after = end + 1
        while after < len(out) and not np.isfinite(out[after]):
            after += 1
        return FaultEvent(kind, min(after, len(out) - 1), min(after, len(out) - 1))
    elif kind == "offset":
        sign = 1.0 if rng.random() < 0.5 else -1.0
        out[sl] = np.maximum(out[sl] + sign * rng.uniform(1.0, 2.0) * sigma, 0.0)
    return FaultEvent(kind, start, end)
