"""BLE path cost: decoders and the whole scanner path, in µs per advertisement.

Run: ``.venv/bin/python bench/bench_ble.py [--adverts N]``

1. Decoders: ``edge.sensors.ruuvi.codec.decode`` / ``aranet4.decode_advertisement`` on the official
   vectors, against a bare ``struct.unpack_from`` of the same bytes (baseline, same run).
2. Scanner path: N advertisements (a RuuviTag with a new sequence number each time, every
   second one repeated) delivered through bleak's real ``BleakScanner`` callback machinery by
   the replay radio into ``BleScanner`` (allow-list, decode, de-duplication, device table,
   queue), against the same radio delivering to a bare ``BleakScanner`` with a no-op callback.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import time
from collections.abc import Callable

from bleak import BleakScanner

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


def _records(n: int) -> list[AdvertRecord]:
    template = bytes.fromhex(VECTORS["ruuvi-5"][0])
    out = []
    for i in range(n):
        seq = (i // 2) % 65535  # every advertisement sent twice, as BlueZ reports RSSI updates
        payload = template[:16] + seq.to_bytes(2, "big") + template[18:]
        out.append(AdvertRecord(0.0, "CB:B8:33:4C:88:4F", "Ruuvi 884F", -60, {0x0499: payload}))
    return out


async def _through_scanner(records: list[AdvertRecord]) -> tuple[float, int]:
    radio = ReplayRadio()
    settings = BleSettings(queue_size=len(records) + 1, allow=["CB:B8:33:4C:88:4F"])
    async with BleScanner(settings, scanner_backend=radio.scanner_backend()) as scanner:
        await radio.wait_scanning()
        start = time.perf_counter()
        for record in records:
            radio.emit(record)
        elapsed = time.perf_counter() - start
        return elapsed / len(records) * 1e6, scanner.pending


async def _bare_bleak(records: list[AdvertRecord]) -> float:
    radio = ReplayRadio()
    seen = 0

    def callback(device: object, adv: object) -> None:
        nonlocal seen
        seen += 1

    bare = BleakScanner(callback, scanning_mode="active", backend=radio.scanner_backend())
    async with bare:
        start = time.perf_counter()
        for record in records:
            radio.emit(record)
        elapsed = time.perf_counter() - start
    assert seen == len(records)
    return elapsed / len(records) * 1e6


def bench_scanner(n: int) -> None:
    records = _records(n)
    ours, queued = asyncio.run(_through_scanner(records))
    base = asyncio.run(_bare_bleak(records))
    print(f"\nscanner path, {n} adverts ({queued} readings after de-duplication)")
    print(f"{'BleScanner':<14}{ours:>10.2f} µs/advert")
    print(f"{'bare bleak':<14}{base:>10.2f} µs/advert (baseline)")
    print(f"{'ratio':<14}{ours / base:>10.1f}")
    print(f"{'max rate':<14}{1e6 / ours:>10.0f} adverts/s on this machine (one core)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adverts", type=int, default=20000)
    args = parser.parse_args()
    bench_decoders(args.adverts)
    bench_scanner(args.adverts)


if __name__ == "__main__":
    main()
