"""Fuzz every sensor decoder with N inputs each and count escaped exceptions (must be 0).

    .venv/bin/python bench/fuzz_decoders.py [--n 100000] [--seed 1] [--json]

Inputs per decoder, in equal shares: random bytes; the sensor's own reference frames
(``edge/sensors/<name>/vectors.json``) with bit flips, truncations, duplications and
insertions; concatenations of such pieces fed in random chunk sizes; and, for text
protocols, JSON lines with hostile values (huge integers, deep nesting, wrong types).
A decoder may reject anything, but must never raise and must keep decoding afterwards
(a valid frame fed after every 1,000 inputs must come out).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from edge import plugins
from edge.codec import SensorDescriptor, StreamDecoder

SENSORS = Path(__file__).resolve().parents[1] / "edge" / "sensors"


def seed_frames(name: str) -> list[bytes]:
    path = SENSORS / name / "vectors.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    frames = []
    for group in ("frames", "cases", "advertisements"):
        for vector in data.get(group, []):
            if vector.get("text"):
                frames.append(vector["text"].encode())
            elif vector.get("hex") and not vector.get("reason"):
                frames.append(bytes.fromhex(vector["hex"].replace(" ", "")))
    return frames


def mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and data:
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            del data[rng.randrange(len(data)) :]
        elif op == 2:
            data[rng.randrange(len(data) + 1) : 0] = rng.randbytes(rng.randint(1, 8))
        else:
            data += data[: rng.randint(0, len(data))]
    return bytes(data)


def hostile_json(rng: random.Random) -> bytes:
    key = rng.choice(["speed", "DetectedObjectVelocity", "DetectedObjectCount", "unit",
                      "direction", "magnitude", "x"])
    value = rng.choice([
        "9" * rng.randint(300, 5000), "-" + "9" * 400, "1e999", "NaN", "[" * 2000 + "1" + "]" * 2000,
        '"' + "9" * 400 + '"', "{}", "null", "true", '"inbound"', "[]", str(rng.random()),
    ])
    return b'{"%s":%s}\r\n' % (key.encode(), value.encode())


def one_input(rng: random.Random, seeds: list[bytes], text: bool) -> bytes:
    kind = rng.randrange(4 if text else 3)
    if kind == 0 or not seeds:
        return rng.randbytes(rng.randint(0, 300))
    if kind == 1:
        return mutate(rng, rng.choice(seeds))
    if kind == 2:
        return b"".join(mutate(rng, rng.choice(seeds)) if rng.random() < 0.5 else rng.choice(seeds)
                        for _ in range(rng.randint(2, 6)))
    return hostile_json(rng)


def fuzz(desc: SensorDescriptor, n: int, rng: random.Random) -> tuple[int, int, list[str]]:
    seeds = seed_frames(desc.name)
    valid = seeds[0] if seeds else b""
    text = desc.name == "ops243"
    decoder: StreamDecoder = desc.decoder()
    escaped = 0
    lost_sync = 0
    examples: list[str] = []
    for i in range(n):
        data = one_input(rng, seeds, text)
        try:
            pos = 0
            while pos < len(data):  # random chunking, as a serial port delivers
                step = rng.randint(1, 64)
                decoder.feed(data[pos : pos + step])
                pos += step
            if desc.interface == "ble":
                decoder.feed(data)
        except Exception as exc:  # the whole point: count what escapes
            escaped += 1
            if len(examples) < 3:
                examples.append(f"{type(exc).__name__}: {exc} <- {data[:40].hex()}")
            decoder = desc.decoder()
        if valid and i % 1000 == 999:
            decoder.reset()
            try:
                if not any(f.kind for f in decoder.feed(valid)):
                    lost_sync += 1
            except Exception:
                escaped += 1
    return escaped, lost_sync, examples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="inputs per decoder")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    if not args.json:
        print(f"{'decoder':10} {'inputs':>8} {'escaped':>8} {'no-resync':>10} {'s':>6}")
    total = 0
    figures: dict[str, dict[str, object]] = {}
    for name, sensor in sorted(plugins.sensors().items()):
        rng = random.Random(f"{args.seed}/{name}")
        t0 = time.perf_counter()
        escaped, lost, examples = fuzz(sensor.descriptor, args.n, rng)
        total += escaped + lost
        seconds = time.perf_counter() - t0
        figures[name] = {"inputs": args.n, "escaped": escaped, "no_resync": lost,
                         "seconds": round(seconds, 1), "examples": examples}
        if not args.json:
            print(f"{name:10} {args.n:8d} {escaped:8d} {lost:10d} {seconds:6.1f}")
            for example in examples:
                print(f"    {example}")
    if args.json:
        print(json.dumps({"seed": args.seed, "decoders": figures, "failures": total}))
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
