# Power-cut campaigns over the firmware's persisted files (run under MicroPython by
# tests/firmware/test_flash_atomic.py). Each returns the campaign's attempts and what the
# flash held before and after an uncut run, so the test can check that every reboot found
# the old or the new state, never a torn, empty or older one.
import binascii
import os
import struct

import fakehw
import hw
import nodecfg
import nodelink
import nodeproto
import powercut

EPOCH = 1764072000000


def _cfg(**over):
    cfg = dict(nodecfg.DEFAULTS)
    cfg["persist_ring"] = True
    cfg.update(over)
    return cfg


def _link(cfg):
    """A Link as a boot builds it: ring and counters read from flash."""
    return nodelink.Link(fakehw.UART(), "240ac4123456", "test", "air", [], cfg, 1)


def describe_ring(link):
    return {
        "ring": [[e[0], e[1], e[2], binascii.hexlify(e[3]).decode()] for e in link.ring],
        "next_seq": link.next_seq,
    }


def _records(i):
    return [[0, "pm2_5", 10.0 + i, 0, 60000], [1, "temperature", 20.5, 0, 60000]]


def _synced(cfg):
    link = _link(cfg)
    link._time(EPOCH, 0)
    return link


def ring_campaign(action, batches=3, ring_size=16, battery=False):
    """Cut ``action`` ("queue", "ack", "time") of a link holding ``batches`` batches."""
    _erase()
    cfg = _cfg(ring_size=ring_size, battery=battery)
    link = _link(cfg)
    if action != "time":
        link._time(EPOCH, 0)
    for i in range(batches):
        link.queue(_records(i), i * 60000, i * 60000 + 1)
    old = describe_ring(_link(cfg))

    def start():
        if action != "time":
            return _synced(cfg)
        link = _link(cfg)  # batches made before the sync live in RAM only
        for i in range(batches):
            link.queue(_records(i), i * 60000, i * 60000 + 1)
        return link

    def act(link):
        if action == "queue":
            link.queue(_records(99), 600000, 600001)
        elif action == "ack":
            link._ack(link.ring[1][0], 700000)
        else:
            link._time(EPOCH, 100)

    def reboot():
        return describe_ring(_link(cfg))

    results = powercut.campaign(start, act, reboot)
    return {"old": old, "new": results[-1][2], "attempts": results}


def naive_ring_campaign(batches=3):
    """The same cut campaign over a ring written in place (firmware 1.0.0): loses batches."""
    _erase()
    ring = [[i + 1, 1, EPOCH + i, bytes([0x80 + i]) * 40] for i in range(batches)]

    def naive_write(r):
        f = hw.file_open(hw.path(nodelink.RING_FILE), "wb")
        try:
            f.write(nodelink.RING_MAGIC)
            for e in r:
                f.write(struct.pack(nodelink._ENTRY, e[0], e[1], e[2], len(e[3])))
                f.write(e[3])
        finally:
            f.close()

    naive_write(ring)
    old = [e[0] for e in nodelink.read_ring(nodelink.RING_FILE)]
    longer = list(ring)
    longer.append([batches + 1, 1, EPOCH + 99, b"\x99" * 40])
    results = powercut.campaign(
        lambda: None,
        lambda _: naive_write(longer),
        lambda: [e[0] for e in nodelink.read_ring(nodelink.RING_FILE)],
    )
    return {"old": old, "new": results[-1][2], "attempts": results}


def boot_campaign(boots):
    """Boot ``boots`` times, then cut the next boot's increment at every step."""
    _erase()
    numbers = [nodelink.count_boot() for _ in range(boots)]
    results = powercut.campaign(
        lambda: None,
        lambda _: nodelink.count_boot(),
        nodelink.count_boot,  # the number the boot after the reset gets
    )
    return {"numbers": numbers, "attempts": results}


def config_campaign():
    """Cut a gateway config update's save at every step; a reboot loads the config."""
    _erase()
    cfg = dict(nodecfg.DEFAULTS)
    cfg["interval_s"] = 120
    nodecfg.save(cfg)
    old = nodecfg.load()

    def act(_):
        new = dict(old)
        new["interval_s"] = 900
        new["calibration_id"] = "cal-2026"
        nodecfg.save(new)

    results = powercut.campaign(lambda: None, act, nodecfg.load)
    return {"old": old, "new": results[-1][2], "attempts": results}


def node_campaign(ring_size=16, battery=False):
    """Cut the flash writes of a whole node closing an interval (harness.py, emulated sensors).

    Before: the node is synced (a time frame) and two batches wait unacknowledged on flash.
    A reboot is ``harness.boot()``: RAM gone, a new Node reads what the flash holds.
    """
    import harness

    _erase()
    cfg = {"interval_s": 10, "pm_on_s": 10, "pm_warmup_s": 0, "persist_ring": True,
           "ring_size": ring_size, "battery": battery}
    harness.setup(kind="air", cfg=cfg)
    sync = binascii.hexlify(nodeproto.encode_message({"type": "time", "epoch_ms": EPOCH}))
    harness.run(100, 100, sync.decode())
    harness.run(20000)
    before = powercut.snapshot()
    harness.boot()
    old = describe_ring(harness.state["node"].link)
    powercut.restore(before)

    def start():
        harness.boot()
        harness.run(100, 100, sync.decode())

    def act(_):
        harness.run(10000)

    def reboot():
        harness.boot()
        return describe_ring(harness.state["node"].link)

    results = powercut.campaign(start, act, reboot)
    return {"old": old, "new": results[-1][2], "attempts": results}


def corrupt_current(name, flip_at):
    """Flip one byte of the current copy of ``name`` (bit rot after a good write)."""
    path = hw.path(name)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[flip_at % len(data)] ^= 0xFF
    with open(path, "wb") as f:
        f.write(data)


def _erase():
    for name in os.listdir():
        os.remove(name)
