"""Node protocol codec speed: the shared CBOR subset vs cbor2 (baseline, same run).

    .venv/bin/python bench/node_codec.py

Prints frames per second for a typical air-node batch (5 records): full frame encode/decode
(COBS + CBOR + CRC) on CPython, the CBOR body alone against cbor2, and the node-side encode
under real MicroPython (WebAssembly port, i.e. a desktop CPU, not an ESP32).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cbor2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from firmware import nodeproto as P
from hil.micropython_vm import MicroPythonVM, available

BATCH = {"type": "batch", "seq": 1234, "t0_ms": 1764072000000, "oldest": 1230,
         "records": [[0, "pm2_5", 12.5, 0, 300000], [0, "pm10", 20.25, 0, 300000],
                     [1, "temperature", 21.5, 0, 300000], [1, "humidity", 48.0, 0, 300000],
                     [1, "pressure", 101325.0, 0, 300000]]}
N = 5000


def rate(fn, n: int = N) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t0)


def main() -> None:
    frame = P.encode_message(BATCH)
    block = frame[:-1]
    body = P.cbor_loads(P.cobs_decode(block)[2:-4])
    raw = P.cbor_dumps(body)
    enc = rate(lambda: P.encode_message(BATCH))
    dec = rate(lambda: P.decode_message(block))
    ours_dumps = rate(lambda: P.cbor_dumps(body))
    c2_dumps = rate(lambda: cbor2.dumps(body))
    ours_loads = rate(lambda: P.cbor_loads(raw))
    c2_loads = rate(lambda: cbor2.loads(raw))
    print(f"frame bytes on the wire: {len(frame)}")
    print(f"CPython frame encode: {enc:,.0f}/s  decode+validate: {dec:,.0f}/s")
    print(f"CBOR body dumps: ours {ours_dumps:,.0f}/s, cbor2 {c2_dumps:,.0f}/s "
          f"(ratio ours/cbor2 {ours_dumps / c2_dumps:.2f})")
    print(f"CBOR body loads: ours {ours_loads:,.0f}/s, cbor2 {c2_loads:,.0f}/s "
          f"(ratio ours/cbor2 {ours_loads / c2_loads:.2f})")
    if available() is None:
        with MicroPythonVM() as vm:
            out = vm.call_json(
                "(lambda t0: ([P.encode_message(m) for _ in range(2000)],"
                " time.ticks_diff(time.ticks_ms(), t0))[1])(time.ticks_ms())",
                "import nodeproto as P, time, json\nm = json.loads(" + repr(_json()) + ")")
            print(f"MicroPython (wasm) frame encode: {2000 / (out / 1000):,.0f}/s "
                  f"(ratio to CPython {2000 / (out / 1000) / enc:.2f})")


def _json() -> str:
    import json

    return json.dumps(BATCH)


if __name__ == "__main__":
    main()
