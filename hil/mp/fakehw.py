# Replacement hardware layer for running the real firmware under MicroPython in tests/HIL.
# ``install()`` swaps the functions of the firmware's ``hw`` module for in-memory fakes.
import hw


class DeepSleep(Exception):
    """Raised by the fake ``deep_sleep``: the caller 'reboots' the node afterwards."""


class Clock:
    def __init__(self):
        self.t = 0

    def ticks_ms(self):
        return self.t & 0x3FFFFFFF

    def ticks_diff(self, a, b):
        d = (a - b) & 0x3FFFFFFF
        return d - 0x40000000 if d & 0x20000000 else d


class UART:
    """Bytes the firmware reads (``rx``) and writes (``tx``); ``listener`` sees writes."""

    def __init__(self):
        self.rx = bytearray()
        self.tx = bytearray()
        self.listener = None

    def any(self):
        return len(self.rx)

    def readinto(self, buf):
        n = min(len(buf), len(self.rx))
        buf[:n] = self.rx[:n]
        self.rx = self.rx[n:]
        return n

    def write(self, data):
        self.tx.extend(data)
        if self.listener is not None:
            self.listener(bytes(data))
        return len(data)

    def take(self):
        out = bytes(self.tx)
        self.tx = bytearray()
        return out


class I2C:
    def __init__(self):
        self.devices = {}

    def readfrom_mem_into(self, addr, reg, buf):
        if addr not in self.devices:
            raise OSError(19)  # ENODEV, as on the board
        self.devices[addr].read(reg, buf)

    def writeto_mem(self, addr, reg, data):
        if addr not in self.devices:
            raise OSError(19)
        self.devices[addr].write(reg, data)


class WDT:
    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class Board:
    def __init__(self, uid):
        self.clock = Clock()
        self.uarts = {}
        self.i2c = I2C()
        self.uid = uid
        self.wdt = None
        self.sleeps = []
        self.adverts = []
        self.pins = {}
        self.battery = 3900

    def uart(self, uid, baudrate, tx, rx):
        if uid not in self.uarts:
            self.uarts[uid] = UART()
        return self.uarts[uid]

    def watchdog(self, timeout_ms):
        self.wdt = WDT(timeout_ms)
        return self.wdt

    def deep_sleep(self, ms):
        self.sleeps.append(ms)
        self.clock.t += ms
        raise DeepSleep()

    def ble_advertise(self, payload, interval_ms):
        self.adverts.append(bytes(payload))

    def pin_out(self, num, value):
        self.pins[num] = value


def install(uid=b"\x24\x0a\xc4\x12\x34\x56"):
    b = Board(uid)
    hw.ticks_ms = b.clock.ticks_ms
    hw.ticks_diff = b.clock.ticks_diff
    hw.sleep_ms = lambda ms: None
    hw.uart = b.uart
    hw.i2c = lambda bus, scl, sda: b.i2c
    hw.pin_out = b.pin_out
    hw.unique_id = lambda: b.uid
    hw.watchdog = b.watchdog
    hw.deep_sleep = b.deep_sleep
    hw.battery_mv = lambda pin: b.battery
    hw.ble_advertise = b.ble_advertise
    return b
