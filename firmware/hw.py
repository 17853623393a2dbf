# Hardware layer of the duet-edge node firmware.
#
# Every access to the board (machine.UART/I2C/Pin/WDT/ADC, bluetooth, unique id, deep sleep,
# the millisecond clock and flash paths) goes through the small functions below and nothing
# else in the firmware imports ``machine`` or ``bluetooth``. Tests and the HIL emulator
# replace these functions (``hw.uart = fake``) before building a node. The file primitives at
# the end are the seam of ``flashstore`` (atomic files): ``hil/mp/powercut.py`` replaces them
# with a flash that loses power after a given number of bytes or operations.
import os
import time

try:
    import machine
except ImportError:  # CPython or the WebAssembly port: tests install replacements
    machine = None

FLASH_DIR = ""  # prefix for files on the board's filesystem ("" = current directory)


def ticks_ms():
    return time.ticks_ms()


def ticks_diff(a, b):
    return time.ticks_diff(a, b)


def sleep_ms(ms):
    time.sleep_ms(ms)


def uart(uid, baudrate, tx, rx):
    """A non-blocking UART: ``any()``, ``readinto(buf)``, ``write(bytes)``."""
    return machine.UART(uid, baudrate=baudrate, tx=tx, rx=rx, timeout=0, rxbuf=1024)


def i2c(bus, scl, sda):
    """An I2C bus with ``readfrom_mem_into`` and ``writeto_mem``."""
    return machine.I2C(bus, scl=machine.Pin(scl), sda=machine.Pin(sda), freq=100000)


def pin_out(num, value):
    """Drive a GPIO (e.g. a sensor's power switch or SET pin)."""
    if num >= 0:
        machine.Pin(num, machine.Pin.OUT, value=value)


def unique_id():
    return machine.unique_id()


def watchdog(timeout_ms):
    """A started watchdog; the caller must ``feed()`` it."""
    return machine.WDT(timeout=timeout_ms)


def deep_sleep(ms):
    """Power down for ``ms``; the board reboots into main.py afterwards."""
    machine.deepsleep(ms)


def battery_mv(pin):
    """Battery voltage in mV through a 1:2 divider on ``pin`` (-1: not fitted)."""
    if pin < 0:
        return -1
    adc = machine.ADC(machine.Pin(pin), atten=machine.ADC.ATTN_11DB)
    return adc.read_uv() * 2 // 1000


_ble = None


def ble_advertise(payload, interval_ms):
    """Broadcast ``payload`` (manufacturer data, company id first) as a non-connectable advert."""
    global _ble
    import bluetooth

    if _ble is None:
        _ble = bluetooth.BLE()
        _ble.active(True)
    adv = bytearray(b"\x02\x01\x06")  # flags: LE general discoverable, BR/EDR not supported
    adv.append(len(payload) + 1)
    adv.append(0xFF)  # AD type: manufacturer specific data
    adv.extend(payload)
    _ble.gap_advertise(interval_ms * 1000, adv_data=adv, connectable=False)


def path(name):
    return FLASH_DIR + name


def file_open(name, mode):
    """A file on flash (``open``); ``flashstore`` only writes new files, never in place."""
    return open(name, mode)


def file_rename(old, new):
    """Rename, replacing ``new`` if it exists (atomic on LittleFS, the ESP32's default)."""
    os.rename(old, new)


def file_remove(name):
    os.remove(name)


def fs_sync():
    """Push written data to the flash chip (``os.sync`` where the port has it)."""
    try:
        sync = os.sync
    except AttributeError:  # e.g. the WebAssembly port: writes are already in place
        return
    sync()
