# OmniPreSense OPS243 radar over UART and per-interval traffic counting on the node.
#
# The radar is put in km/h, per-object reports and JSON (``UK``, ``ON``, ``OJ``); a report line
# is a signed speed (positive: inbound) or a JSON object with ``speed`` and optional
# ``direction``. The interval's fields are the ones the gateway computes for radar sources
# (edge/sensors/ops243/traffic.py, Telraam-compatible) with the same rules, so that a node and a gateway-
# attached radar produce the same observations:
# - reports slower than MIN_SPEED are clutter; repeated reports of one object (same side,
#   less than MERGE_GAP_MS after its previous report) are one object at its maximum speed;
# - class by speed: pedestrian < 7 km/h <= bike <= 27 km/h < car (a Doppler radar cannot see
#   shape; "heavy" needs a length, which per-object speed reports do not carry: always 0);
# - counts per class and side (lft/rgt), traffic_count, car_speed_hist_0..120 (percent of
#   cars per 10 km/h bin, 120+), v85 of car speeds (linear interpolation between ranks), uptime.
# Car speeds are kept in a preallocated array (CAR_CAPACITY per interval); beyond that the
# v85 is read from a 0.1 km/h-resolution histogram.
import json
from array import array

INIT_COMMANDS = (b"UK", b"ON", b"OJ")  # km/h, object max-speed reports, JSON output
CLASSES = ("pedestrian", "bike", "car", "heavy")
PEDESTRIAN_MAX = 7.0
BIKE_MAX = 27.0
MIN_SPEED = 1.0
MERGE_GAP_MS = 1000
HIST_BINS = 13  # 0-10, ..., 110-120, 120+
CAR_CAPACITY = 1024


class Counter:
    name = "ops243"
    model = "OmniPreSense OPS243-A"
    quantities = (
        "traffic_count", "pedestrian", "pedestrian_lft", "pedestrian_rgt", "bike", "bike_lft",
        "bike_rgt", "car", "car_lft", "car_rgt", "heavy", "heavy_lft", "heavy_rgt", "v85",
        "uptime", "car_speed_hist_0", "car_speed_hist_10", "car_speed_hist_20",
        "car_speed_hist_30", "car_speed_hist_40", "car_speed_hist_50", "car_speed_hist_60",
        "car_speed_hist_70", "car_speed_hist_80", "car_speed_hist_90", "car_speed_hist_100",
        "car_speed_hist_110", "car_speed_hist_120",
    )

    def __init__(self, inbound="lft"):
        self.inbound_lft = inbound == "lft"
        self.line = bytearray(96)
        self.n = 0
        # counts[class * 2 + side], side 0 = lft, 1 = rgt
        self.counts = array("H", [0] * 8)
        self.hist = array("H", [0] * HIST_BINS)
        self.cars = array("H", [0] * CAR_CAPACITY)  # car speeds in 0.1 km/h
        self.ncars = 0
        # the object being reported, per side: max speed (0.1 km/h, 0 = none), last report ms
        self.pend_speed = array("H", [0, 0])
        self.pend_ms = [0, 0]
        self.bad = 0
        self.reports = 0

    def reset(self):
        for i in range(8):
            self.counts[i] = 0
        for i in range(HIST_BINS):
            self.hist[i] = 0
        self.ncars = 0

    def feed_byte(self, b, now=0):
        """Accumulate one byte; returns True when a complete line was a speed report."""
        if b == 10 or b == 13:
            n = self.n
            self.n = 0
            if n:
                return self.parse_line(n, now)
            return False
        if self.n < len(self.line):
            self.line[self.n] = b
            self.n += 1
        return False

    def parse_line(self, n, now):
        text = bytes(self.line[:n])
        inbound = None
        try:
            if text[:1] == b"{":
                obj = json.loads(text)
                if "speed" not in obj:
                    return False  # a command reply such as {"Units":"km-h"}
                speed = float(obj["speed"])
                d = obj.get("direction")
                if d is not None:
                    inbound = d == "inbound"
            else:
                speed = float(text)
        except (ValueError, TypeError, KeyError):
            self.bad += 1
            return False
        if inbound is None:
            inbound = speed >= 0
        self.report(abs(speed), inbound, now)
        return True

    def report(self, kmh, inbound, now):
        """One per-object report at node time ``now`` (ms)."""
        tenths = int(kmh * 10 + 0.5)  # speeds are kept in 0.1 km/h steps
        if tenths < MIN_SPEED * 10:
            return
        self.reports += 1
        side = 0 if inbound == self.inbound_lft else 1
        if tenths > 65535:
            tenths = 65535
        pend = self.pend_speed[side]
        if pend and now - self.pend_ms[side] < MERGE_GAP_MS:
            if tenths > pend:
                self.pend_speed[side] = tenths
        else:
            if pend:
                self._count(side, pend)
            self.pend_speed[side] = tenths
        self.pend_ms[side] = now

    def flush(self, now, force=False):
        """Count pending objects whose last report is MERGE_GAP_MS old (all if ``force``)."""
        for side in (0, 1):
            pend = self.pend_speed[side]
            if pend and (force or now - self.pend_ms[side] >= MERGE_GAP_MS):
                self._count(side, pend)
                self.pend_speed[side] = 0

    def _count(self, side, tenths):
        kmh = tenths / 10
        if kmh < PEDESTRIAN_MAX:
            cls = 0
        elif kmh <= BIKE_MAX:
            cls = 1
        else:
            cls = 2
            b = tenths // 100
            self.hist[b if b < HIST_BINS else HIST_BINS - 1] += 1
            if self.ncars < CAR_CAPACITY:
                self.cars[self.ncars] = tenths
            self.ncars += 1
        self.counts[cls * 2 + side] += 1

    def v85(self):
        """85th percentile of car speeds (km/h), linear interpolation between ranks."""
        n = self.ncars
        if n == 0:
            return None
        if n > CAR_CAPACITY:  # too many cars to keep: interpolate in the 10 km/h histogram
            return self._v85_hist(n)
        xs = sorted(self.cars[:n])
        k = (n - 1) * 85 / 100
        lo = int(k)
        hi = lo + 1 if lo + 1 < n else n - 1
        return (xs[lo] + (xs[hi] - xs[lo]) * (k - lo)) / 10

    def _v85_hist(self, n):
        need = n * 0.85
        run = 0
        for i in range(HIST_BINS):
            c = self.hist[i]
            if c and run + c >= need:
                return 10 * i + 10 * (need - run) / c
            run += c
        return 10.0 * HIST_BINS

    def records(self, idx, start_dt, dur, uptime):
        """The interval's records ``[idx, code, value, dt, dur]``; resets the counters.

        Objects still being reported at the interval end are counted in this interval.
        """
        self.flush(0, True)
        c = self.counts
        out = [[idx, "traffic_count", c[0] + c[1] + c[2] + c[3] + c[4] + c[5] + c[6] + c[7],
                start_dt, dur]]
        for k in range(4):
            name = CLASSES[k]
            out.append([idx, name, c[2 * k] + c[2 * k + 1], start_dt, dur])
            out.append([idx, name + "_lft", c[2 * k], start_dt, dur])
            out.append([idx, name + "_rgt", c[2 * k + 1], start_dt, dur])
        cars = c[4] + c[5]
        for i in range(HIST_BINS):
            pct = round(100 * self.hist[i] / cars, 2) if cars else 0.0
            out.append([idx, "car_speed_hist_" + str(10 * i), pct, start_dt, dur])
        v = self.v85()
        if v is not None:
            out.append([idx, "v85", round(v, 2), start_dt, dur])
        out.append([idx, "uptime", uptime, start_dt, dur])
        self.reset()
        return out
