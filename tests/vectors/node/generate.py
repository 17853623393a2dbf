"""Regenerate frames.json / adverts.json / invalid.json from the messages listed here.

Run once by hand after a deliberate protocol change (``python tests/vectors/node/generate.py``),
then review the diff: the tests never regenerate vectors, they check both interpreters
against the committed files.
"""

from __future__ import annotations

import json
import struct
import sys
from binascii import crc32
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from firmware import nodeproto as P  # noqa: E402

MESSAGES = [
    ("hello-air", {
        "type": "hello", "node_id": "240ac4123456", "firmware": "1.0.0", "protocol": [1, 0],
        "kind": "air",
        "sensors": [["sds011", "Nova Fitness SDS011", ["pm2_5", "pm10"]],
                    ["bme280", "Bosch BME280", ["temperature", "humidity", "pressure"]]],
        "oldest": 1, "next_seq": 1, "boot": 0}),
    ("hello-traffic-minimal", {
        "type": "hello", "node_id": "a4cf12ffee01", "firmware": "1.0.0", "protocol": [1, 0],
        "sensors": [["ops243", "OmniPreSense OPS243-A", ["traffic_count", "v85"]]]}),
    ("batch-air-epoch", {
        "type": "batch", "seq": 7, "t0_ms": 1764072000000,
        "records": [[0, "pm2_5", 12.5, 0, 300000], [0, "pm10", 20.25, 0, 300000],
                    [1, "temperature", -3.5, 0, 300000], [1, "humidity", 48.0, 0, 300000],
                    [1, "pressure", 101325.0, 0, 300000]],
        "oldest": 5}),
    ("batch-age", {
        "type": "batch", "seq": 1, "age_ms": 4500,
        "records": [[0, "pm2_5", 3.0, 0, 60000]], "oldest": 1}),
    ("batch-traffic-counts", {
        "type": "batch", "seq": 65536, "t0_ms": 1764072900000,
        "records": [[0, "traffic_count", 17, 0, 900000], [0, "traffic_count_lft", 9, 0, 900000],
                    [0, "traffic_count_rgt", 8, 0, 900000], [0, "v85", 52.0, 0, 900000],
                    [0, "uptime", 1.0, 0, 900000]],
        "oldest": 65536}),
    ("batch-instant-negative-dt", {
        "type": "batch", "seq": 300, "t0_ms": 1764072000000,
        "records": [[0, "speed", 47.25, -1500, 0]]}),
    ("ack", {"type": "ack", "seq": 7}),
    ("ack-zero", {"type": "ack", "seq": 0}),
    ("ack-large", {"type": "ack", "seq": 4294967296}),
    ("time", {"type": "time", "epoch_ms": 1764072000123}),
    ("cfg-get", {"type": "cfg_get"}),
    ("cfg-set", {"type": "cfg", "config": {"interval_s": 60, "enabled": ["pm", "bme280"],
                                           "calibration_id": "cal-2026-11", "battery": False}}),
    ("log-error", {"type": "log", "level": "error", "code": "config",
                   "text": "bad value for interval_s: 5"}),
    ("sync", {"type": "sync"}),
]

ADVERTS = [
    ("air", 0x12345678, 42, [("pm2_5", 12.3), ("pm10", 20.5), ("temperature", -5.25),
                             ("humidity", 48.5), ("pressure", 101325.0), ("battery_voltage", 3.9)]),
    ("traffic", 0xDEADBEEF, 255, [("traffic_count", 17.0), ("v85", 52.5)]),
    ("not-available", 1, 0, [("temperature", None), ("pm2_5", None)]),
]


def frame_without_checks(version: int, mtype: int, body: bytes, crc: int | None = None) -> str:
    payload = bytes([version, mtype]) + body
    c = crc32(payload) & 0xFFFFFFFF if crc is None else crc
    return (P.cobs_encode(payload + struct.pack(">I", c)) + b"\x00").hex()


def invalid() -> list[dict[str, object]]:
    good = P.encode_message({"type": "ack", "seq": 7})
    flipped = bytearray(P.cobs_decode(good[:-1]))
    flipped[3] ^= 0x01
    return [
        {"name": "major-version-2", "hex": frame_without_checks(0x20, 3, P.cbor_dumps({1: 7})),
         "error": "version"},
        {"name": "major-version-0", "hex": frame_without_checks(0x00, 3, P.cbor_dumps({1: 7})),
         "error": "version"},
        {"name": "crc-mismatch", "hex": (P.cobs_encode(bytes(flipped)) + b"\x00").hex(),
         "error": "crc"},
        {"name": "unknown-type", "hex": frame_without_checks(0x10, 99, P.cbor_dumps({})),
         "error": "type"},
        {"name": "body-not-map", "hex": frame_without_checks(0x10, 3, P.cbor_dumps([7])),
         "error": "schema"},
        {"name": "ack-missing-seq", "hex": frame_without_checks(0x10, 3, P.cbor_dumps({})),
         "error": "schema"},
        {"name": "batch-both-times", "hex": frame_without_checks(
            0x10, 2, P.cbor_dumps({1: 1, 2: 5, 3: 5, 4: []})), "error": "schema"},
        {"name": "cbor-truncated", "hex": frame_without_checks(0x10, 3, b"\xa1\x01"),
         "error": "cbor"},
        {"name": "cbor-tag", "hex": frame_without_checks(0x10, 3, b"\xc1\x01"), "error": "cbor"},
        {"name": "too-short", "hex": (P.cobs_encode(b"\x10\x03\xa0") + b"\x00").hex(),
         "error": "short"},
        {"name": "cobs-truncated", "hex": "0511030000", "error": "cobs"},
        {"name": "minor-version-newer-accepted", "hex": frame_without_checks(
            0x17, 3, P.cbor_dumps({1: 7, 9: "future field"})),
         "message": {"type": "ack", "seq": 7, "version": 0x17}},
    ]


def main() -> None:
    frames = [{"name": n, "hex": P.encode_message(m).hex(), "message": m} for n, m in MESSAGES]
    adverts = []
    for name, node, seq, values in ADVERTS:
        raw = P.encode_advert(node, seq, values)
        adverts.append({"name": name, "hex": raw.hex(), "advert": P.decode_advert(raw),
                        "encode": {"node": node, "seq": seq, "values": [list(v) for v in values]}})
    for fname, data in (("frames.json", frames), ("adverts.json", adverts),
                        ("invalid.json", invalid())):
        (HERE / fname).write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
