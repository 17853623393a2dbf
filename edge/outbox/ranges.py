"""Closed integer ranges ``(lo, hi)``: the outbox's bookkeeping of sequence numbers.

Confirmations, hand-outs and gaps are kept as sorted, merged ranges rather than sets of
numbers, so a million confirmed observations cost one tuple.
"""

from __future__ import annotations

import bisect
import sys
from collections.abc import Iterable, Iterator

Ranges = list[tuple[int, int]]


def merge(ranges: Iterable[tuple[int, int]]) -> Ranges:
    """Sorted, merged closed integer ranges."""
    out: Ranges = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def subtract(ranges: Ranges, points: Iterable[int]) -> Ranges:
    """Remove single integers from merged ranges."""
    out = list(ranges)
    for p in sorted(set(points)):
        for i, (a, b) in enumerate(out):
            if a <= p <= b:
                pieces = [(a, p - 1)] if a < p else []
                pieces += [(p + 1, b)] if p < b else []
                out[i : i + 1] = pieces
                break
    return out


def intersect(x: Ranges, y: Ranges) -> Ranges:
    """The ranges both merged lists cover."""
    out: Ranges = []
    i = j = 0
    while i < len(x) and j < len(y):
        lo, hi = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return out


def covers(ranges: Ranges, lo: int, hi: int) -> bool:
    """True when [lo, hi] lies inside one of the merged ranges."""
    i = bisect.bisect_right(ranges, (lo, sys.maxsize)) - 1
    return i >= 0 and ranges[i][0] <= lo and hi <= ranges[i][1]


def contains(ranges: Ranges, seq: int) -> bool:
    return covers(ranges, seq, seq)


def complement(ranges: Ranges, top: int, bottom: int = 1) -> Ranges:
    """Ranges of [bottom, top] not in ``ranges``."""
    out: Ranges = []
    lo = bottom
    for a, b in ranges:
        if b < lo:
            continue
        if a > lo:
            out.append((lo, min(a - 1, top)))
        lo = max(lo, b + 1)
        if lo > top:
            break
    if lo <= top:
        out.append((lo, top))
    return [(a, b) for a, b in out if a <= b]


def runs(seqs: list[int]) -> Iterator[tuple[int, int, int]]:
    """Contiguous runs ``(first, last, count)`` of a sorted list of integers."""
    if not seqs:
        return
    start = prev = seqs[0]
    for s in seqs[1:]:
        if s != prev + 1:
            yield start, prev, prev - start + 1
            start = s
        prev = s
    yield start, prev, prev - start + 1
