"""One air verdict for the site, from hourly means (the host page's big coloured card).

EAQI bands are defined on averaged concentrations, never on a one-second reading, so the
verdict comes from each stream's mean over the trailing hour (the chart buckets of
:class:`~edge.web.state.LiveState`). Rules, in order:

1. Only PM2.5, PM10 and NO2 have EAQI bands (:mod:`edge.web.eaqi`).
2. A stream counts when its sensor is working (the caller decides: connected, not silent)
   and its latest value did not fail a quality test.
3. A stream needs :data:`MIN_COVERAGE` of the hour measured to count at all; under
   :data:`FULL_COVERAGE` (the EEA's 75 % data-capture rule) the verdict is *provisional*.
4. Each stream's band follows its hourly mean with hysteresis (:func:`eaqi.settle`), so a
   mean hovering on a bound does not flip the band every minute.
5. The site's band is the **worst** band of the streams that count: the EAQI itself takes
   the worst pollutant, and two sensors measuring the same air are judged by the one that
   reads higher (the cautious choice for health).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from edge.model import QC_FAIL
from edge.web import eaqi
from edge.web.state import LiveState, StreamState

WINDOW_MS = 3600 * 1000
FULL_COVERAGE = 0.75
MIN_COVERAGE = 5 / 60  # five minutes of the hour

# What the verdict card says when there is no band.
WAITING = "waiting"  # working sensors, not yet five minutes measured
NO_WORKING_SENSOR = "no_working_sensor"  # sensors that could judge the air are all down
NOT_MEASURED = "not_measured"  # nothing on this gateway measures PM or NO2
FINAL = "final"
PROVISIONAL = "provisional"


@dataclass(frozen=True, slots=True)
class HourlyMean:
    """One stream's mean over the trailing hour and the band it settles on."""

    sensor: str
    quantity: str
    mean: float
    coverage: float  # fraction of the hour with values, 0…1
    band: str


@dataclass(frozen=True, slots=True)
class Verdict:
    state: str  # FINAL | PROVISIONAL | WAITING | NO_WORKING_SENSOR | NOT_MEASURED
    band: str | None
    means: tuple[HourlyMean, ...]  # the streams that count, worst band first
    at_ms: int

    @property
    def driver(self) -> HourlyMean | None:
        """The stream that sets the site's band."""
        return self.means[0] if self.means else None


def expected_buckets(bucket_s: float, interval_s: float, duty_cycle_s: tuple[float, float] | None) -> float:
    """How many chart buckets of an hour a working sensor fills (for the coverage)."""
    per_hour = 3600 / max(bucket_s, interval_s)
    if duty_cycle_s is not None:
        measure_s, sleep_s = duty_cycle_s
        cycles = 3600 / (measure_s + sleep_s)
        per_cycle = max(1, math.ceil(measure_s / max(bucket_s, interval_s)))
        per_hour = min(per_hour, cycles * per_cycle)
    return max(1.0, per_hour)


def hourly_mean(stream: StreamState, at_ms: int, bucket_ms: int, expected: float) -> tuple[float, float] | None:
    """(mean, coverage) over the hour before ``at_ms``, or None without values in it."""
    since = at_ms - WINDOW_MS
    total, count, buckets = 0.0, 0, 0
    for bucket in reversed(stream.buckets):
        if bucket.start_ms + bucket_ms <= since:
            break
        if bucket.start_ms > at_ms:
            continue
        total += bucket.total
        count += bucket.count
        buckets += 1
    if count == 0:
        return None
    return total / count, min(1.0, buckets / expected)


class AirJudge:
    """Keeps each stream's last band, so that bands move with hysteresis between calls."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], str] = {}

    def mean_of(self, stream: StreamState, at_ms: int, bucket_ms: int, expected: float) -> HourlyMean | None:
        """The stream's hourly mean and settled band (None: no band or under five minutes)."""
        if not eaqi.has_band(stream.quantity):
            return None
        got = hourly_mean(stream, at_ms, bucket_ms, expected)
        if got is None or got[1] < MIN_COVERAGE:
            return None
        mean, coverage = got
        key = (stream.sensor, stream.quantity)
        settled = eaqi.settle(stream.quantity, mean, self._last.get(key))
        if settled is None:
            return None
        self._last[key] = settled
        return HourlyMean(stream.sensor, stream.quantity, mean, coverage, settled)

    def judge(
        self,
        live: LiveState,
        at_ms: int,
        *,
        working: Callable[[str], bool],
        expected: Callable[[str], float],
        pollutant_sources: tuple[str, ...] = (),
    ) -> Verdict:
        """The site's verdict at ``at_ms`` (see the module's rules).

        ``working(sensor)`` says whether a sensor is up; ``expected(sensor)`` how many buckets
        of an hour it fills; ``pollutant_sources`` names configured sources that measure PM or
        NO2, so that before their first value the card says "waiting", not "not measured".
        """
        bucket_ms = live.bucket_ms
        candidates = [s for s in live.streams.values() if eaqi.has_band(s.quantity)]
        counted: list[HourlyMean] = []
        any_working = False
        for stream in candidates:
            if not working(stream.sensor) or _failed(stream):
                continue
            any_working = True
            mean = self.mean_of(stream, at_ms, bucket_ms, expected(stream.sensor))
            if mean is not None:
                counted.append(mean)
        if counted:
            counted.sort(key=lambda m: (-eaqi.band_level(m.band), -m.mean, m.sensor, m.quantity))
            final = all(m.coverage >= FULL_COVERAGE for m in counted)
            return Verdict(FINAL if final else PROVISIONAL, counted[0].band, tuple(counted), at_ms)
        measured = {s.sensor for s in candidates}
        unheard = [name for name in pollutant_sources if name not in measured]
        if any_working or any(working(name) for name in unheard):
            state = WAITING
        elif candidates or pollutant_sources:
            state = NO_WORKING_SENSOR
        else:
            state = NOT_MEASURED
        return Verdict(state, None, (), at_ms)


def _failed(stream: StreamState) -> bool:
    quality = stream.quality
    return quality is not None and quality.aggregate == QC_FAIL
