# Bosch BME280 (temperature, humidity, pressure) over I2C, forced mode.
#
# Compensation follows the integer formulas of the BME280 datasheet (BST-BME280-DS002,
# section 4.2.3): 32-bit for temperature and humidity, 64-bit for pressure. MicroPython's
# integers are arbitrary precision, so the 64-bit formula is exact here too.
import struct

REG_ID = 0xD0
CHIP_ID = 0x60
REG_CALIB_A = 0x88  # 26 bytes: dig_T1..dig_P9, (0xA0 unused), dig_H1 at 0xA1
REG_CALIB_B = 0xE1  # 7 bytes: dig_H2..dig_H6
REG_CTRL_HUM = 0xF2
REG_STATUS = 0xF3
REG_CTRL_MEAS = 0xF4
REG_DATA = 0xF7  # 8 bytes: press[3], temp[3], hum[2]


def _tdiv(a, b):
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


class Calibration:
    def __init__(self, block_a, block_b):
        (self.T1, self.T2, self.T3, self.P1, self.P2, self.P3, self.P4, self.P5, self.P6,
         self.P7, self.P8, self.P9) = struct.unpack("<HhhHhhhhhhhh", block_a[0:24])
        self.H1 = block_a[25]
        self.H2 = struct.unpack("<h", block_b[0:2])[0]
        self.H3 = block_b[2]
        e4, e5, e6 = block_b[3], block_b[4], block_b[5]
        h4 = (e4 << 4) | (e5 & 0x0F)
        h5 = (e6 << 4) | (e5 >> 4)
        self.H4 = h4 - 4096 if h4 & 0x800 else h4
        self.H5 = h5 - 4096 if h5 & 0x800 else h5
        h6 = block_b[6]
        self.H6 = h6 - 256 if h6 & 0x80 else h6


def t_fine(c, adc_t):
    var1 = (((adc_t >> 3) - (c.T1 << 1)) * c.T2) >> 11
    x = (adc_t >> 4) - c.T1
    var2 = (((x * x) >> 12) * c.T3) >> 14
    return var1 + var2


def temperature_centi(tf):
    """Temperature in 0.01 °C."""
    return (tf * 5 + 128) >> 8


def pressure_q24_8(c, tf, adc_p):
    """Pressure in Pa as unsigned Q24.8 (divide by 256), datasheet 64-bit formula."""
    var1 = tf - 128000
    var2 = var1 * var1 * c.P6
    var2 = var2 + ((var1 * c.P5) << 17)
    var2 = var2 + (c.P4 << 35)
    var1 = ((var1 * var1 * c.P3) >> 8) + ((var1 * c.P2) << 12)
    var1 = (((1 << 47) + var1) * c.P1) >> 33
    if var1 == 0:
        return 0
    p = 1048576 - adc_p
    p = _tdiv(((p << 31) - var2) * 3125, var1)
    var1 = (c.P9 * (p >> 13) * (p >> 13)) >> 25
    var2 = (c.P8 * p) >> 19
    return ((p + var1 + var2) >> 8) + (c.P7 << 4)


def humidity_q22_10(c, tf, adc_h):
    """Relative humidity in % as Q22.10 (divide by 1024), datasheet 32-bit formula."""
    v = tf - 76800
    a = ((adc_h << 14) - (c.H4 << 20) - (c.H5 * v) + 16384) >> 15
    b = (((((v * c.H6) >> 10) * (((v * c.H3) >> 11) + 32768)) >> 10) + 2097152) * c.H2 + 8192
    v = a * (b >> 14)
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * c.H1) >> 4)
    if v < 0:
        v = 0
    if v > 419430400:
        v = 419430400
    return v >> 12


class BME280:
    """Forced-mode driver: ``start()`` triggers a conversion, ``read()`` returns (T, RH, P)."""

    name = "bme280"
    model = "Bosch BME280"
    quantities = ("temperature", "humidity", "pressure")

    def __init__(self, i2c, addr=0x76):
        self.i2c = i2c
        self.addr = addr
        self.buf = bytearray(8)
        one = bytearray(1)
        i2c.readfrom_mem_into(addr, REG_ID, one)
        if one[0] != CHIP_ID:
            raise OSError(f"BME280 not found (chip id 0x{one[0]:02x})")
        a = bytearray(26)
        b = bytearray(7)
        i2c.readfrom_mem_into(addr, REG_CALIB_A, a)
        i2c.readfrom_mem_into(addr, REG_CALIB_B, b)
        self.cal = Calibration(a, b)
        i2c.writeto_mem(addr, REG_CTRL_HUM, b"\x01")  # humidity oversampling x1

    def start(self):
        # temperature x1, pressure x1, forced mode: one conversion (~10 ms), then sleep
        self.i2c.writeto_mem(self.addr, REG_CTRL_MEAS, b"\x25")

    def read(self):
        """(°C, %RH, Pa) of the last conversion, as floats."""
        buf = self.buf
        self.i2c.readfrom_mem_into(self.addr, REG_DATA, buf)
        adc_p = (buf[0] << 12) | (buf[1] << 4) | (buf[2] >> 4)
        adc_t = (buf[3] << 12) | (buf[4] << 4) | (buf[5] >> 4)
        adc_h = (buf[6] << 8) | buf[7]
        c = self.cal
        tf = t_fine(c, adc_t)
        return (
            temperature_centi(tf) / 100,
            humidity_q22_10(c, tf, adc_h) / 1024,
            pressure_q24_8(c, tf, adc_p) / 256,
        )
