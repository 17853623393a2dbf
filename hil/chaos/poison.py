"""Poison and fuzzed messages for the gateway topics of misbehaving gateways.

* the poison messages of the original fault campaign (issue 12 item 1 and 6), by name:
  ``gaps: 5``, ``10**400`` in ``val``/``raw``, ``inf`` in quality tests, ``s0``/``t0``/``dur``
  between 2^63 and 2^64, NaN results, times in 1938/1970/2100, sequence −7, and more;
* a grid: every top-level field of a real v2 (and v1) batch replaced by every hostile value;
* random byte flips, cuts and insertions of real batches.

All are published on ``<prefix>/<gw>/obs`` of gateways that are *not* the healthy one (a
gateway can only write its own topics: the shipped ACL); some claim another gateway id than
their topic.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator

import cbor2

from edge.contract import encode_batch
from edge.model import Batch, Datastream, Observation, Provenance, Quality

HOSTILE: list[object] = [
    2**63, 2**63 + 5, 2**64 - 1, 2**64, -(2**63) - 1, 10**400, -7, 0, -1, 2**53, math.nan,
    math.inf, -math.inf, 1.5, "", "x" * 300, b"", b"\x00" * 8, None, True, [], {},
    [[[[[[[[]]]]]]]], {"agg": math.inf}, [1, 2, 3], {0: math.nan}, {-1: 1}, {10**6: 1},
]


def real_batch(gw: str, first_seq: int, n: int = 6, version: int = 2) -> bytes:
    """A valid batch of ``n`` observations (two streams, quality, a raw value, an interval)."""
    now = int(time.time() * 1000) - 5_000
    streams = [Datastream(gw, "sds", "pm2_5"), Datastream(gw, "sds", "pm10")]
    quality = Quality(1, {"gross_range": 1, "spike": 1}, {"ml_anomaly": 0.25})
    rows = tuple(
        Observation(streams[i % 2], 10.0 + i, now + i * 100, Provenance("SDS011", "C0FFEE"),
                    phenomenon_end_ms=now + i * 100 + 1000 if i == 1 else None,
                    raw_result=11.5 if i == 2 else None, quality=quality if i % 2 else None,
                    sequence=first_seq + i)
        for i in range(n)
    )
    return encode_batch(Batch(gw, rows), [(1, 2, 2, "evicted:size")], now, version=version)


def _with(payload: bytes, **changes: object) -> bytes:
    message = cbor2.loads(payload)
    message.update(changes)
    return bytes(cbor2.dumps(message))


def named(gw: str) -> list[tuple[str, bytes]]:
    """The original campaign's poison messages and their relatives, each by name."""
    v2 = real_batch(gw, 1000)
    v1 = real_batch(gw, 2000, version=1)
    n = 6
    q_inf = cbor2.loads(v1)
    q_inf["q"] = {0: {"agg": 1, "tests": {"spike": math.inf}}}
    return [
        ("gaps: 5", _with(v2, gaps=5)),
        ("val 10**400", _with(v2, val=[10**400] * n)),
        ("raw 10**400", _with(v2, raw={0: 10**400})),
        ("v1 quality test inf", bytes(cbor2.dumps(q_inf))),
        ("s0 = 2**63", _with(v2, s0=2**63)),
        ("s0 = 2**64 - 1", _with(v2, s0=2**64 - 1)),
        ("t0 = 2**63 + 5", _with(v2, t0=2**63 + 5)),
        ("dur = 2**64 - 1", _with(v2, dur=2**64 - 1)),
        ("val NaN (valid: stored as a note)", _with(v2, val=[math.nan] * n)),
        ("val inf", _with(v2, val=[math.inf] * n)),
        ("t0 in 1938", _with(v2, t0=-1_009_843_200_000)),
        ("t0 = 0 (1970)", _with(v2, t0=0)),
        ("t0 in 2100", _with(v2, t0=4_102_444_800_000)),
        ("s0 = -7", _with(v2, s0=-7)),
        ("s0 = 0", _with(v2, s0=0)),
        ("gw of another gateway", _with(v2, gw="gw-someone-else")),
        ("ver 3", _with(v2, ver=3)),
        ("unknown dictionary (need)", _without(v2, "st", "qn")),
        ("empty payload", b""),
        ("not CBOR", b"\xff\xfe{not cbor"),
        ("truncated", v2[: len(v2) // 2]),
        ("deep nesting", b"\x81" * 100_000 + b"\x00"),
        ("a CBOR integer", bytes(cbor2.dumps(5))),
    ]


def _without(payload: bytes, *keys: str) -> bytes:
    message = cbor2.loads(payload)
    for key in keys:
        message.pop(key, None)
    return bytes(cbor2.dumps(message))


def grid(gw: str) -> Iterator[tuple[str, bytes]]:
    """Every top-level field of a real v2 and v1 batch, replaced by every hostile value."""
    for version in (2, 1):
        base = cbor2.loads(real_batch(gw, 3000 + version * 100, version=version))
        for key in list(base):
            for value in HOSTILE:
                message = dict(base)
                message[key] = value
                yield f"v{version} {key} = {_short(value)}", bytes(cbor2.dumps(message))


def flipped(gw: str, rng: random.Random) -> tuple[str, bytes]:
    """A real batch with random bytes flipped, cut or inserted."""
    data = bytearray(real_batch(gw, rng.randrange(1, 10**6)))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(3)
        if op == 0:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op == 1:
            del data[rng.randrange(len(data)):]
            if not data:
                break
        else:
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.randbytes(rng.randint(1, 8))
    return "byte-level mutation", bytes(data)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."
