"""Per-interval traffic aggregation of radar object detections into Telraam-compatible fields.

Pure code: no I/O, no clock (times are passed in). Input is a list of object detections (from
the OPS243 ``ON`` per-object reports, see :mod:`edge.sensors.ops243.codec`); output per interval:

- counts per class and direction: ``pedestrian``, ``bike``, ``car``, ``heavy``, each with
  ``_lft`` / ``_rgt``, and ``traffic_count`` (all classes);
- ``car_speed_hist_0to120plus``: percent of cars per 10 km/h bin (13 bins, the last 120+) and
  ``car_speed_hist_0to70plus`` (8 bins), as Telraam publishes them;
- ``v85``: the speed 85 % of cars do not exceed (linear interpolation between ranks);
- ``uptime``: the fraction of the interval the radar was actually counting.

Honesty about classes: a Doppler speed radar measures speed, not shape, so the class is a
heuristic. By default pedestrians are objects slower than 7 km/h, two-wheelers ("bike") 7 to
27 km/h, and everything faster a ``car``. ``heavy`` is only assigned when the radar also reports
an object length (``OC`` mode) of at least 7.5 m; without length nothing is called heavy. A fast
cyclist counts as a car, a car in a traffic jam as a bike or pedestrian. All thresholds are
settings (:class:`TrafficSettings`) and go into the documentation of each deployment.

Directions: the radar reports ``inbound`` (approaching) / ``outbound``; which Telraam side
(``lft``/``rgt``) that is depends on how the radar is mounted, hence ``inbound_side``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.codec import Frame, Reading

Side = Literal["lft", "rgt"]
CLASSES = ("pedestrian", "bike", "car", "heavy")
HIST_BINS_120 = 13  # 0-10, …, 110-120, 120+
HIST_BINS_70 = 8  # 0-10, …, 60-70, 70+


class TrafficSettings(BaseModel):
    """How radar detections become Telraam-style counts (config section for a radar source)."""

    model_config = ConfigDict(extra="forbid")

    interval_s: float = Field(900.0, gt=0, description="Aggregation interval in seconds "
                              "(Telraam devices use 900 s = 15 min).")
    inbound_side: Side = Field("lft", description="Telraam side ('lft' or 'rgt') of objects the "
                               "radar reports as inbound (approaching); outbound is the other.")
    pedestrian_max_kmh: float = Field(7.0, gt=0, description="Objects slower than this are "
                                      "counted as pedestrians.")
    bike_max_kmh: float = Field(27.0, gt=0, description="Objects from pedestrian_max_kmh up to "
                                "this speed are counted as two-wheelers ('bike').")
    heavy_min_length_m: float = Field(7.5, gt=0, description="Objects faster than bike_max_kmh "
                                      "with a reported length of at least this are 'heavy'.")
    min_speed_kmh: float = Field(1.0, ge=0, description="Detections slower than this are "
                                 "treated as clutter and ignored.")
    merge_gap_s: float = Field(1.0, ge=0, description="Per-object reports in the same direction "
                               "closer than this are one object (the radar repeats a report "
                               "when it sees a higher speed).")

    @model_validator(mode="after")
    def _bands_ordered(self) -> TrafficSettings:
        if not self.pedestrian_max_kmh < self.bike_max_kmh:
            raise ValueError(
                f"pedestrian_max_kmh ({self.pedestrian_max_kmh}) must be below "
                f"bike_max_kmh ({self.bike_max_kmh})"
            )
        return self


@dataclass(frozen=True, slots=True)
class Detection:
    """One object seen by the radar."""

    t: float  # seconds (epoch), when the object was reported
    speed_kmh: float  # absolute speed
    side: Side
    length_m: float | None = None


def other_side(side: Side) -> Side:
    return "rgt" if side == "lft" else "lft"


def detection_from_frame(frame: Frame, t: float, inbound_side: Side = "lft") -> Detection | None:
    """A :class:`Detection` from an OPS243 per-object frame (``None`` for anything else)."""
    if frame.kind != "data" or not frame.info.get("object") or not frame.readings:
        return None
    speed = next((r.value for r in frame.readings if r.quantity == "speed"), None)
    if speed is None:
        return None
    side = inbound_side if frame.info.get("direction") != "outbound" else other_side(inbound_side)
    length = frame.info.get("length_m")
    return Detection(t, abs(speed), side, float(length) if isinstance(length, int | float) else None)


def merge_reports(reports: Sequence[Detection], gap_s: float) -> list[Detection]:
    """Fold repeated reports of one object (same side, < ``gap_s`` apart) into its max speed."""
    out: list[Detection] = []
    last: dict[Side, int] = {}
    for d in sorted(reports, key=lambda d: d.t):
        i = last.get(d.side)
        if i is not None and d.t - out[i].t < gap_s:
            prev = out[i]
            length = max((x for x in (prev.length_m, d.length_m) if x is not None), default=None)
            out[i] = Detection(d.t, max(prev.speed_kmh, d.speed_kmh), d.side, length)
            continue
        last[d.side] = len(out)
        out.append(d)
    return out


def classify(d: Detection, s: TrafficSettings) -> str:
    """Heuristic class from speed (and length if known); see the module docstring."""
    if d.speed_kmh < s.pedestrian_max_kmh:
        return "pedestrian"
    if d.speed_kmh <= s.bike_max_kmh:
        return "bike"
    if d.length_m is not None and d.length_m >= s.heavy_min_length_m:
        return "heavy"
    return "car"


def percentile(values: Sequence[float], p: float) -> float | None:
    """Linear-interpolated percentile (``p`` in 0..100) of ``values``; None if empty."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def speed_histogram(speeds: Sequence[float], bins: int) -> tuple[float, ...]:
    """Percent of ``speeds`` per 10 km/h bin; the last bin is open-ended. All zero if empty."""
    counts = [0] * bins
    for v in speeds:
        counts[min(int(v // 10), bins - 1)] += 1
    n = len(speeds)
    return tuple(100.0 * c / n if n else 0.0 for c in counts)


@dataclass(frozen=True, slots=True)
class TrafficInterval:
    """Telraam-compatible aggregate of one interval ``[start, start + interval_s)``."""

    start: float
    interval_s: float
    uptime: float
    counts: dict[str, int]
    car_speed_hist_0to120plus: tuple[float, ...]
    car_speed_hist_0to70plus: tuple[float, ...]
    v85: float | None
    detections: int = 0
    settings: TrafficSettings = field(default_factory=TrafficSettings, repr=False)

    def telraam(self) -> dict[str, object]:
        """The interval as a dict with Telraam's field names (date = UTC start, ISO 8601)."""
        from datetime import UTC, datetime

        out: dict[str, object] = {
            "date": datetime.fromtimestamp(self.start, UTC).isoformat().replace("+00:00", "Z"),
            "interval": "quarterly" if self.interval_s == 900 else f"{self.interval_s:g}s",
            "uptime": self.uptime,
        }
        out.update(self.counts)
        out["car_speed_hist_0to70plus"] = list(self.car_speed_hist_0to70plus)
        out["car_speed_hist_0to120plus"] = list(self.car_speed_hist_0to120plus)
        out["v85"] = self.v85
        return out

    def readings(self) -> list[Reading]:
        """One reading per quantity code in :mod:`edge.quantities` (counts, histogram, v85...)."""
        out = [Reading(code, float(n)) for code, n in self.counts.items()]
        out += [Reading(f"car_speed_hist_{10 * i}", pct)
                for i, pct in enumerate(self.car_speed_hist_0to120plus)]
        if self.v85 is not None:
            out.append(Reading("v85", self.v85))
        out.append(Reading("uptime", self.uptime))
        return out


def aggregate(
    detections: Iterable[Detection],
    start: float,
    settings: TrafficSettings | None = None,
    counting_s: float | None = None,
) -> TrafficInterval:
    """Aggregate the detections that fall in ``[start, start + settings.interval_s)``.

    ``counting_s`` is how long the radar was connected and reporting within the interval
    (default: all of it); it becomes ``uptime``.
    """
    s = settings or TrafficSettings()
    end = start + s.interval_s
    inside = [d for d in detections if start <= d.t < end and d.speed_kmh >= s.min_speed_kmh]
    objects = merge_reports(inside, s.merge_gap_s)
    counts: dict[str, int] = {}
    for cls in CLASSES:
        counts[cls] = 0
        counts[f"{cls}_lft"] = 0
        counts[f"{cls}_rgt"] = 0
    car_speeds: list[float] = []
    for d in objects:
        cls = classify(d, s)
        counts[cls] += 1
        counts[f"{cls}_{d.side}"] += 1
        if cls == "car":
            car_speeds.append(d.speed_kmh)
    counts["traffic_count"] = len(objects)
    uptime = 1.0 if counting_s is None else max(0.0, min(1.0, counting_s / s.interval_s))
    v85 = percentile(car_speeds, 85.0)
    return TrafficInterval(
        start=start,
        interval_s=s.interval_s,
        uptime=uptime,
        counts=counts,
        car_speed_hist_0to120plus=speed_histogram(car_speeds, HIST_BINS_120),
        car_speed_hist_0to70plus=speed_histogram(car_speeds, HIST_BINS_70),
        v85=round(v85, 2) if v85 is not None else None,
        detections=len(inside),
        settings=s,
    )


class TrafficAggregator:
    """Stateful helper for a radar source: add detections and connected time, close intervals.

    Intervals are aligned to multiples of ``interval_s`` (epoch seconds), like Telraam's
    quarter hours. ``close_until(now)`` returns every interval that ended before ``now``,
    including empty ones with their (possibly zero) uptime, so gaps are visible as
    ``uptime < 1`` rather than as missing rows.
    """

    def __init__(self, settings: TrafficSettings | None = None) -> None:
        self.settings = settings or TrafficSettings()
        self._pending: list[Detection] = []
        self._counting: dict[float, float] = {}  # interval start -> counted seconds
        self._next_start: float | None = None

    def _start_of(self, t: float) -> float:
        step = self.settings.interval_s
        return math.floor(t / step) * step

    def add(self, detection: Detection) -> None:
        if self._next_start is None:
            self._next_start = self._start_of(detection.t)
        if detection.t >= self._next_start:
            self._pending.append(detection)

    def counted(self, t0: float, t1: float) -> None:
        """Record that the radar was connected and reporting from ``t0`` to ``t1``."""
        if self._next_start is None:
            self._next_start = self._start_of(t0)
        step = self.settings.interval_s
        t = t0
        while t < t1:
            start = self._start_of(t)
            seg_end = min(t1, start + step)
            self._counting[start] = self._counting.get(start, 0.0) + (seg_end - t)
            t = seg_end

    def close_until(self, now: float) -> list[TrafficInterval]:
        out: list[TrafficInterval] = []
        if self._next_start is None:
            return out
        step = self.settings.interval_s
        while self._next_start + step <= now:
            start = self._next_start
            out.append(aggregate(self._pending, start, self.settings,
                                 self._counting.pop(start, 0.0)))
            self._pending = [d for d in self._pending if d.t >= start + step]
            self._next_start = start + step
        return out
