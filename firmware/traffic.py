# OmniPreSense OPS243 radar over UART and per-interval traffic counting.
#
# The radar is put in km/h, per-object maximum-speed reports (``ON``); each report line is a
# signed speed (positive: inbound) or a JSON object with ``speed`` and optional ``direction``.
# Counts go to Telraam's two sides (``lft``/``rgt``), 10 km/h speed classes 0..70+ and a
# 1 km/h histogram from which v85 is read, all in preallocated arrays.
import json
from array import array

INIT_COMMANDS = (b"UK", b"ON", b"OJ")  # km/h, object max-speed reports, JSON output
SPEED_CLASSES = 8  # 0-10, 10-20, ..., 70+ km/h
HIST_MAX = 200  # 1 km/h bins, last bin is 199+


class Counter:
    name = "ops243"
    model = "OmniPreSense OPS243-A"
    quantities = ("traffic_count", "traffic_count_lft", "traffic_count_rgt", "v85", "uptime",
                  "speed_class_0", "speed_class_10", "speed_class_20", "speed_class_30",
                  "speed_class_40", "speed_class_50", "speed_class_60", "speed_class_70")

    def __init__(self, inbound="lft"):
        self.inbound_lft = inbound == "lft"
        self.line = bytearray(96)
        self.n = 0
        self.classes = array("H", [0] * SPEED_CLASSES)
        self.hist = array("H", [0] * HIST_MAX)
        self.lft = 0
        self.rgt = 0
        self.bad = 0

    def reset(self):
        for i in range(SPEED_CLASSES):
            self.classes[i] = 0
        for i in range(HIST_MAX):
            self.hist[i] = 0
        self.lft = 0
        self.rgt = 0

    def feed_byte(self, b):
        """Accumulate one byte; returns True when a line produced a counted object."""
        if b == 10 or b == 13:
            n = self.n
            self.n = 0
            if n:
                return self.parse_line(n)
            return False
        if self.n < len(self.line):
            self.line[self.n] = b
            self.n += 1
        return False

    def parse_line(self, n):
        text = bytes(self.line[:n])
        speed = None
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
        self.add(abs(speed), inbound)
        return True

    def add(self, kmh, inbound):
        if inbound == self.inbound_lft:
            self.lft += 1
        else:
            self.rgt += 1
        c = int(kmh // 10)
        self.classes[c if c < SPEED_CLASSES else SPEED_CLASSES - 1] += 1
        h = int(kmh)
        self.hist[h if h < HIST_MAX else HIST_MAX - 1] += 1

    def v85(self):
        """Speed (km/h, upper edge of the 1 km/h bin) that 85 % of objects do not exceed."""
        total = self.lft + self.rgt
        if total == 0:
            return None
        need = (total * 85 + 99) // 100
        run = 0
        for i in range(HIST_MAX):
            run += self.hist[i]
            if run >= need:
                return i + 1
        return HIST_MAX

    def records(self, idx, start_dt, dur, uptime):
        """The interval's records ``[idx, code, value, dt, dur]`` and reset the counters."""
        out = [
            [idx, "traffic_count", self.lft + self.rgt, start_dt, dur],
            [idx, "traffic_count_lft", self.lft, start_dt, dur],
            [idx, "traffic_count_rgt", self.rgt, start_dt, dur],
        ]
        for i in range(SPEED_CLASSES):
            out.append([idx, f"speed_class_{i * 10}", self.classes[i], start_dt, dur])
        v = self.v85()
        if v is not None:
            out.append([idx, "v85", float(v), start_dt, dur])
        out.append([idx, "uptime", uptime, start_dt, dur])
        self.reset()
        return out
