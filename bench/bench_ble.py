"""BLE path cost: decoders and the whole scanner path, in µs per advertisement.

Run: ``.venv/bin/python bench/bench_ble.py [--adverts N] [--repeat R] [--against DIR]``

1. Decoders: ``edge.sensors.ruuvi.codec.decode`` / ``aranet4.decode_advertisement`` on the official
   vectors, against a bare ``struct.unpack_from`` of the same bytes (baseline, same run).
2. Scanner path: N advertisements delivered through bleak's real ``BleakScanner`` callback
   machinery by the replay radio into ``BleScanner`` (allow-list, dispatch, decode,
   de-duplication, device table, queue), against the same radio delivering to a bare
   ``BleakScanner`` with a no-op callback. Two streams: ``ruuvi`` (one RuuviTag, a new
   sequence number every second advertisement, with an allow-list) and ``mixed`` (no
   allow-list: a RuuviTag, a Ruuvi Air in E1 and format 6, an Aranet4, and a foreign beacon,
   each advertisement twice). Both scan actively: in passive mode BlueZ filters on the
   or-patterns in bluetoothd, and the replay radio's Python stand-in for that is not the
   gateway's cost. Best of R runs each, in CPU time of the
   scanning thread (``time.thread_time``: what the path costs, less disturbed than wall time
   by other processes on a shared machine).
3. ``--against DIR``: the scanner path of another source tree (e.g. ``git archive main``
   unpacked in DIR) and of this one, run alternately R times in fresh interpreters, so that
   both are measured in the same run on the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bleak import BleakScanner

from edge import plugins
from edge.ble import BleScanner, BleSettings
from edge.ble.replay import AdvertRecord, ReplayRadio
from edge.sensors.aranet4 import codec as aranet4
from edge.sensors.ruuvi import codec as ruuvi

VECTORS = {
    "ruuvi-5": ("0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F", ruuvi.decode, ">BhHHhhhHBH6s"),
    "ruuvi-E1": (
        "E1170C5668C79E0065007004BD11CA00C9050113E0AC3D4A9CDECDEE00FFFFFFFFFFCBB8334C884F",
        ruuvi.decode,
        ">BhHHHHHHHBB3s3s3sB5s6s",
    ),
    "aranet4-adv": (
        "210503010005000143049f018b27350c023c00100055",
        aranet4.decode_advertisement,
        "<BBBB4sHHHBBBHHB",
    ),
}


def _time(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def bench_decoders(n: int) -> None:
    print(f"{'decoder':<14}{'µs/advert':>10}{'baseline µs':>13}{'ratio':>8}")
    for name, (hexdata, decode, fmt) in VECTORS.items():
        data = bytes.fromhex(hexdata)
        layout = struct.Struct(fmt)
        assert layout.size == len(data), name
        ours = _time(lambda d=data, f=decode: f(d), n)  # type: ignore[misc]
        base = _time(lambda d=data, s=layout: s.unpack_from(d), n)  # type: ignore[misc]
        print(f"{name:<14}{ours:>10.2f}{base:>13.2f}{ours / base:>8.1f}")


TAG, AIR, ARANET, BEACON = (
    "CB:B8:33:4C:88:4F", "F1:2B:3C:4C:88:4F", "D0:1B:5A:00:11:22", "5A:11:22:33:44:55"
)
AIR_E1 = bytes.fromhex(VECTORS["ruuvi-E1"][0])
AIR_6 = bytes.fromhex("06170C5668C79E007000C90501D9FFCD004C884F")
APPLE = bytes.fromhex("0215e2c56db5dffb48d2b060d0f5a71096e000010002c5")


def _ruuvi5(seq: int) -> bytes:
    template = bytes.fromhex(VECTORS["ruuvi-5"][0])
    return template[:16] + (seq % 65535).to_bytes(2, "big") + template[18:]


def _records(n: int) -> list[AdvertRecord]:
    """One RuuviTag; every advertisement sent twice, as BlueZ reports RSSI updates."""
    return [AdvertRecord(0.0, TAG, "Ruuvi 884F", -60, {0x0499: _ruuvi5(i // 2)}) for i in range(n)]


def _mixed_records(n: int) -> list[AdvertRecord]:
    """Every supported kind of advertisement and a foreign one, each sent twice."""
    aranet = bytes.fromhex(VECTORS["aranet4-adv"][0])
    out = []
    for i in range(n):
        k = i // 10
        kind = (i // 2) % 5
        if kind == 0:
            out.append(AdvertRecord(0.0, TAG, None, -60, {0x0499: _ruuvi5(k)}))
        elif kind == 1:
            out.append(AdvertRecord(0.0, AIR, None, -70, {0x0499: AIR_E1}, extended=True))
        elif kind == 2:
            out.append(AdvertRecord(0.0, AIR, None, -70, {0x0499: AIR_6}))
        elif kind == 3:
            payload = aranet[:21] + bytes([k % 256])
            out.append(AdvertRecord(0.0, ARANET, "Aranet4 1B5A0", -75, {0x0702: payload}))
        else:
            out.append(AdvertRecord(0.0, BEACON, None, -80, {0x004C: APPLE}))
    return out


STREAMS: dict[str, tuple[Callable[[int], list[AdvertRecord]], dict[str, object]]] = {
    "ruuvi": (_records, {"scanning_mode": "active", "allow": [TAG]}),
    "mixed": (_mixed_records, {"scanning_mode": "active"}),
}


async def _through_scanner(
    records: list[AdvertRecord], options: dict[str, object]
) -> tuple[float, int]:
    radio = ReplayRadio()
    settings = BleSettings.model_validate({"queue_size": len(records) + 1, **options})
    async with BleScanner(settings, scanner_backend=radio.scanner_backend()) as scanner:
        await radio.wait_scanning()
        start = time.thread_time()
        for record in records:
            radio.emit(record)
        elapsed = time.thread_time() - start
        return elapsed / len(records) * 1e6, scanner.pending


async def _bare_bleak(records: list[AdvertRecord]) -> float:
    radio = ReplayRadio()
    seen = 0

    def callback(device: object, adv: object) -> None:
        nonlocal seen
        seen += 1

    bare = BleakScanner(callback, scanning_mode="active", backend=radio.scanner_backend())
    async with bare:
        start = time.thread_time()
        for record in records:
            radio.emit(record)
        elapsed = time.thread_time() - start
    assert seen == len(records)
    return elapsed / len(records) * 1e6


def scanner_path(n: int, repeat: int) -> dict[str, dict[str, float]]:
    """Best of ``repeat`` runs per stream: µs/advert through BleScanner and bare bleak."""
    plugins.sensors()  # every sensor folder loaded, as in a gateway (config validation does it)
    results = {}
    for name, (build, options) in STREAMS.items():
        records = build(n)
        runs = [asyncio.run(_through_scanner(records, options)) for _ in range(repeat)]
        base = min(asyncio.run(_bare_bleak(records)) for _ in range(repeat))
        results[name] = {"scanner_us": min(r[0] for r in runs), "bare_us": base,
                         "readings": runs[0][1]}
    return results


def bench_scanner(n: int, repeat: int) -> None:
    for name, r in scanner_path(n, repeat).items():
        ours, base = r["scanner_us"], r["bare_us"]
        print(f"\nscanner path, stream {name!r}: {n} adverts ({r['readings']:.0f} readings after "
              f"de-duplication), best of {repeat}")
        print(f"{'BleScanner':<14}{ours:>10.2f} µs/advert")
        print(f"{'bare bleak':<14}{base:>10.2f} µs/advert (baseline)")
        print(f"{'ratio':<14}{ours / base:>10.1f}")
        print(f"{'max rate':<14}{1e6 / ours:>10.0f} adverts/s on this machine (one core)")


def _run_tree(tree: Path, n: int) -> dict[str, dict[str, float]]:
    """This script's scanner path, in a fresh interpreter importing ``edge`` from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, __file__, "--adverts", str(n), "--repeat", "1", "--scanner-json"],
        cwd=tree, env=env, capture_output=True, text=True, check=True, timeout=600,
    ).stdout
    return json.loads(out)


def bench_against(other: Path, n: int, repeat: int) -> None:
    here = Path(__file__).resolve().parents[1]
    trees = {"baseline": other.resolve(), "this tree": here}
    runs: dict[str, list[dict[str, dict[str, float]]]] = {k: [] for k in trees}
    for _ in range(repeat):  # alternate, so both see the same load
        for label, tree in trees.items():
            runs[label].append(_run_tree(tree, n))
    print(f"scanner path, {n} adverts, {repeat} alternating runs per tree "
          f"(baseline: {trees['baseline']}); 'to bare': µs through BleScanner / µs through "
          "a bare BleakScanner, both measured in the same process")
    print(f"{'stream':<8}{'tree':<11}{'best µs':>9}{'median µs':>11}{'median to bare':>16}")
    for stream in STREAMS:
        best, to_bare = {}, {}
        for label in trees:
            us = [r[stream]["scanner_us"] for r in runs[label]]
            best[label] = min(us)
            to_bare[label] = statistics.median(
                r[stream]["scanner_us"] / r[stream]["bare_us"] for r in runs[label]
            )
            print(f"{stream:<8}{label:<11}{min(us):>9.2f}{statistics.median(us):>11.2f}"
                  f"{to_bare[label]:>16.2f}")
        print(f"{stream:<8}{'this/base':<11}{best['this tree'] / best['baseline']:>9.3f}"
              f"{'':>11}{to_bare['this tree'] / to_bare['baseline']:>16.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adverts", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    parser.add_argument("--against", type=Path, metavar="DIR",
                        help="compare the scanner path with the source tree in DIR")
    parser.add_argument("--scanner-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scanner_json:
        print(json.dumps(scanner_path(args.adverts, args.repeat)))
    elif args.against:
        bench_against(args.against, args.adverts, args.repeat)
    else:
        bench_decoders(args.adverts)
        bench_scanner(args.adverts, args.repeat)


if __name__ == "__main__":
    main()
