"""The learned online anomaly detector: one per datastream, no labels, constant time and memory.

``StreamDetector.update(x, t_ms)`` learns from one value and returns its anomaly score in
[0, 1]; ``alarm`` is ``score >= threshold``. The score is the largest of three parts
(docs/quality.md, "Anomaly score", explains each with its origin in the published detectors):

1. **Point** — how far ``x`` is from what the stream was doing: the distance to the nearer of
   a smoothed level and the last ordinary value, scored against the learned tail of that
   distance (90th and 99th percentiles, extrapolated exponentially: 0.5 is a distance the
   stream shows about once in 100 000 values). Surprising values do not move the level unless
   ``ACCEPT`` of them come in a row on one side: a real step is accepted after a few values, a
   short glitch never becomes "normal", and a return to the previous level is no surprise.
2. **Likelihood** (after Numenta's anomaly likelihood) — a per-value *surprise* in [0, 1] (the
   largest of: twice the point score; contexts never seen lately — the value's level bin and
   its last two- and three-bin shapes, in a two-generation bit set; a burst of larger steps
   than usual; a run of identical values more than twice as long as any seen lately; a value
   far from the usual one at this hour of the day). The mean surprise of the last ``SHORT``
   values is compared with the long-run distribution of that mean (exponentially weighted,
   ~``LONG`` values); its Gaussian tail probability ``q`` gives the score ``log(q)/log(1e-10)``.
3. **Range** (after the spatial-anomaly rule of Numenta's NAB detector) — a value beyond the
   range of the last two to four weeks by more than 5 % of that range (and three deviation
   scales) scores 1.0, until ``ACCEPT`` such values in a row make it part of the range.

One anomaly episode raises one alarm: a score of 0.5 or more within ``QUIET`` values of the
previous one is reported as 0.3 (the "yellow" level, ``q = 1e-3``). During the first
``warmup`` values the detector learns and reports 0.0.

The state is a fixed set of numbers and two 4096-bit sets (``STATE_BYTES``, under 2 KiB);
:meth:`to_bytes` / :meth:`from_bytes` round-trip it exactly, so a restarted gateway continues
the score sequence it would have produced. Values that are not finite or beyond ±1e100 are
never learned from (the rules flag them) and score 1.0 once warm.
"""

from __future__ import annotations

import math
import struct

# likelihood
SHORT = 10  # values in the short-term mean of the surprise
LONG = 2000  # horizon (values) of the long-run distribution of that mean
MEAN_FLOOR = 0.03  # lower bounds of that distribution: a nearly silent stream must not
VAR_FLOOR = 0.0003  # turn its first small surprise into an alarm
LOG_Q_FLOOR = 1e-10  # the score saturates at q = 1e-10 (score 1.0)
# episodes
RED = 0.5  # a red score: about 1 in 100 000
YELLOW = math.log(1e-3) / math.log(LOG_Q_FLOOR)  # 0.3: the rest of an episode
QUIET = 10  # values below red that end an episode
# point
LEVEL_ALPHA = 0.2  # weight of an ordinary value in the smoothed level
QUANTILE_RATE = 0.01  # steady step of the two quantile trackers (faster while n < 100)
SURPRISE_RATE = 0.2  # surprising values move the trackers five times more slowly
SURPRISING = 0.3  # point score above which a value does not move the level
ACCEPT = 3  # surprising values in a row on one side that make a new level (or range)
STEP_ALPHA = 0.01  # weight of a non-zero step in the resolution estimate
# surprise parts
STUCK_SURPRISE = 0.5
VOL_SHORT, VOL_LONG = 0.1, 0.005  # weights of the short/long mean absolute step
VOL_RATIO = 4.0  # short/long step ratio where volatility starts to surprise
NOVELTY = (0.3, 0.1, 0.05)  # surprise of a new level bin, 2-bin shape, 3-bin shape
LEVELS = 12  # level bins across the learned range
BITS = 4096  # bits per generation of the context memory
GENERATION = 2000  # new contexts per generation (memory: the last one to two generations)
DAILY_DAYS = 7  # memory of the hour-of-day profile, in days
DAILY_AFTER_MS = 2 * 86_400_000  # the profile scores once the stream is two days old
DAILY_CAP = 6.0  # residuals are winsorised at this many mean absolute deviations
DAILY_LOW, DAILY_GAIN = 0.2, 3.0  # profile score → surprise: 0 below 0.2, then ×3
# range
EPOCH_MS = 14 * 86_400_000  # the range remembers the current and the previous epoch
SPATIAL_TOLERANCE = 0.05  # beyond the range by this fraction of it: never seen
HUGE = 1e100  # beyond ±HUGE a value is not learned from

FORMAT = 1
_HASH_MUL = 2654435761
_MASK = BITS - 1
_BITS_BYTES = BITS // 8
_SQRT1_2 = 1.0 / math.sqrt(2.0)
_LOG_FLOOR = math.log(LOG_Q_FLOOR)
_LAPLACE = math.log10(math.e) / 10.0  # Laplace tail: score per mean absolute deviation
_HOUR_MS = 3_600_000
_FLOATS = struct.Struct("<20d")
_INTS = struct.Struct("<4q12i")
_LISTS = struct.Struct(f"<{SHORT}d24d24d24I")
_HEAD = struct.Struct("<BH")
STATE_BYTES = _HEAD.size + _FLOATS.size + _INTS.size + _LISTS.size + 2 * _BITS_BYTES


def tail_probability(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z * _SQRT1_2)


def score_of(q: float) -> float:
    """The score of a tail probability: 0 for q ≥ 1, 0.5 for 1e-5, 0.8 for 1e-8, 1 for 0."""
    if q >= 1.0:
        return 0.0
    return min(1.0, math.log(q + LOG_Q_FLOOR) / _LOG_FLOOR)


def _track(current: float, value: float, at: float, p: float, rate: float) -> float:
    """One multiplicative step of a ``p``-quantile tracker now at ``at`` (starts at ``value``)."""
    if current == 0.0:
        return value
    if value > at:
        return at * (1.0 + rate * p)
    return at * (1.0 - rate * (1.0 - p))


class StreamDetector:
    """Online anomaly detector for one datastream (see the module docstring)."""

    __slots__ = (
        "alarm", "b1", "b2", "bits_new", "bits_old", "daily_mad", "daily_mean", "daily_n",
        "dt", "epoch_ms", "excursion", "grid0", "grid_w", "hi", "hi0", "inserted", "last",
        "last_ok", "level", "lo", "lo0", "long_mean", "long_var", "max_run", "max_run0",
        "mute", "n", "out_run", "prev_level", "q90", "q99", "ring", "ring_i", "run", "score",
        "short_sum", "since_red", "start_ms", "step", "t_last", "threshold", "vol_l", "vol_s",
        "warmup",
    )

    def __init__(self, threshold: float = 0.5, warmup: int = 100) -> None:
        self.threshold = threshold
        self.warmup = warmup
        self.alarm = False
        # floats
        self.level = self.prev_level = self.last_ok = self.last = 0.0
        self.q90 = self.q99 = self.step = 0.0
        self.vol_s = self.vol_l = 0.0
        self.lo = self.hi = self.lo0 = self.hi0 = 0.0
        self.grid0 = self.grid_w = 0.0  # grid_w 0: no level grid yet
        self.long_mean = self.long_var = self.short_sum = 0.0
        self.score = self.dt = 0.0
        # ints
        self.start_ms = self.epoch_ms = self.t_last = 0
        self.n = self.since_red = 0
        self.since_red = QUIET
        self.out_run = self.excursion = 0
        self.b1 = self.b2 = self.inserted = self.mute = 0
        self.run = self.max_run = self.max_run0 = 0
        self.ring_i = 0
        # arrays
        self.ring = [0.0] * SHORT
        self.daily_mean = [0.0] * 24
        self.daily_mad = [0.0] * 24
        self.daily_n = [0] * 24
        self.bits_new = bytearray(_BITS_BYTES)
        self.bits_old = bytearray(_BITS_BYTES)

    @property
    def warm(self) -> bool:
        """True once the warm-up is over (scores and alarms are meaningful)."""
        return self.n > self.warmup

    # ------------------------------------------------------------------ the hot path
    def update(self, x: float, t_ms: int) -> float:
        """Learn from ``x`` (observed at ``t_ms``) and return its anomaly score."""
        if not -HUGE < x < HUGE:  # NaN, ±inf, absurd magnitudes: never learned from
            return self._report(1.0 if self.n > self.warmup else 0.0, episode=False)
        n = self.n = self.n + 1
        if n == 1:
            self._first(x, t_ms)
            return self._report(0.0, episode=False)
        step = abs(x - self.last)
        outside = self._range(x, t_ms)
        point = self._point(x, step)
        surprise = 2.0 * point
        for part in (self._stuck(x), self._volatility(step), self._daily(x, t_ms)):
            if part > surprise:
                surprise = part
        if self.grid_w > 0.0:
            part = self._novelty(x)
            if part > surprise:
                surprise = part
        elif n > self.warmup // 2:
            self._set_grid()
        self.last = x
        score = self._likelihood(surprise if surprise < 1.0 else 1.0)
        if point > score:
            score = point
        if n <= self.warmup:
            return self._report(0.0, episode=False)
        return self._report(1.0 if outside else score, episode=True)

    def _report(self, score: float, episode: bool) -> float:
        """One alarm per episode: a red score within QUIET values of the last is yellow."""
        if episode:
            if score >= RED:
                if self.since_red < QUIET:
                    score = min(score, YELLOW)
                self.since_red = 0
            elif self.since_red < QUIET:
                self.since_red += 1
        self.score = score
        self.alarm = score >= self.threshold
        return score

    def _first(self, x: float, t_ms: int) -> None:
        self.level = self.last = self.prev_level = self.last_ok = x
        self.lo = self.hi = self.lo0 = self.hi0 = x
        self.start_ms = self.epoch_ms = self.t_last = t_ms
        self.run = 1

    def _range(self, x: float, t_ms: int) -> bool:
        """True when ``x`` lies well beyond the remembered range (only the first of a run)."""
        lo = self.lo if self.lo < self.lo0 else self.lo0
        hi = self.hi if self.hi > self.hi0 else self.hi0
        tol = SPATIAL_TOLERANCE * (hi - lo)
        if 3.0 * self.q90 > tol:
            tol = 3.0 * self.q90
        outside = (x > hi + tol or x < lo - tol) and hi > lo
        if outside:
            self.out_run += 1
            if self.out_run < ACCEPT:  # not (yet) part of the range
                return self.out_run == 1
        else:
            self.out_run = 0
        if t_ms - self.epoch_ms >= EPOCH_MS:
            self.lo0, self.hi0 = self.lo, self.hi
            self.lo = self.hi = x
            self.epoch_ms = t_ms
            self.max_run0, self.max_run = self.max_run, 0
        elif x < self.lo:
            self.lo = x
        elif x > self.hi:
            self.hi = x
        if self.grid_w > 0.0 and (x > hi or x < lo) and max(self.hi, self.hi0) - min(
            self.lo, self.lo0
        ) > 4 * LEVELS * self.grid_w:
            self._set_grid()  # the stream now spans far more than the grid: start anew
        return outside

    def _point(self, x: float, step: float) -> float:
        """Score of the distance from ``x`` to what the stream was doing; learns level and tail.

        Tail model: ``P(d > t) = 0.01 · 10^(-(t - q99) / (q99 - q90))`` beyond the 99th
        percentile, linear in between; the score is ``-log10(P) / 10``.
        """
        if step > 0.0:
            self.step = step if self.step == 0.0 else self.step + STEP_ALPHA * (step - self.step)
        level = self.level
        q90 = self.q90
        floor = 0.5 * self.step
        if floor > q90:
            q90 = floor
        floor = 1e-12 * (abs(level) + 1.0)
        if floor > q90:
            q90 = floor
        q99 = self.q99 if self.q99 > 2.0 * q90 else 2.0 * q90
        d = x - level
        a = abs(d)
        b = abs(x - self.last_ok)
        if b < a:
            a = b
        if a <= q90:
            score = 0.0
        elif a <= q99:
            score = (a - q90) / (q99 - q90) / 10.0
        else:
            score = min(1.0, 0.2 + (a - q99) / (q99 - q90) / 10.0)
        surprising = score > SURPRISING
        if surprising and abs(x - self.prev_level) <= q90:
            # back to where the stream was before the last accepted jump: no surprise
            self.level, self.prev_level = x, level
            self.last_ok = x
            self.excursion = 0
            return 0.0
        rate = 1.0 / self.n if self.n * QUANTILE_RATE < 1.0 else QUANTILE_RATE
        if surprising:
            rate *= SURPRISE_RATE
        self.q90 = _track(self.q90, a, q90, 0.9, rate)
        self.q99 = _track(self.q99, a, q99, 0.99, rate)
        if not surprising:
            self.excursion = 0
            self.level = level + LEVEL_ALPHA * d
            self.last_ok = x
            return score
        side = 1 if d > 0.0 else -1
        self.excursion = self.excursion + side if self.excursion * side > 0 else side
        if abs(self.excursion) >= ACCEPT:  # a new level: accepted
            self.prev_level, self.level = level, x
            self.last_ok = x
            self.excursion = 0
        return score

    def _volatility(self, step: float) -> float:
        """Surprise of a burst of larger steps than usual (noise, oscillation)."""
        self.vol_s += VOL_SHORT * (step - self.vol_s)
        self.vol_l += VOL_LONG * (step - self.vol_l)
        base = self.vol_l if self.vol_l > 0.5 * self.step else 0.5 * self.step
        if base <= 0.0:
            return 0.0
        ratio = self.vol_s / base
        if ratio <= VOL_RATIO:
            return 0.0
        return min(1.0, (ratio - VOL_RATIO) / (3.0 * VOL_RATIO))

    def _stuck(self, x: float) -> float:
        """Surprise of a run of identical values more than twice as long as any seen lately."""
        if x == self.last:
            self.run += 1
            longest = self.max_run if self.max_run > self.max_run0 else self.max_run0
            return STUCK_SURPRISE if self.run > 2 * longest and self.run > 8 else 0.0
        if self.run > self.max_run:
            self.max_run = self.run
        self.run = 1
        return 0.0

    def _set_grid(self) -> None:
        """Fix the level bins on the current range; the context memory starts anew."""
        lo = min(self.lo, self.lo0)
        hi = max(self.hi, self.hi0)
        width = (hi - lo) / LEVELS
        self.grid0 = lo
        self.grid_w = width if width > 0.0 else max(self.step, 1e-12 * (abs(hi) + 1.0))
        if self.n > self.warmup:  # a regrid: learn the new bins' contexts quietly
            self.bits_new = bytearray(_BITS_BYTES)
            self.bits_old = bytearray(_BITS_BYTES)
            self.inserted = 0
            self.mute = GENERATION // 2

    def _novelty(self, x: float) -> float:
        """Surprise of contexts (level bin, 2- and 3-bin shapes) not seen lately."""
        b = (x - self.grid0) / self.grid_w
        b0 = 4 if b < -4.0 else LEVELS + 12 if b > LEVELS + 4.0 else int(b + 8.0)
        b1 = self.b1
        b2 = self.b2
        self.b2 = b1
        self.b1 = b0
        new = self.bits_new
        old = self.bits_old
        surprise = 0.0
        for kind, code, weight in (
            (1, b0, NOVELTY[0]),
            (2, b1 << 8 | b0, NOVELTY[1]),
            (3, (b2 << 8 | b1) << 8 | b0, NOVELTY[2]),
        ):
            h = ((kind << 24 | code) * _HASH_MUL >> 7) & _MASK
            byte = h >> 3
            bit = 1 << (h & 7)
            if not new[byte] & bit:
                if not old[byte] & bit:  # not seen in the last one to two generations
                    surprise += weight
                new[byte] |= bit  # (seen only in the old generation: still in use, kept)
                self.inserted += 1
        if self.inserted >= GENERATION:
            self.bits_old = new
            self.bits_new = bytearray(_BITS_BYTES)
            self.inserted = 0
        if self.mute > 0:
            self.mute -= 1
            return 0.0
        return surprise

    def _daily(self, x: float, t_ms: int) -> float:
        """Surprise of ``x`` against the usual value at this hour of the day (UTC).

        24 hourly slots keep an exponentially weighted mean and mean absolute deviation with
        a memory of ``DAILY_DAYS`` days at any cadence; the residual is scored with a Laplace
        tail, ``P(|r| > t) = exp(-t / mad)``, once the stream is two days old.
        """
        dt = t_ms - self.t_last
        self.t_last = t_ms
        if dt > 0:
            dt = min(dt, _HOUR_MS)
            self.dt = dt if self.dt == 0.0 else self.dt + 0.05 * (dt - self.dt)
        slot = (t_ms // _HOUR_MS) % 24
        count = self.daily_n[slot]
        mean = self.daily_mean[slot]
        mad = self.daily_mad[slot]
        r = x - mean
        score = 0.0
        if count and mad > 0.0 and t_ms - self.start_ms >= DAILY_AFTER_MS:
            score = min(1.0, abs(r) / mad * _LAPLACE)
            cap = DAILY_CAP * mad
            r = cap if r > cap else -cap if r < -cap else r
        alpha = self.dt / (DAILY_DAYS * _HOUR_MS)
        if alpha * (count + 1) < 1.0:
            alpha = 1.0 / (count + 1)
        self.daily_mean[slot] = mean + alpha * r
        self.daily_mad[slot] = mad + alpha * (abs(r) - mad)
        if count < 4_000_000_000:
            self.daily_n[slot] = count + 1
        return 0.0 if score <= DAILY_LOW else (score - DAILY_LOW) * DAILY_GAIN

    def _likelihood(self, surprise: float) -> float:
        """Score the mean surprise of the last SHORT values against its long-run distribution."""
        ring = self.ring
        i = self.ring_i
        self.short_sum += surprise - ring[i]
        ring[i] = surprise
        self.ring_i = (i + 1) % SHORT
        n = self.n
        avg = self.short_sum / (SHORT if n >= SHORT else n)
        mean = self.long_mean if self.long_mean > MEAN_FLOOR else MEAN_FLOOR
        var = self.long_var if self.long_var > VAR_FLOOR else VAR_FLOOR
        if avg <= mean:
            self._learn_long(avg, n)
            return 0.0
        q = tail_probability((avg - mean) / math.sqrt(var))
        self._learn_long(avg, n)
        return score_of(q)

    def _learn_long(self, avg: float, n: int) -> None:
        alpha = 1.0 / n if n < LONG else 1.0 / LONG
        delta = avg - self.long_mean
        self.long_mean += alpha * delta
        self.long_var = (1.0 - alpha) * (self.long_var + alpha * delta * delta)

    # ------------------------------------------------------------------ durable state
    def to_bytes(self) -> bytes:
        """The exact state in a fixed layout of ``STATE_BYTES`` bytes."""
        return b"".join((
            _HEAD.pack(FORMAT, BITS),
            _FLOATS.pack(
                self.level, self.prev_level, self.last_ok, self.last, self.q90, self.q99,
                self.step, self.vol_s, self.vol_l, self.lo, self.hi, self.lo0, self.hi0,
                self.grid0, self.grid_w, self.long_mean, self.long_var, self.short_sum,
                self.score, self.dt,
            ),
            _INTS.pack(
                self.n, self.start_ms, self.epoch_ms, self.t_last, self.since_red,
                self.out_run, self.excursion, self.b1, self.b2, self.inserted, self.mute,
                self.run, self.max_run, self.max_run0, self.ring_i, self.warmup,
            ),
            _LISTS.pack(*self.ring, *self.daily_mean, *self.daily_mad, *self.daily_n),
            bytes(self.bits_new),
            bytes(self.bits_old),
        ))

    @classmethod
    def from_bytes(cls, data: bytes, threshold: float = 0.5) -> StreamDetector:
        """Restore a state written by :meth:`to_bytes`; ValueError if it is not one."""
        if len(data) != STATE_BYTES:
            raise ValueError(f"detector state is {len(data)} bytes, expected {STATE_BYTES}")
        fmt, bits = _HEAD.unpack_from(data)
        if (fmt, bits) != (FORMAT, BITS):
            raise ValueError(f"detector state format {fmt}/{bits} is not {FORMAT}/{BITS}")
        det = cls(threshold)
        at = _HEAD.size
        (det.level, det.prev_level, det.last_ok, det.last, det.q90, det.q99, det.step,
         det.vol_s, det.vol_l, det.lo, det.hi, det.lo0, det.hi0, det.grid0, det.grid_w,
         det.long_mean, det.long_var, det.short_sum, det.score, det.dt,
         ) = _FLOATS.unpack_from(data, at)
        at += _FLOATS.size
        (det.n, det.start_ms, det.epoch_ms, det.t_last, det.since_red, det.out_run,
         det.excursion, det.b1, det.b2, det.inserted, det.mute, det.run, det.max_run,
         det.max_run0, det.ring_i, det.warmup) = _INTS.unpack_from(data, at)
        at += _INTS.size
        lists = _LISTS.unpack_from(data, at)
        det.ring = list(lists[:SHORT])
        det.daily_mean = list(lists[SHORT : SHORT + 24])
        det.daily_mad = list(lists[SHORT + 24 : SHORT + 48])
        det.daily_n = list(lists[SHORT + 48 :])
        at += _LISTS.size
        det.bits_new = bytearray(data[at : at + _BITS_BYTES])
        det.bits_old = bytearray(data[at + _BITS_BYTES :])
        det.alarm = det.score >= threshold
        return det
