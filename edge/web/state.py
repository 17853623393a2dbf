"""In-memory view of what the gateway measured: latest values and a bounded 24 h history.

:class:`LiveState` is registered as a ``Gateway.listeners`` callable, so it sees every batch
after the pipeline stages, on the event loop, without touching the outbox. Memory is bounded:
at most ``max_streams`` datastreams, each with ``history_s / bucket_s`` buckets. The buckets
(charts, and the hourly means of :mod:`edge.web.air`) average values sampled at most once per
``sample_s`` of phenomenon time per stream, so the work per observation on the ingest path is
a dict lookup, a comparison and three attribute writes.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from edge.model import QC_NOT_EVALUATED, QC_PASS, Datastream, Observation, Provenance, Quality

Clock = Callable[[], float]
FUTURE_TOLERANCE_MS = 60_000  # clock skew between a sensor node and the gateway


@dataclass(slots=True)
class Bucket:
    start_ms: int
    total: float
    count: int
    low: float
    high: float

    def add(self, value: float) -> None:
        self.total += value
        self.count += 1
        self.low = min(self.low, value)
        self.high = max(self.high, value)

    def as_list(self) -> list[float | int]:
        return [self.start_ms, round(self.total / self.count, 4), self.low, self.high]


@dataclass(slots=True)
class StreamState:
    """One datastream: its latest observation and per-bucket means of sampled values."""

    sensor: str
    quantity: str
    latest: Observation
    updated: float  # wall clock (s) when the latest observation arrived
    count: int = 0
    next_sample_ms: int = 0  # phenomenon time from which the next value is sampled for history
    flagged_since: dict[str, int] = field(default_factory=dict)  # test → first flagged ms
    buckets: deque[Bucket] = field(default_factory=deque)

    @property
    def value(self) -> float:
        return self.latest.result

    @property
    def raw(self) -> float | None:
        return self.latest.raw_result

    @property
    def quality(self) -> Quality | None:
        return self.latest.quality

    @property
    def provenance(self) -> Provenance:
        return self.latest.provenance

    @property
    def updated_ms(self) -> int:
        return int(self.updated * 1000)

    @property
    def time_ms(self) -> int:
        end = self.latest.phenomenon_end_ms
        return end if end is not None else self.latest.phenomenon_ms


def _bucket_start(bucket: Bucket) -> int:
    return bucket.start_ms


class RateMeter:
    """Observations per second over a sliding window of one-second slots."""

    def __init__(self, window_s: int = 300, clock: Clock = time.time) -> None:
        self._slots: deque[list[int]] = deque(maxlen=window_s)
        self._clock = clock
        self._window_s = window_s
        self.started = clock()

    def add(self, count: int) -> None:
        second = int(self._clock())
        if self._slots and self._slots[-1][0] == second:
            self._slots[-1][1] += count
        else:
            self._slots.append([second, count])

    def per_second(self) -> float:
        now = self._clock()
        horizon = now - self._window_s
        total = sum(c for s, c in self._slots if s >= horizon)
        span = min(self._window_s, max(1.0, now - self.started))
        return total / span


class LiveState:
    """Keeps the latest value and 24 h of bucket means per datastream; call it with batches."""

    def __init__(
        self,
        *,
        bucket_s: int = 60,
        history_s: int = 24 * 3600,
        max_streams: int = 256,
        sample_s: float = 1.0,
        clock: Clock = time.time,
    ) -> None:
        self.bucket_ms = bucket_s * 1000
        self.history_ms = history_s * 1000
        self.max_buckets = max(1, history_s // bucket_s)
        self.max_streams = max_streams
        self.sample_ms = int(sample_s * 1000)
        self.streams: dict[Datastream, StreamState] = {}
        self._by_key: dict[tuple[str, str], StreamState] = {}
        self.dropped_streams = 0
        self.rate = RateMeter(clock=clock)
        self._clock = clock

    def __call__(self, observations: list[Observation]) -> None:
        """The ingest-path hook: O(1) work per observation, history sampled per ``sample_s``."""
        now = self._clock()
        horizon_ms = int(now * 1000) + FUTURE_TOLERANCE_MS
        sample_ms = self.sample_ms
        self.rate.add(len(observations))
        streams = self.streams
        for obs in observations:
            st = streams.get(obs.stream)
            if st is None:
                st = self._new_stream(obs, now)
                if st is None:
                    continue
            st.count += 1
            st.updated = now
            if obs.phenomenon_ms >= st.latest.phenomenon_ms:
                st.latest = obs
            at_ms = obs.phenomenon_ms
            # Sampled by phenomenon time, so a node replaying an hour of stored values fills an
            # hour of history; a value stamped in the future (a wrong clock) is not history.
            if horizon_ms >= at_ms >= st.next_sample_ms:
                st.next_sample_ms = at_ms + sample_ms
                self._track_flags(st, obs.quality, at_ms)
                self._bucket(st, at_ms, obs.result)
            elif at_ms < st.next_sample_ms - 2 * sample_ms:  # older than what we have: a replay
                self._bucket(st, at_ms, obs.result)

    def _new_stream(self, obs: Observation, now: float) -> StreamState | None:
        if len(self.streams) >= self.max_streams:
            self.dropped_streams += 1
            return None
        st = StreamState(obs.stream.sensor_id, obs.stream.quantity_code, obs, now)
        self.streams[obs.stream] = st
        self._by_key[(st.sensor, st.quantity)] = st
        return st

    @staticmethod
    def _track_flags(st: StreamState, quality: Quality | None, at_ms: int) -> None:
        """Remember since when each test has flagged this stream without interruption."""
        if quality is None:
            st.flagged_since.clear()
            return
        for test, flag in quality.tests.items():
            if flag in (QC_PASS, QC_NOT_EVALUATED):
                st.flagged_since.pop(test, None)
            else:
                st.flagged_since.setdefault(test, at_ms)
        for test in [t for t in st.flagged_since if t not in quality.tests]:
            del st.flagged_since[test]

    def _bucket(self, st: StreamState, at_ms: int, value: float) -> None:
        if value != value:  # NaN
            return
        start = at_ms - at_ms % self.bucket_ms
        buckets = st.buckets
        if buckets and buckets[-1].start_ms == start:
            buckets[-1].add(value)
            return
        if buckets and start < buckets[-1].start_ms:  # a late or replayed value
            if start < buckets[-1].start_ms - self.history_ms:
                return
            i = bisect_left(buckets, start, key=_bucket_start)
            if buckets[i].start_ms == start:
                buckets[i].add(value)
            elif len(buckets) < self.max_buckets:
                buckets.insert(i, Bucket(start, value, 1, value, value))
            elif i > 0:  # full: the oldest bucket makes room for this newer one
                buckets.popleft()
                buckets.insert(i - 1, Bucket(start, value, 1, value, value))
            return
        buckets.append(Bucket(start, value, 1, value, value))
        while len(buckets) > self.max_buckets or (
            buckets and buckets[0].start_ms < start - self.history_ms
        ):
            buckets.popleft()

    # ------------------------------------------------------------------ reading
    def stream(self, sensor: str, quantity: str) -> StreamState | None:
        return self._by_key.get((sensor, quantity))

    def last_data_ms(self, sensor: str) -> int | None:
        times = [s.updated for s in self.streams.values() if s.sensor == sensor]
        return int(max(times) * 1000) if times else None
