"""Fuzz the upload contract's decoders: nothing but ContractError may escape.

Run:  .venv/bin/python bench/fuzz_contract.py [examples per kind, default 100000] [seed] [--json]

Kinds: random bytes; byte-level mutations (flips, truncation, insertion) of real v1 and v2
batches; structural mutations of real batches (any field, or any element inside one, replaced
by a hostile value: 2^63, 2^64, 10^400, NaN, ±inf, wrong types, deep nesting); the same for
acks. Prints accepted / rejected / escaped per kind (``--json``: one JSON document) and exits
1 if anything escaped.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cbor2

from edge.contract import (
    Ack,
    ContractError,
    SessionDictionary,
    decode_ack,
    decode_batch,
    encode_ack,
    encode_batch,
)
from edge.model import Batch, Datastream, Observation, Provenance, Quality

GW = "gw-fuzz"
HOSTILE: list[object] = [
    2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**400, -7, 0, -1, 1, 2**53, math.nan, math.inf,
    -math.inf, 1.5, "", "x" * 300, b"", b"\x00" * 8, None, True, [], {}, [[[[[]]]]],
    {"agg": math.inf}, [1, 2, 3], {0: math.nan}, {-1: 1}, {10**6: 1}, ["a", 1, None],
]


def _seed_payloads() -> list[bytes]:
    t = int(time.time() * 1000) - 60_000
    s = [Datastream(GW, "sds", "pm2_5"), Datastream(GW, "sds", "pm10"),
         Datastream(GW, "radar", "car")]
    q = Quality(3, {"gross_range": 1, "spike": 3}, {"ml_anomaly": 0.8123, "gap_s": 12.5})
    rows = tuple(
        Observation(s[i % 3], 10 + i / 10 if i % 7 else math.nan, t + i * 100,
                    Provenance("SDS011", "A1", "", "cal", "2"),
                    phenomenon_end_ms=t + i * 100 + 60_000 if i % 3 == 2 else None,
                    result_ms=t + i * 100 + 5 if i % 5 == 0 else None,
                    raw_result=11.0 if i % 4 == 0 else None,
                    quality=q if i % 2 else None, sequence=100 + i + (i // 5))
        for i in range(12)
    )
    batch = Batch(GW, rows)
    gaps = [(1, 50, -1, "restart:unclean")]
    return [encode_batch(batch, gaps), encode_batch(batch, gaps, version=1)]


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:
            del b[rng.randrange(len(b)):]
        elif op == 2:
            at = rng.randrange(len(b) + 1)
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 9)))
        elif b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def _mutate_structure(rng: random.Random, value: object, depth: int = 0) -> object:
    """Replace one randomly chosen node (at any depth) by a hostile value, or drop a key."""
    if isinstance(value, dict) and value and (depth == 0 or rng.random() < 0.7):
        key = rng.choice(list(value))
        out = dict(value)
        if rng.random() < 0.1:
            del out[key]
        else:
            out[key] = _mutate_structure(rng, out[key], depth + 1)
        return out
    if isinstance(value, list) and value and rng.random() < 0.7:
        out_list = list(value)
        i = rng.randrange(len(out_list))
        out_list[i] = _mutate_structure(rng, out_list[i], depth + 1)
        return out_list
    return rng.choice(HOSTILE)


def _random_cbor(rng: random.Random, depth: int = 0) -> object:
    if depth > 3 or rng.random() < 0.4:
        return rng.choice(HOSTILE)
    if rng.random() < 0.5:
        return [_random_cbor(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    keys = ["ver", "gw", "s0", "dt", "si", "val", "sr", "st", "qk", "qs", "qv", "ok", "x",
            "need", 0, 1]
    return {rng.choice(keys): _random_cbor(rng, depth + 1) for _ in range(rng.randint(0, 6))}


def run(n: int, seed: int, as_json: bool = False) -> int:
    rng = random.Random(seed)
    seeds = _seed_payloads()
    carried = decode_batch(seeds[0]).dictionary
    assert carried is not None
    known: dict[tuple[str, bytes], SessionDictionary] = {(GW, carried.ref): carried}

    def lookup(gw: str, ref: bytes) -> SessionDictionary | None:
        return known.get((gw, ref))

    seed_msgs = [cbor2.loads(p) for p in seeds]
    ref_only = dict(seed_msgs[0])
    for key in ("st", "qn"):
        ref_only.pop(key)
    seed_msgs.append(ref_only)
    ack_msg = cbor2.loads(encode_ack(Ack([(1, 10)], [(11, 12, "bad")], [(b"12345678", 13, 20)])))

    def batch_decoder(payload: bytes) -> object:
        return decode_batch(payload, lookup)

    kinds: list[tuple[str, Callable[[], bytes], Callable[[bytes], object]]] = [
        ("batch: random bytes",
         lambda: rng.randbytes(rng.randint(0, 200)), batch_decoder),
        ("batch: mutated bytes",
         lambda: _mutate_bytes(rng, rng.choice(seeds)), batch_decoder),
        ("batch: mutated structure",
         lambda: cbor2.dumps(_mutate_structure(rng, rng.choice(seed_msgs))), batch_decoder),
        ("batch: random CBOR",
         lambda: cbor2.dumps(_random_cbor(rng)), batch_decoder),
        ("ack: mutated bytes",
         lambda: _mutate_bytes(rng, cbor2.dumps(ack_msg)), decode_ack),
        ("ack: mutated structure",
         lambda: cbor2.dumps(_mutate_structure(rng, ack_msg)), decode_ack),
    ]
    escaped_total = 0
    figures: dict[str, dict[str, int]] = {}
    if not as_json:
        print(f"{'kind':28s} {'examples':>9s} {'accepted':>9s} {'rejected':>9s} {'escaped':>8s}"
              f" {'per s':>8s}")
    for name, make, decode in kinds:
        accepted = rejected = escaped = 0
        t0 = time.perf_counter()
        for _ in range(n):
            payload = make()
            try:
                decode(payload)
                accepted += 1
            except ContractError:
                rejected += 1
            except Exception:
                escaped += 1
                if escaped <= 3:
                    print(f"ESCAPED in {name}: {payload[:80]!r}", file=sys.stderr)
                    traceback.print_exc()
        rate = n / (time.perf_counter() - t0)
        figures[name] = {"inputs": n, "accepted": accepted, "rejected": rejected,
                         "escaped": escaped}
        if not as_json:
            print(f"{name:28s} {n:9,d} {accepted:9,d} {rejected:9,d} {escaped:8,d} {rate:8,.0f}")
        escaped_total += escaped
    if as_json:
        print(json.dumps({"seed": seed, "kinds": figures, "failures": escaped_total}))
    return 1 if escaped_total else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=100_000, help="examples per kind")
    parser.add_argument("seed", nargs="?", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()
    sys.exit(run(args.n, args.seed, args.json))
