"""Baseline detectors computed in the same run as ours (bench only, not shipped).

``WindowedGaussian``: the classic streaming baseline (NAB's "windowed Gaussian"): the mean
and standard deviation of the last ``window`` values (running sums over a ring buffer), and
the score ``1 - 2 Q(|x - mean| / std)`` — how improbable ``x`` is under that Gaussian, both
tails. It keeps ``window`` floats per datastream (8 KB at the default 1000).
"""

from __future__ import annotations

import math

_SQRT1_2 = 1.0 / math.sqrt(2.0)


class WindowedGaussian:
    __slots__ = ("buf", "i", "n", "s", "ss", "window")

    def __init__(self, window: int = 1000) -> None:
        self.window = window
        self.buf = [0.0] * window
        self.i = 0
        self.n = 0
        self.s = 0.0
        self.ss = 0.0

    def update(self, x: float) -> float:
        n = self.n
        score = 0.0
        if n > 1:
            mean = self.s / n
            var = max(self.ss / n - mean * mean, 0.0)
            std = math.sqrt(var) or 1e-6
            score = 1.0 - math.erfc(abs(x - mean) / std * _SQRT1_2)
        if not math.isfinite(x):
            return 1.0 if n > 1 else 0.0
        old = self.buf[self.i]
        if n == self.window:
            self.s -= old
            self.ss -= old * old
        else:
            self.n = n + 1
        self.buf[self.i] = x
        self.s += x
        self.ss += x * x
        self.i = (self.i + 1) % self.window
        return score
