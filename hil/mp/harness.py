# Drive the real firmware under MicroPython with emulated sensors (tests and HIL emulator).
import binascii
import gc
import json

import emusensors
import fakehw
import nodecfg

state = {}


def setup(kind="air", cfg=None, pm="sds011", pm_values=(12.5, 20.0, 25.0), env=(21.5, 48.0, 101325.0),
          objects=(), json_lines=False, uid=b"\x24\x0a\xc4\x12\x34\x56", pm_ramp_ms=0,
          radar_every_ms=0):
    board = fakehw.install(uid)
    conf = dict(nodecfg.DEFAULTS)
    conf["kind"] = kind
    conf["pm_sensor"] = pm
    if kind == "traffic":
        conf["enabled"] = ["radar"]
    conf["persist_ring"] = False
    if cfg:
        conf.update(cfg)
    nodecfg.save(conf)
    state["board"] = board
    state["cfg"] = conf
    state["kind"] = kind
    state["pm"] = pm
    state["pm_values"] = pm_values
    state["env"] = env
    state["objects"] = list(objects)
    state["json"] = json_lines
    state["ramp"] = pm_ramp_ms
    state["radar_every"] = radar_every_ms
    state["boots"] = 0
    boot()


def boot():
    """(Re)build the node as after a power-on or deep-sleep wake-up: RAM state is new."""
    import nodeapp

    board = state["board"]
    board.uarts = {}
    board.i2c.devices = {}
    conf = nodecfg.load()
    if state["kind"] == "traffic":
        state["radar"] = emusensors.Radar(board.uart(conf["radar_uart"][0], 0, 0, 0),
                                          state["objects"], state["json"], state["radar_every"])
        state["pmemu"] = None
    else:
        state["pmemu"] = emusensors.PMSensor(board.uart(conf["pm_uart"][0], 0, 0, 0),
                                             state["pm"], state["pm_values"], state["ramp"])
        state["pmemu"].next_ms = board.clock.t
        if state["env"] is not None:  # env=None: no BME280 on the bus
            state["bme"] = emusensors.BME280(*state["env"])
            board.i2c.devices[conf["bme280_addr"]] = state["bme"]
        state["radar"] = None
    state["link"] = board.uart(conf["link_uart"][0], 0, 0, 0)
    state["node"] = nodeapp.Node(conf)  # counts this boot on flash (nodelink.count_boot)
    state["boots"] += 1


def run(ms, step_ms=100, rx_hex=""):
    """Advance emulated time by ``ms``; gateway bytes ``rx_hex`` arrive first. Returns tx hex."""
    board = state["board"]
    link = state["link"]
    if rx_hex:
        link.rx.extend(binascii.unhexlify(rx_hex))
    end = board.clock.t + ms
    while board.clock.t < end:
        board.clock.t += step_ms
        now = board.clock.t
        if state["pmemu"] is not None:
            state["pmemu"].tick(now)
        if state["radar"] is not None:
            state["radar"].tick(now)
        try:
            state["node"].step()
        except fakehw.DeepSleep:
            boot()
            link = state["link"]
    return binascii.hexlify(link.take()).decode()


def status():
    node = state["node"]
    gc.collect()
    return {
        "node_id": node.node_id,
        "ring": [e[0] for e in node.link.ring],
        "next_seq": node.link.next_seq,
        "stats": node.link.stats,
        "connected": node.link.connected,
        "synced": node.link.offset is not None,
        "sleeps": state["board"].sleeps,
        "boots": state["boots"],
        "boot": node.boot,
        "wdt_feeds": state["board"].wdt.feeds if state["board"].wdt else 0,
        "mem_alloc": gc.mem_alloc(),
        "mem_free": gc.mem_free(),
    }


def dumps(obj):
    return json.dumps(obj)
