"""Hypothesis across interpreters: for random frames, MicroPython's and CPython's decoders
(the same file) reach the same verdict; the firmware's sensor parsers never crash."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    counted = sum(1 for b in data if counter.feed_byte(b))
    assert counter.lft + counter.rgt == counted
    v = counter.v85()
    assert v is None or 1 <= v <= traffic.HIST_MAX
