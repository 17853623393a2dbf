# The node application: builds the air or traffic node from the config and runs it.
#
# ``Node.step()`` does one non-blocking iteration (read sensors, close an interval, talk to the
# gateway, feed the watchdog) so that tests and the HIL emulator can drive it tick by tick;
# ``main()`` is the forever loop used on a board. The sampling path reads into preallocated
# buffers and accumulates into preallocated arrays (see docs/firmware.md for what it does
# allocate: MicroPython boxes floats on ESP32).
import gc
from array import array

import hw
import nodecfg
import nodelink
import nodeproto
import pmsensor

FIRMWARE_VERSION = "1.0.0"
BME_PERIOD_MS = 10000  # one forced BME280 conversion every 10 s, averaged per interval


def node_id_from(uid):
    return "".join(f"{b:02x}" for b in uid)


class Clock:
    """Milliseconds since boot from the wrapping ``ticks_ms`` counter."""

    def __init__(self):
        self.last = hw.ticks_ms()
        self.ms = 0

    def now(self):
        t = hw.ticks_ms()
        self.ms += hw.ticks_diff(t, self.last)
        self.last = t
        return self.ms


class Averager:
    """Running means for a fixed list of (sensor index, quantity) slots.

    ``add_raw`` accumulates small integers (raw sensor units, value = raw / divisor) without
    allocating; ``add`` accumulates floats (BME280, battery: a few per interval).
    """

    def __init__(self, slots, divisors):
        self.slots = slots  # [(sensor index, quantity code)]
        self.divisors = divisors
        self.isums = array("i", [0] * len(slots))
        self.fsums = array("f", [0.0] * len(slots))
        self.counts = array("H", [0] * len(slots))

    def add_raw(self, i, raw):
        self.isums[i] += raw
        self.counts[i] += 1

    def add(self, i, v):
        self.fsums[i] += v
        self.counts[i] += 1

    def records(self, dt, dur):
        out = []
        for i in range(len(self.slots)):
            n = self.counts[i]
            if n:
                idx, code = self.slots[i]
                mean = (self.isums[i] / self.divisors[i] + self.fsums[i]) / n
                out.append([idx, code, round(mean, 3), dt, dur])
            self.isums[i] = 0
            self.fsums[i] = 0.0
            self.counts[i] = 0
        return out


class Node:
    def __init__(self, cfg=None, boot=None):
        self.cfg = cfg if cfg is not None else nodecfg.load()
        cfg = self.cfg
        self.faults = []  # (log code, text) of problems found at start, sent once connected
        if boot is None:  # a real boot: count it on flash (tests may pass their own number)
            try:
                boot = nodelink.count_boot()
            except OSError as exc:  # flash full or broken: run anyway, tell the gateway
                boot = 0
                self.faults.append(("flash", "boot counter not stored: " + str(exc)))
        self.boot = boot
        self.clock = Clock()
        self.node_id = node_id_from(hw.unique_id())
        self.kind = cfg["kind"]
        self.inventory = []
        self.buf = bytearray(64)
        self.pm = None
        self.bme = None
        self.radar = None
        self.battery = "battery" in cfg["enabled"] and cfg["battery_pin"] >= 0
        self.batches = 0
        self.adv_seq = 0
        self.sleep_requested = None
        self.errors = 0
        slots = []
        divisors = []
        if self.kind == "traffic":
            import traffic

            self.radar = traffic.Counter(cfg["inbound"])
            u = cfg["radar_uart"]
            self.radar_uart = hw.uart(u[0], 19200, u[1], u[2])
            for cmd in traffic.INIT_COMMANDS:
                self.radar_uart.write(cmd)
            self.inventory.append([self.radar.name, self.radar.model, list(self.radar.quantities)])
        else:
            if "pm" in cfg["enabled"] and cfg["pm_sensor"] != "none":
                self.pm = pmsensor.make(cfg["pm_sensor"])
                u = cfg["pm_uart"]
                self.pm_uart = hw.uart(u[0], 9600, u[1], u[2])
                self.pm_uart.write(self.pm.init_cmd)
                hw.pin_out(cfg["pm_power_pin"], 1)
                idx = len(self.inventory)
                self.inventory.append([self.pm.name, self.pm.model, list(self.pm.quantities)])
                self.pm_slot0 = len(slots)
                for q in self.pm.quantities:
                    slots.append((idx, q))
                    divisors.append(self.pm.divisor)
            if "bme280" in cfg["enabled"]:
                import bme280

                b = cfg["i2c"]
                try:
                    self.bme = bme280.BME280(hw.i2c(b[0], b[1], b[2]), cfg["bme280_addr"])
                except OSError as exc:  # missing or broken: run without it, tell the gateway
                    self.faults.append(("sensor", "bme280: " + str(exc)))
            if self.bme is not None:
                idx = len(self.inventory)
                self.inventory.append([self.bme.name, self.bme.model, list(self.bme.quantities)])
                self.bme_slot0 = len(slots)
                for q in self.bme.quantities:
                    slots.append((idx, q))
                    divisors.append(1)
            if self.battery:
                idx = len(self.inventory)
                self.inventory.append(["battery", "ADC divider", ["battery_voltage"]])
                self.bat_slot = len(slots)
                slots.append((idx, "battery_voltage"))
                divisors.append(1)
        self.avg = Averager(slots, divisors)
        lu = cfg["link_uart"]
        self.link = nodelink.Link(
            hw.uart(lu[0], cfg["link_baud"], lu[1], lu[2]),
            self.node_id, FIRMWARE_VERSION, self.kind, self.inventory, cfg, self.boot,
        )
        self.link.on_config = self.apply_config
        for code, text in self.faults:
            self.link.log("error", code, text)
        self.wdt = hw.watchdog(cfg["wdt_s"] * 1000)
        now = self.clock.now()
        self.istart = now
        self.pm_awake_at = now
        self.pm_awake = True
        self.bme_next = now
        self.bme_pending = False
        self.apply_config(cfg)
        if self.duty:  # sleep until this interval's measurement window
            self.pm_uart.write(self.pm.sleep_cmd)
            self.pm_awake = False

    def apply_config(self, cfg):
        if cfg["battery"] and self.radar is None:
            # awake only for one measurement window per interval, deep sleep in between
            self.interval_ms = max(cfg["pm_on_s"], 1) * 1000
            self.sleep_total_ms = cfg["interval_s"] * 1000 - self.interval_ms
            self.duty = False
        else:
            self.interval_ms = cfg["interval_s"] * 1000
            self.duty = self.pm is not None and cfg["pm_on_s"] < cfg["interval_s"]

    # ---- sampling (the hot path: no per-byte allocation)
    def _poll_pm(self, now):
        uart = self.pm_uart
        pm = self.pm
        buf = self.buf
        accept = self.pm_awake and now - self.pm_awake_at >= self.cfg["pm_warmup_s"] * 1000
        while uart.any():
            n = uart.readinto(buf)
            if not n:
                break
            for i in range(n):
                if pm.feed_byte(buf[i]) and accept:
                    s0 = self.pm_slot0
                    vals = pm.values
                    for j in range(len(vals)):
                        self.avg.add_raw(s0 + j, vals[j])
        if self.duty:
            wake_at = self.istart + self.interval_ms - self.cfg["pm_on_s"] * 1000
            if not self.pm_awake and now >= wake_at:
                uart.write(pm.wake_cmd)
                self.pm_awake = True
                self.pm_awake_at = now

    def _poll_bme(self, now):
        if self.bme_pending:
            t, h, p = self.bme.read()
            s0 = self.bme_slot0
            self.avg.add(s0, t)
            self.avg.add(s0 + 1, h)
            self.avg.add(s0 + 2, p)
            self.bme_pending = False
        elif now >= self.bme_next:
            self.bme.start()
            self.bme_pending = True
            self.bme_next = now + BME_PERIOD_MS

    def _poll_radar(self, now):
        uart = self.radar_uart
        buf = self.buf
        while uart.any():
            n = uart.readinto(buf)
            if not n:
                break
            for i in range(n):
                self.radar.feed_byte(buf[i], now)

    # ---- interval end
    def _close_interval(self, now):
        start = self.istart
        dur = self.interval_ms
        if self.radar is not None:
            records = self.radar.records(0, 0, dur, 1.0 if self.batches else min(1.0, (now - start) / dur))
        else:
            if self.battery:
                mv = hw.battery_mv(self.cfg["battery_pin"])
                if mv >= 0:
                    self.avg.add(self.bat_slot, mv / 1000)
            records = self.avg.records(0, dur)
            if self.duty:
                self.pm_uart.write(self.pm.sleep_cmd)
                self.pm_awake = False
        self.istart = start + dur if now - start < 2 * dur else now
        self.closed_at = now
        if records:
            self.link.queue(records, start, now)
            self.batches += 1
            if self.cfg["ble_advertise"]:
                self._advertise(records)
        gc.collect()

    def _advertise(self, records):
        vals = []
        for r in records:
            if r[1] in nodeproto.BLE_IDS and len(vals) < nodeproto.BLE_MAX_VALUES:
                vals.append((r[1], r[2]))
        self.adv_seq = (self.adv_seq + 1) & 0xFF
        short = int(self.node_id[-8:], 16)
        hw.ble_advertise(nodeproto.encode_advert(short, self.adv_seq, vals), 1000)

    def step(self):
        now = self.clock.now()
        self.link.poll(now)
        if self.pm is not None:
            self._poll_pm(now)
        if self.bme is not None:
            self._poll_bme(now)
        if self.radar is not None:
            self._poll_radar(now)
        if now - self.istart >= self.interval_ms:
            self._close_interval(now)
        self.wdt.feed()
        if self.cfg["battery"] and self.radar is None and self.batches:
            waited = now - self.closed_at
            if not self.link.ring or waited >= 2 * self.cfg["ack_timeout_s"] * 1000:
                # delivered (or the gateway is away: the ring is on flash) -> deep sleep
                if self.pm is not None:
                    self.pm_uart.write(self.pm.sleep_cmd)
                left = self.sleep_total_ms - waited
                self.sleep_requested = left if left > 0 else 0
                hw.deep_sleep(self.sleep_requested)
        return now


def main():
    """Board entry point (main.py): run the node forever."""
    node = Node()
    tick = node.cfg["tick_ms"]
    while True:
        try:
            node.step()
        except Exception as exc:  # keep sampling; a real hang is the watchdog's job
            node.errors += 1
            if node.errors <= 10 or node.errors % 1000 == 0:
                node.link.log("error", "step", type(exc).__name__ + ": " + str(exc))
        hw.sleep_ms(tick)
