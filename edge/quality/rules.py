"""QARTOD-style rule tests with small per-datastream state, evaluated one value at a time.

All tests are causal (they see only the past), because the gateway flags an observation
before it is uploaded. Where QARTOD's spike test compares a value with its two neighbours,
ours compares it with the median of the previous ``spike_window`` accepted values, scaled by
a running robust spread (mean absolute deviation from that median): a one-sample look-ahead
would delay every upload, and the median makes the test immune to the spike itself.

Flags follow the QARTOD scale (edge.model.QC_*). Test names used on the wire:
``gross_range``, ``climatology``, ``spike``, ``rate_of_change``, ``flat_line``, ``gap``
(informational: 9 = values are missing *before* this one; not folded into the aggregate),
``pm_order``, ``pm_cf1``, ``colocated``, ``colocated_drift``, ``ml_anomaly``.
"""

from __future__ import annotations

import math
import struct
from collections import deque

from edge.model import QC_FAIL, QC_NOT_EVALUATED, QC_PASS, QC_SUSPECT
from edge.quality.settings import ColocatedPair, QuantityThresholds

_NEG_INF = -math.inf
_POS_INF = math.inf
_SCALE_ALPHA = 0.02  # weight of a new deviation in the running spread
_SCALE_WARMUP = 8  # deviations averaged before the spike test evaluates
_STEP_CAP = 4.0  # largest CUSUM step, in spreads
_SUM_CAP = 1.25  # CUSUM ceiling, in multiples of the alarm threshold
FLAT_FACTOR = 2.0  # a run is stuck beyond this many times the longest ordinary run lately
_RUNS_LEARNED = 20  # ended runs before the learned length applies
_RETURN_WITHIN = 10  # × spike_accept: values after a re-anchoring that a return is recognised
_DAY_MS = 86_400_000
_RULES_HEAD = struct.Struct("<qqBqqqqqBBB")


class StreamRules:
    """Per-datastream rule state: recent accepted values, flat-line run, timing.

    The spike test re-anchors after a sustained level change: when ``spike_accept`` values in a
    row are flagged on the same side of the median and agree with each other, they become the
    new reference (a step is flagged for those few values, then accepted). The flat-line test
    learns how long the stream's ordinary runs of repeated values get (the longest of the
    last days): a run is stuck only when it is longer than the configured counts *and*
    ``FLAT_FACTOR`` times that length, so a quantised stream that legitimately repeats is not
    flat-lined while a sensor that stops changing still is.
    """

    __slots__ = (
        "_clim", "_fail_max", "_fail_min", "_flat_fail", "_flat_max", "_flat_min",
        "_flat_suspect", "_flat_tol", "_gap_factor", "_roc_max", "_spike_accept",
        "_spike_fail", "_spike_min", "_spike_suspect", "_susp_max", "_susp_min", "before",
        "before_age", "flat_count",
        "flat_flag", "flat_value", "last_ms", "last_value", "longest_ms", "longest_run",
        "n_dev", "pending", "recent", "runs_seen", "scale", "typical_dt_ms",
    )

    def __init__(self, th: QuantityThresholds) -> None:
        self._fail_min = _NEG_INF if th.fail_min is None else th.fail_min
        self._fail_max = _POS_INF if th.fail_max is None else th.fail_max
        self._susp_min = _NEG_INF if th.suspect_min is None else th.suspect_min
        self._susp_max = _POS_INF if th.suspect_max is None else th.suspect_max
        self._clim: dict[int, tuple[float, float]] = {}
        for rng in th.climatology:
            for month in rng.months:
                self._clim[month] = (rng.min, rng.max)
        self._spike_suspect = th.spike_suspect
        self._spike_fail = th.spike_fail
        self._spike_min = th.spike_min_abs
        self._spike_accept = th.spike_accept
        self._roc_max = th.rate_of_change_max
        self._flat_tol = th.flat_line_tolerance
        self._flat_suspect = th.flat_line_suspect
        self._flat_fail = th.flat_line_fail
        self._flat_min = _NEG_INF if th.flat_line_min_level is None else th.flat_line_min_level
        self._flat_max = _POS_INF if th.flat_line_max_level is None else th.flat_line_max_level
        self._gap_factor = th.gap_factor
        self.recent: deque[float] = deque(maxlen=th.spike_window)
        self.pending: list[float] = []  # spike-flagged values in a row on one side
        self.before: list[float] = []  # the reference replaced by the last re-anchoring
        self.before_age = 0  # values for which a return to ``before`` is still recognised
        self.scale = 0.0
        self.n_dev = 0
        self.flat_value = math.nan
        self.flat_count = 0
        self.flat_flag = QC_PASS  # worst flat-line flag of the current run
        self.longest_run = 0  # longest ordinary run lately (halving every day)
        self.longest_ms = 0
        self.runs_seen = 0
        self.last_value = math.nan
        self.last_ms: int | None = None
        self.typical_dt_ms = 0.0

    @property
    def has_climatology(self) -> bool:
        return bool(self._clim)

    def check(
        self, x: float, ms: int, month: int, tests: dict[str, int], scores: dict[str, float]
    ) -> int:
        """Run every single-stream test on ``x`` at ``ms``; fill ``tests``; return the worst flag.

        ``month`` is 1-12 (UTC), for the climatology test. A non-finite ``x`` fails gross range.
        """
        worst = QC_PASS
        if not math.isfinite(x):
            tests["gross_range"] = QC_FAIL
            return QC_FAIL
        # gross range
        if x < self._fail_min or x > self._fail_max:
            gross = QC_FAIL
        elif x < self._susp_min or x > self._susp_max:
            gross = QC_SUSPECT
        else:
            gross = QC_PASS
        tests["gross_range"] = gross
        worst = gross
        # climatology
        if self._clim:
            rng = self._clim.get(month)
            if rng is None:
                tests["climatology"] = QC_NOT_EVALUATED
            elif x < rng[0] or x > rng[1]:
                tests["climatology"] = QC_SUSPECT
                worst = max(worst, QC_SUSPECT)
            else:
                tests["climatology"] = QC_PASS
        # time-based tests
        last_ms = self.last_ms
        dt_ms = ms - last_ms if last_ms is not None else 0
        if dt_ms > 0:
            typical = self.typical_dt_ms
            if typical > 0 and dt_ms > self._gap_factor * typical:
                tests["gap"] = 9
                scores["gap_s"] = dt_ms / 1000.0
            elif typical > 0:
                self.typical_dt_ms = 0.9 * typical + 0.1 * dt_ms
            else:
                self.typical_dt_ms = float(dt_ms)
            if self._roc_max is not None:
                rate = abs(x - self.last_value) * 1000.0 / dt_ms
                if rate > self._roc_max:
                    tests["rate_of_change"] = QC_SUSPECT
                    worst = max(worst, QC_SUSPECT)
                else:
                    tests["rate_of_change"] = QC_PASS
        worst = max(worst, self._spike(x, tests, gross))
        worst = max(worst, self._flat_line(x, ms, tests))
        self.last_value = x
        self.last_ms = ms
        return worst

    def _spike(self, x: float, tests: dict[str, int], gross: int) -> int:
        recent = self.recent
        n = len(recent)
        if n < 3:
            if gross != QC_FAIL:
                recent.append(x)
            tests["spike"] = QC_NOT_EVALUATED
            return QC_PASS
        ordered = sorted(recent)
        median = ordered[n // 2]
        dev = abs(x - median)
        flag = QC_PASS
        if self.n_dev >= _SCALE_WARMUP:
            scale = self.scale
            if dev > self._spike_min:
                if dev > self._spike_fail * scale:
                    flag = QC_FAIL
                elif dev > self._spike_suspect * scale:
                    flag = QC_SUSPECT
            if flag == QC_PASS:
                self.scale = scale + _SCALE_ALPHA * (min(dev, 4.0 * scale) - scale)
            tests["spike"] = flag
        else:
            self.n_dev += 1
            self.scale += (dev - self.scale) / self.n_dev
            tests["spike"] = QC_NOT_EVALUATED
        if flag != QC_PASS and self._returns(x):
            flag = QC_PASS  # back at the level it had before the last re-anchoring
            tests["spike"] = flag
        if self.before_age:
            self.before_age -= 1
        if flag == QC_PASS:
            self.pending.clear()
            if gross != QC_FAIL:
                recent.append(x)
        elif gross != QC_FAIL:
            self._maybe_reanchor(x, median, dev)
        return flag

    def _returns(self, x: float) -> bool:
        """True when ``x`` is back at the reference replaced by a recent re-anchoring (the
        "new level" was a fault of a few values after all): that reference is restored."""
        if not self.before_age:
            return False
        before = sorted(self.before)
        if abs(x - before[len(before) // 2]) > self._spike_suspect * self.scale:
            return False
        self.recent.clear()
        self.recent.extend(self.before)
        self.before_age = 0
        return True

    def _maybe_reanchor(self, x: float, median: float, dev: float) -> None:
        """Accept a new level once ``spike_accept`` flagged values in a row agree on it."""
        pending = self.pending
        if pending and (pending[-1] > median) != (x > median):
            pending.clear()  # the other side: a new run
        pending.append(x)
        if len(pending) < self._spike_accept:
            return
        spread = max(pending) - min(pending)
        if spread <= 0.5 * dev:  # a plateau, not scattered glitches: the new reference
            self.before = list(self.recent)
            self.before_age = _RETURN_WITHIN * self._spike_accept
            self.recent.clear()
            self.recent.extend(pending)
            pending.clear()
        else:
            del pending[0]

    def _flat_line(self, x: float, ms: int, tests: dict[str, int]) -> int:
        if abs(x - self.flat_value) <= self._flat_tol:
            self.flat_count += 1
        else:
            self._run_ended(ms)
            self.flat_value = x
            self.flat_count = 1
        count = self.flat_count
        suspect_at, fail_at = self._flat_thresholds()
        flag = QC_PASS
        if count >= suspect_at and self._flat_min < x < self._flat_max:
            flag = QC_FAIL if count >= fail_at else QC_SUSPECT
            self.flat_flag = flag
        tests["flat_line"] = flag
        return flag

    def _flat_thresholds(self) -> tuple[int, int]:
        """Run lengths from which a run is suspect / fails, for this stream's habits.

        A run must be longer than the configured counts *and* ``FLAT_FACTOR`` times the
        longest ordinary run of the last days (a quantised, slowly varying stream repeats
        values for long: whole µg/m³ at a clean site, a slow temperature at 0.1 °C). Until
        ``_RUNS_LEARNED`` runs have ended, twice that factor times the configured fail count.
        """
        suspect, fail = self._flat_suspect, self._flat_fail
        if self.runs_seen < _RUNS_LEARNED:
            learned = math.ceil(2 * FLAT_FACTOR * max(self.longest_run, fail))
        else:
            learned = math.ceil(FLAT_FACTOR * self.longest_run)
        return max(suspect, learned), max(fail, learned * fail // suspect)

    def _run_ended(self, ms: int) -> None:
        count = self.flat_count
        if self.flat_flag >= QC_SUSPECT:
            # a stuck run just ended: its values are no reference for the spike test
            self.recent.clear()
        if count >= 1 and self.flat_flag != QC_FAIL:
            # an ordinary run (or a merely suspect one) teaches how long runs get; the longest
            # is remembered, halving every day
            held = self.longest_run
            if held and ms > self.longest_ms:
                held = int(held * 0.5 ** ((ms - self.longest_ms) / _DAY_MS))
            if count >= held:
                self.longest_run = count
                self.longest_ms = ms
            if self.runs_seen < _RUNS_LEARNED:
                self.runs_seen += 1
        self.flat_flag = QC_PASS

    # ------------------------------------------------------------------ durable state
    def to_bytes(self) -> bytes:
        """The learned state (exact), for the stage's checkpoints."""
        floats = [self.scale, self.flat_value, self.last_value, self.typical_dt_ms,
                  *self.recent, *self.pending, *self.before]
        return _RULES_HEAD.pack(
            self.n_dev, self.flat_count, self.flat_flag, self.runs_seen, self.longest_run,
            self.longest_ms, -1 if self.last_ms is None else self.last_ms, self.before_age,
            len(self.recent), len(self.pending), len(self.before),
        ) + struct.pack(f"<{len(floats)}d", *floats)

    def restore(self, data: bytes) -> None:
        """Load a state written by :meth:`to_bytes`; ValueError if it does not fit."""
        (self.n_dev, self.flat_count, self.flat_flag, self.runs_seen, self.longest_run,
         self.longest_ms, last_ms, self.before_age, n_recent, n_pending,
         n_before) = _RULES_HEAD.unpack_from(data)
        floats = struct.unpack_from(f"<{4 + n_recent + n_pending + n_before}d", data,
                                    _RULES_HEAD.size)
        window = self.recent.maxlen or 0
        if n_recent > window or n_before > window or n_pending > self._spike_accept:
            raise ValueError("rule state does not fit these thresholds")
        self.last_ms = None if last_ms < 0 else last_ms
        self.scale, self.flat_value, self.last_value, self.typical_dt_ms = floats[:4]
        self.recent.clear()
        self.recent.extend(floats[4 : 4 + n_recent])
        self.pending = list(floats[4 + n_recent : 4 + n_recent + n_pending])
        self.before = list(floats[4 + n_recent + n_pending :])


class PairState:
    """Co-located pair: instantaneous agreement plus a two-sided CUSUM on the log-ratio.

    The first ``drift_warmup`` comparisons give the pair's normal log-ratio (median) and
    spread (1.4826 × MAD); the CUSUM then runs on the standardised log-ratio, so its
    threshold and slack are in units of that spread and need no per-quantity tuning.
    """

    __slots__ = ("base", "cfg", "last_a", "last_b", "n", "neg", "pos", "spread", "warm")

    def __init__(self, cfg: ColocatedPair) -> None:
        self.cfg = cfg
        self.last_a: tuple[float, int] | None = None
        self.last_b: tuple[float, int] | None = None
        self.n = 0
        self.base = 0.0
        self.pos = 0.0
        self.neg = 0.0
        self.spread = 1.0
        self.warm: list[float] = []

    def update(self, is_a: bool, x: float, ms: int, tests: dict[str, int],
               integrate: bool = True) -> int:
        """Record ``x`` for side a or b and compare with the other side's latest value.

        ``integrate=False`` (the value already failed another test, e.g. a stuck run) keeps
        it out of the drift sum and halves the sum: the CUSUM is for slow drift that no other
        test explains.
        """
        if is_a:
            self.last_a = (x, ms)
            other = self.last_b
        else:
            self.last_b = (x, ms)
            other = self.last_a
        cfg = self.cfg
        if other is None or abs(ms - other[1]) > cfg.max_dt_s * 1000.0:
            tests["colocated"] = QC_NOT_EVALUATED
            return QC_PASS
        a, b = (x, other[0]) if is_a else (other[0], x)
        diff = abs(a - b)
        worst = QC_PASS
        if diff > cfg.abs_tolerance and diff > cfg.rel_tolerance * 0.5 * abs(a + b):
            tests["colocated"] = QC_SUSPECT
            worst = QC_SUSPECT
        else:
            tests["colocated"] = QC_PASS
        if not is_a:
            # the drift sum takes one step per sample of sensor_a; sensor_b's samples carry
            # the current alarm state (a pair drifting apart cannot say which one moved)
            if self.n < cfg.drift_warmup:
                tests["colocated_drift"] = QC_NOT_EVALUATED
                return worst
            alarm = max(self.pos, self.neg) > cfg.drift_threshold
            tests["colocated_drift"] = QC_SUSPECT if alarm else QC_PASS
            return max(worst, QC_SUSPECT) if alarm else worst
        if not integrate:
            # another test explains this disagreement: halve the drift evidence so a stuck
            # or spiking episode does not leave a drift alarm behind once it is over
            self.pos *= 0.5
            self.neg *= 0.5
            tests["colocated_drift"] = QC_NOT_EVALUATED
            return worst
        floor = cfg.ratio_floor
        ratio = math.log((max(a, 0.0) + floor) / (max(b, 0.0) + floor))
        if self.n < cfg.drift_warmup:
            self.n += 1
            self.warm.append(ratio)
            if self.n == cfg.drift_warmup:
                ordered = sorted(self.warm)
                self.base = ordered[len(ordered) // 2]
                mad = sorted(abs(r - self.base) for r in ordered)[len(ordered) // 2]
                self.spread = max(1.4826 * mad, 1e-3)
                self.warm.clear()
            tests["colocated_drift"] = QC_NOT_EVALUATED
            return worst
        # winsorised steps (a spike moves the sum by at most _STEP_CAP) and a capped sum (it
        # recovers within a few samples once the pair agrees again)
        r = min(_STEP_CAP, max(-_STEP_CAP, (ratio - self.base) / self.spread))
        cap = _SUM_CAP * cfg.drift_threshold
        self.pos = min(cap, max(0.0, self.pos + r - cfg.drift_slack))
        self.neg = min(cap, max(0.0, self.neg - r - cfg.drift_slack))
        if self.pos > cfg.drift_threshold or self.neg > cfg.drift_threshold:
            tests["colocated_drift"] = QC_SUSPECT
            worst = QC_SUSPECT
        else:
            tests["colocated_drift"] = QC_PASS
        return worst
