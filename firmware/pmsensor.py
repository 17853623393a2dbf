# Particulate-matter sensors on a UART: Nova Fitness SDS011 and Plantower PMS5003.
#
# Frames are assembled byte by byte into a preallocated buffer (no allocation per byte);
# a complete valid frame updates ``values`` in place with raw integers (value = raw / divisor,
# so no float is boxed per frame) and returns True.

# SDS011 commands (docs/firmware.md; checksums from the sensor's protocol sheet).
SDS_SLEEP = bytes.fromhex("aab406010000000000000000000000ffff05ab")
SDS_WAKE = bytes.fromhex("aab406010100000000000000000000ffff06ab")
SDS_ACTIVE = bytes.fromhex("aab402010000000000000000000000ffff01ab")
PMS_SLEEP = bytes.fromhex("424de400000173")
PMS_WAKE = bytes.fromhex("424de400010174")
PMS_ACTIVE = bytes.fromhex("424de100010171")


class SDS011:
    name = "sds011"
    model = "Nova Fitness SDS011"
    quantities = ("pm2_5", "pm10")
    divisor = 10  # 0.1 µg/m³ units
    sleep_cmd = SDS_SLEEP
    wake_cmd = SDS_WAKE
    init_cmd = SDS_ACTIVE

    def __init__(self):
        self.frame = bytearray(10)
        self.n = 0
        self.values = [0, 0]
        self.bad = 0

    def feed_byte(self, b):
        f = self.frame
        n = self.n
        if (n == 0 and b != 0xAA) or (n == 1 and b != 0xC0):
            self.n = 1 if b == 0xAA else 0  # a start byte may begin the next frame
            f[0] = b
            return False
        f[n] = b
        n += 1
        if n < 10:
            self.n = n
            return False
        self.n = 0
        cs = (f[2] + f[3] + f[4] + f[5] + f[6] + f[7]) & 0xFF
        if cs != f[8] or f[9] != 0xAB:
            self.bad += 1
            return False
        pm25 = f[2] | (f[3] << 8)
        pm10 = f[4] | (f[5] << 8)
        if pm25 == 0 and pm10 == 0:  # warm-up frame, not a zero reading
            return False
        self.values[0] = pm25
        self.values[1] = pm10
        return True


class PMS5003:
    name = "pms5003"
    model = "Plantower PMS5003"
    quantities = ("pm1", "pm2_5", "pm10")
    divisor = 1  # µg/m³
    sleep_cmd = PMS_SLEEP
    wake_cmd = PMS_WAKE
    init_cmd = PMS_ACTIVE

    def __init__(self):
        self.frame = bytearray(32)
        self.n = 0
        self.values = [0, 0, 0]
        self.bad = 0

    def feed_byte(self, b):
        f = self.frame
        n = self.n
        if (n == 0 and b != 0x42) or (n == 1 and b != 0x4D):
            self.n = 1 if b == 0x42 else 0  # a start byte may begin the next frame
            f[0] = b
            return False
        f[n] = b
        n += 1
        if n == 4 and (f[2] != 0 or f[3] != 28):
            self.n = 0
            self.bad += 1
            return False
        if n < 32:
            self.n = n
            return False
        self.n = 0
        cs = 0
        for i in range(30):
            cs += f[i]
        if cs & 0xFFFF != (f[30] << 8) | f[31]:
            self.bad += 1
            return False
        total = 0
        for i in range(4, 28):
            total += f[i]
        if total == 0:  # warm-up frame
            return False
        # atmospheric-environment values (bytes 10..15)
        self.values[0] = (f[10] << 8) | f[11]
        self.values[1] = (f[12] << 8) | f[13]
        self.values[2] = (f[14] << 8) | f[15]
        return True


def make(name):
    if name == "sds011":
        return SDS011()
    if name == "pms5003":
        return PMS5003()
    raise ValueError("unknown PM sensor " + name)
