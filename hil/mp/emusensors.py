# Emulated sensors behind the fake hardware layer (MicroPython and CPython compatible).
#
# The BME280 emulator turns target T/RH/p into raw ADC counts by inverting the datasheet's
# floating-point compensation (BST-BME280-DS002 section 8.1) with a bisection: an
# implementation independent of the firmware's integer formulas, which the tests compare.
import struct

# Calibration: the T/P words of the BMP280 datasheet's worked example, typical H words.
CAL = {
    "T1": 27504, "T2": 26435, "T3": -1000,
    "P1": 36477, "P2": -10685, "P3": 3024, "P4": 2855, "P5": 140, "P6": -7,
    "P7": 15500, "P8": -14600, "P9": 6000,
    "H1": 75, "H2": 362, "H3": 0, "H4": 313, "H5": 50, "H6": 30,
}


def calib_blocks(c):
    a = bytearray(struct.pack("<HhhHhhhhhhhh", c["T1"], c["T2"], c["T3"], c["P1"], c["P2"],
                              c["P3"], c["P4"], c["P5"], c["P6"], c["P7"], c["P8"], c["P9"]))
    a.append(0)
    a.append(c["H1"])
    h4, h5 = c["H4"] & 0xFFF, c["H5"] & 0xFFF
    b = bytearray(struct.pack("<h", c["H2"]))
    b.append(c["H3"])
    b.append(h4 >> 4)
    b.append((h4 & 0x0F) | ((h5 & 0x0F) << 4))
    b.append(h5 >> 4)
    b.append(c["H6"] & 0xFF)
    return bytes(a), bytes(b)


def f_tfine(c, adc_t):
    v1 = (adc_t / 16384.0 - c["T1"] / 1024.0) * c["T2"]
    x = adc_t / 131072.0 - c["T1"] / 8192.0
    return v1 + x * x * c["T3"]


def f_temperature(c, adc_t):
    return f_tfine(c, adc_t) / 5120.0


def f_pressure(c, tf, adc_p):
    v1 = tf / 2.0 - 64000.0
    v2 = v1 * v1 * c["P6"] / 32768.0
    v2 = v2 + v1 * c["P5"] * 2.0
    v2 = v2 / 4.0 + c["P4"] * 65536.0
    v1 = (c["P3"] * v1 * v1 / 524288.0 + c["P2"] * v1) / 524288.0
    v1 = (1.0 + v1 / 32768.0) * c["P1"]
    if v1 == 0:
        return 0.0
    p = 1048576.0 - adc_p
    p = (p - v2 / 4096.0) * 6250.0 / v1
    v1 = c["P9"] * p * p / 2147483648.0
    v2 = p * c["P8"] / 32768.0
    return p + (v1 + v2 + c["P7"]) / 16.0


def f_humidity(c, tf, adc_h):
    h = tf - 76800.0
    h = (adc_h - (c["H4"] * 64.0 + c["H5"] / 16384.0 * h)) * (
        c["H2"] / 65536.0 * (1.0 + c["H6"] / 67108864.0 * h * (1.0 + c["H3"] / 67108864.0 * h)))
    h = h * (1.0 - c["H1"] * h / 524288.0)
    return 0.0 if h < 0 else 100.0 if h > 100 else h


def _bisect(fn, target, lo, hi, increasing):
    for _ in range(24):
        if lo >= hi:
            break
        mid = (lo + hi) // 2
        v = fn(mid)
        if (v < target) == increasing:
            lo = mid + 1
        else:
            hi = mid
    return lo


def raw_for(c, t, rh, p):
    """(adc_T, adc_H, adc_P) that the float formulas turn into (t, rh, p)."""
    adc_t = _bisect(lambda a: f_temperature(c, a), t, 0, (1 << 20) - 1, True)
    tf = f_tfine(c, adc_t)
    adc_p = _bisect(lambda a: f_pressure(c, tf, a), p, 0, (1 << 20) - 1, False)
    adc_h = _bisect(lambda a: f_humidity(c, tf, a), rh, 0, 0xFFFF, True)
    return adc_t, adc_h, adc_p


class BME280:
    """I2C register model: chip id, calibration, ctrl registers, forced conversions."""

    def __init__(self, t=21.5, rh=48.0, p=101325.0, cal=None):
        self.cal = cal or CAL
        self.regs = bytearray(256)
        self.regs[0xD0] = 0x60
        a, b = calib_blocks(self.cal)
        self.regs[0x88 : 0x88 + 26] = a
        self.regs[0xE1 : 0xE1 + 7] = b
        self.conversions = 0
        self.set(t, rh, p)

    def set(self, t, rh, p):
        self.target = (t, rh, p)

    def write(self, reg, data):
        for i in range(len(data)):
            self.regs[reg + i] = data[i]
        if reg == 0xF4 and data[0] & 0x03 == 0x01:  # forced mode: convert now
            adc_t, adc_h, adc_p = raw_for(self.cal, *self.target)
            r = self.regs
            r[0xF7], r[0xF8], r[0xF9] = adc_p >> 12, (adc_p >> 4) & 0xFF, (adc_p & 0x0F) << 4
            r[0xFA], r[0xFB], r[0xFC] = adc_t >> 12, (adc_t >> 4) & 0xFF, (adc_t & 0x0F) << 4
            r[0xFD], r[0xFE] = adc_h >> 8, adc_h & 0xFF
            self.regs[0xF4] = data[0] & 0xFC  # back to sleep mode
            self.conversions += 1

    def read(self, reg, buf):
        for i in range(len(buf)):
            buf[i] = self.regs[reg + i]


def sds011_frame(pm25, pm10, dev=0x58D9):
    a, b = round(pm25 * 10), round(pm10 * 10)
    f = bytearray([0xAA, 0xC0, a & 0xFF, a >> 8, b & 0xFF, b >> 8, dev >> 8, dev & 0xFF, 0, 0xAB])
    f[8] = sum(f[2:8]) & 0xFF
    return bytes(f)


def pms5003_frame(pm1, pm25, pm10):
    words = [pm1, pm25, pm10, pm1, pm25, pm10, 210, 70, 45, 30, 0, 0]
    f = bytearray(b"\x42\x4d\x00\x1c")
    for w in words:
        f.extend(struct.pack(">H", int(w)))
    f.append(0x97)
    f.append(0)
    f.extend(struct.pack(">H", sum(f) & 0xFFFF))
    return bytes(f)


class PMSensor:
    """SDS011/PMS5003 on a fake UART: one frame a second while awake; obeys sleep/wake."""

    def __init__(self, uart, kind="sds011", values=(12.5, 20.0, 25.0), ramp_ms=0):
        self.uart = uart
        self.kind = kind
        self.values = values
        # ramp_ms > 0: a frame at time t reads k = (t - 1) // ramp_ms + 1 (and 2k, 3k), so the
        # node's k-th interval of ramp_ms averages exactly k: end-to-end tests identify batches
        self.ramp_ms = ramp_ms
        self.awake = True
        self.next_ms = 0
        self.frames = 0
        self.sleeps = 0
        self.wakes = 0
        uart.listener = self.command

    def command(self, data):
        import pmsensor

        if data in (pmsensor.SDS_SLEEP, pmsensor.PMS_SLEEP):
            self.awake = False
            self.sleeps += 1
        elif data in (pmsensor.SDS_WAKE, pmsensor.PMS_WAKE):
            self.awake = True
            self.wakes += 1

    def tick(self, now):
        while self.awake and now >= self.next_ms:
            v = self.values
            if self.ramp_ms:
                k = (self.next_ms - 1) // self.ramp_ms + 1
                v = (k, 2 * k, 3 * k)
            if self.kind == "sds011":
                self.uart.rx.extend(sds011_frame(v[0], v[1]))
            else:
                self.uart.rx.extend(pms5003_frame(*v))
            self.frames += 1
            self.next_ms += 1000
        if not self.awake:
            self.next_ms = now + 1000


class Radar:
    """OPS243 on a fake UART: emits one report line per scheduled object."""

    def __init__(self, uart, objects, json_lines=False, every_ms=0):
        self.uart = uart
        self.objects = list(objects)  # [(time ms, signed km/h)], sorted
        self.json = json_lines
        self.commands = []
        # every_ms > 0: endless traffic, one object per every_ms, speeds from a small LCG
        self.every_ms = every_ms
        self.next_ms = every_ms
        self.seed = 12345
        uart.listener = self.commands.append

    def _generated(self, now):
        while self.every_ms and now >= self.next_ms:
            self.seed = (self.seed * 1103515245 + 12345) & 0x7FFFFFFF
            v = 3 + self.seed % 90
            self.objects.append((self.next_ms, v if self.seed & 0x100 else -v))
            self.next_ms += self.every_ms

    def tick(self, now):
        self._generated(now)
        while self.objects and self.objects[0][0] <= now:
            _, v = self.objects.pop(0)
            if self.json:
                d = "inbound" if v >= 0 else "outbound"
                line = '{"speed":' + f"{abs(v):.1f}" + ',"direction":"' + d + '"}\r\n'
            else:
                line = f"{v:.1f}\r\n"
            self.uart.rx.extend(line.encode())
