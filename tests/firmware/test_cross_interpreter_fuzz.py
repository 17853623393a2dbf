"""Hypothesis across interpreters: for random frames, MicroPython's and CPython's decoders
(the same file) reach the same verdict; the firmware's sensor parsers never crash."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.sensors.ops243.traffic import Detection, TrafficSettings, aggregate
from firmware import nodeproto as P
from hil.micropython_vm import MicroPythonVM

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "firmware"))
import pmsensor
import traffic

VERDICT = (
    "import nodeproto as P, binascii\n"
    "def _verdict(h):\n"
    "    try:\n"
    "        return {'ok': P.decode_message(binascii.unhexlify(h))}\n"
    "    except P.ProtocolError as e:\n"
    "        return {'error': e.reason}\n"
)


def cpython_verdict(block: bytes) -> dict[str, object]:
    try:
        return {"ok": P.decode_message(block)}
    except P.ProtocolError as exc:
        return {"error": exc.reason}


def mutated_frames() -> st.SearchStrategy[bytes]:
    """Valid frames with a few random byte changes, and plain random blocks."""
    base = st.sampled_from([
        P.encode_message({"type": "ack", "seq": 5})[:-1],
        P.encode_message({"type": "batch", "seq": 3, "t0_ms": 10**12,
                          "records": [[0, "pm2_5", 1.5, 0, 1000]]})[:-1],
        P.encode_message({"type": "cfg", "config": {"interval_s": 60}})[:-1],
    ])
    mutated = st.tuples(base, st.lists(st.tuples(st.integers(0, 200), st.integers(1, 255)),
                                       max_size=3)).map(_apply)
    return mutated | st.binary(min_size=1, max_size=80).filter(lambda b: 0 not in b)


def _apply(args: tuple[bytes, list[tuple[int, int]]]) -> bytes:
    frame, edits = args
    out = bytearray(frame)
    for pos, val in edits:
        out[pos % len(out)] = val
    return bytes(out)


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(block=mutated_frames())
def test_same_verdict_in_both_interpreters(vm: MicroPythonVM, block: bytes) -> None:
    assert vm.call_json(f"_verdict({block.hex()!r})", VERDICT) == cpython_verdict(block)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["sds011", "pms5003"]))
def test_pm_parsers_never_crash_nor_emit_zero_frames(data: bytes, name: str) -> None:
    sensor = pmsensor.make(name)
    for b in data:
        if sensor.feed_byte(b):
            assert any(sensor.values)  # a frame of zeros is warm-up, never a reading


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_radar_parser_never_crashes(data: bytes) -> None:
    counter = traffic.Counter("lft")
    for i, b in enumerate(data):
        counter.feed_byte(b, i * 100)
    records = {r[1]: r[2] for r in counter.records(0, 0, 1000, 1.0)}
    assert records["traffic_count"] == sum(records[c] for c in traffic.CLASSES)
    cars = records["car"]
    hist = sum(records[f"car_speed_hist_{10 * i}"] for i in range(traffic.HIST_BINS))
    assert hist == 0 if cars == 0 else abs(hist - 100) < 0.2


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 59_000), st.floats(-150, 150)), max_size=60))
def test_node_counting_equals_gateway_aggregation(reports: list[tuple[int, float]]) -> None:
    """The firmware's counter and edge.sensors.ops243.traffic.aggregate agree on the same reports."""
    reports = sorted(reports)
    counter = traffic.Counter("lft")
    for t, v in reports:
        counter.report(abs(v), v >= 0, t)
    got = {r[1]: r[2] for r in counter.records(0, 0, 60_000, 1.0)}
    # the node keeps speeds in 0.1 km/h steps (rounded half up)
    detections = [Detection(t / 1000, int(abs(v) * 10 + 0.5) / 10, "lft" if v >= 0 else "rgt")
                  for t, v in reports]
    want = {r.quantity: r.value for r in aggregate(detections, 0.0,
                                                   TrafficSettings(interval_s=60)).readings()}
    assert set(got) == set(want)
    for code, value in want.items():
        assert got[code] == pytest.approx(value, abs=0.011), code
