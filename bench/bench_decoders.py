"""Decode throughput per stream decoder, in µs per frame, against a bare-``struct`` baseline.

Run: ``.venv/bin/python bench/bench_decoders.py [--frames N]``

For every decoder: N valid frames are concatenated and fed (a) one frame per ``feed`` call,
as a serial reader at 1 Hz would, and (b) in 4 KiB chunks, as after a backlog. The baseline
is a bare ``struct.unpack_from`` of the same frames (no sync, no checksum, no objects; for the
text protocol of the OPS243 a bare ``json.loads`` of the line), measured in the same run; the
ratio says what framing, checksums and ``Frame``/``Reading`` objects cost. Times are CPU time
of this process (``time.process_time``), best of 9, so other load on the machine inflates them
less than wall-clock time would.
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Case:
    name: str
    module: str
    make: Callable[[random.Random], bytes]
    baseline_fmt: str  # struct format covering the frame (what a "no checks" decoder would do)
    # ... or, for text protocols, a bare parse of one frame (used instead of baseline_fmt)
    baseline_fn: Callable[[bytes], object] | None = None


def _sds011(rng: random.Random) -> bytes:
    from edge.sensors.sds011 import codec as sds011

    return sds011.data_frame(rng.uniform(1, 200), rng.uniform(1, 400))


def _pms5003(rng: random.Random) -> bytes:
    from edge.sensors.pms5003 import codec as pms5003

    return pms5003.data_frame({q: rng.uniform(1, 500) for q in pms5003.DESCRIPTOR.quantities})


def _sps30(rng: random.Random) -> bytes:
    from edge.sensors.sps30 import codec as sps30

    return sps30.data_frame({q: rng.uniform(0.5, 60) for q in sps30.DESCRIPTOR.quantities})


def _mhz19b(rng: random.Random) -> bytes:
    from edge.sensors.mhz19b import codec as mhz19b

    return mhz19b.data_frame(rng.uniform(400, 2000))


def _scd30(rng: random.Random) -> bytes:
    from edge.sensors.scd30 import codec as scd30

    return scd30.data_frame({"co2": rng.uniform(400, 2000), "temperature": rng.uniform(0, 30),
                             "humidity": rng.uniform(20, 90)})


def _ops243(rng: random.Random) -> bytes:
    from edge.sensors.ops243 import codec as ops243

    return ops243.object_report(rng.uniform(5, 90), rng.choice(["inbound", "outbound"]),
                                1.7e9 + rng.uniform(0, 1e5))


CASES = [
    Case("sds011", "edge.sensors.sds011.codec", _sds011, "<2xHH4x"),
    Case("pms5003", "edge.sensors.pms5003.codec", _pms5003, ">4x12HBBH"),
    Case("sps30", "edge.sensors.sps30.codec", _sps30, ">5x10f"),
    Case("mhz19b", "edge.sensors.mhz19b.codec", _mhz19b, ">2xH5x"),
    Case("scd30", "edge.sensors.scd30.codec", _scd30, ">3x3f2x"),
    Case("ops243", "edge.sensors.ops243.codec", _ops243, "", baseline_fn=json.loads),
]


def _best(fn: Callable[[], int], repeat: int = 9) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def bench(case: Case, n: int) -> tuple[float, float, float]:
    mod = importlib.import_module(case.module)
    rng = random.Random(1)
    frames = [case.make(rng) for _ in range(n)]
    stream = b"".join(frames)
    chunks = [stream[i : i + 4096] for i in range(0, len(stream), 4096)]
    unpack = case.baseline_fn or struct.Struct(case.baseline_fmt).unpack_from

    def per_frame() -> int:
        dec = mod.DESCRIPTOR.decoder()
        got = 0
        for f in frames:
            got += len(dec.feed(f))
        assert got == n, got
        return got

    def chunked() -> int:
        dec = mod.DESCRIPTOR.decoder()
        got = 0
        for c in chunks:
            got += len(dec.feed(c))
        assert got == n, got
        return got

    def baseline() -> int:
        for f in frames:
            unpack(f)
        return n

    us = 1e6 / n
    return _best(per_frame) * us, _best(chunked) * us, _best(baseline) * us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5000)
    args = parser.parse_args()
    print(f"{'decoder':<10} {'per-frame µs':>13} {'4KiB-chunk µs':>14} {'struct µs':>10} "
          f"{'ratio':>7}  (best of 9, {args.frames} frames)")
    for case in CASES:
        per, chunk, base = bench(case, args.frames)
        print(f"{case.name:<10} {per:13.2f} {chunk:14.2f} {base:10.3f} {per / base:6.1f}x")


if __name__ == "__main__":
    main()
