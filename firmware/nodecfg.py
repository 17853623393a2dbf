# Node configuration: a JSON file on flash merged over defaults; a few keys can be changed
# from the gateway (CFG frames) and are validated here. The file stays plain JSON (the
# flasher writes it with mpremote); saves are atomic (flashstore.py) and a torn or corrupt
# copy is never read: the previous one is used instead.
import json

import flashstore

FILE = "config.json"

DEFAULTS = {
    "kind": "air",  # "air" or "traffic"
    "interval_s": 300,  # averaging / counting interval
    "pm_sensor": "sds011",  # "sds011", "pms5003" or "none"
    "pm_on_s": 30,  # PM sensor runs this long before the end of each interval (duty cycle)
    "pm_warmup_s": 15,  # readings in the first seconds after wake-up are discarded
    "enabled": ["pm", "bme280"],  # air: "pm", "bme280", "battery"; traffic: "radar"
    "calibration_id": "",
    "battery": False,  # deep-sleep between measurements
    "battery_pin": -1,
    "ble_advertise": False,
    "bme280_addr": 0x76,
    "i2c": [0, 22, 21],  # bus, scl, sda
    "pm_uart": [2, 17, 16],  # id, tx, rx
    "pm_power_pin": -1,
    "radar_uart": [2, 17, 16],
    "link_uart": [1, 4, 5],
    "link_baud": 115200,
    "ring_size": 16,  # unacknowledged batches kept
    "persist_ring": True,
    "ack_timeout_s": 10,
    "wdt_s": 30,
    "inbound": "lft",  # traffic: which Telraam side inbound objects count to
    "tick_ms": 100,
}

# key -> (type, min, max) for keys the gateway may set; lists are checked separately.
SETTABLE = {
    "interval_s": (int, 10, 86400),
    "pm_on_s": (int, 0, 86400),
    "pm_warmup_s": (int, 0, 600),
    "calibration_id": (str, 0, 64),
    "battery": (bool, 0, 1),
    "ble_advertise": (bool, 0, 1),
    "enabled": (list, 0, 4),
}
SENSOR_NAMES = ("pm", "bme280", "battery", "radar")


def load():
    cfg = dict(DEFAULTS)
    stored = flashstore.read(FILE, _parse)
    if stored is not None:
        for k in stored:
            if k in DEFAULTS:
                cfg[k] = stored[k]
    return cfg


def _parse(data):
    try:
        stored = json.loads(data)
    except ValueError:
        return None
    return stored if isinstance(stored, dict) else None


def save(cfg):
    changed = {}
    for k in cfg:
        if cfg[k] != DEFAULTS.get(k):
            changed[k] = cfg[k]
    flashstore.write(FILE, json.dumps(changed).encode())


def check_update(update):
    """Return an error text for a CFG update, or None when every key/value is allowed."""
    for k in update:
        if k not in SETTABLE:
            return "key " + str(k) + " cannot be set; settable: " + ",".join(sorted(SETTABLE))
        typ, lo, hi = SETTABLE[k]
        v = update[k]
        if typ is bool:
            ok = v is True or v is False
        elif typ is int:
            ok = isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
        elif typ is str:
            ok = isinstance(v, str) and len(v) <= hi
        else:
            ok = isinstance(v, list) and len(v) <= hi and all(s in SENSOR_NAMES for s in v)
        if not ok:
            return "bad value for " + k + ": " + str(v)
    return None
