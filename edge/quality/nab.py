"""Numenta Anomaly Benchmark (NAB) scoring rules, for labelled series in NAB's layout.

Layout: one CSV per series with ``timestamp,value`` columns, and one JSON file mapping each
CSV's name (relative path) to a list of ``[start, end]`` anomaly windows (timestamps as in
the CSV). Scoring follows the rules published with NAB (Lavin & Ahmad, 2015):

- rows in the probationary period (the first ``min(floor(0.15 n), 750)`` rows) are ignored,
  and so are windows that end inside it;
- within a window of ``w`` rows ending at row ``e``, a detection at row ``i`` sits at
  relative position ``p = -(e - i + 1) / w`` and earns ``A_TP × σ(p) / σ(-1)``, with the
  scaled sigmoid ``σ(p) = 2 / (1 + exp(5 p)) - 1`` (``σ(p) = -1`` for ``p ≥ 3``); only the
  best (earliest) detection of a window counts; a window without detection costs ``-A_FN``;
- a detection outside every window at row ``i`` earns ``A_FP × σ(p)`` with
  ``p = |i - e_prev| / (w_prev - 1)`` measured from the end of the preceding window, or
  ``σ(3) = -1`` when no window precedes it (A_FP is positive, σ is negative there);
- the normalised score is ``100 × (raw - null) / (perfect - null)`` summed over files, where
  the null detector flags nothing (``-A_FN`` per window) and the perfect one flags the first
  row of every window (``A_TP`` per window).

This is an independent implementation of those published rules; detections are binary
(the quality stage's aggregate flag ≥ 3), so no threshold sweep is needed.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

PROFILES: dict[str, dict[str, float]] = {
    "standard": {"tp": 1.0, "fp": 0.11, "fn": 1.0},
    "reward_low_FP_rate": {"tp": 1.0, "fp": 0.22, "fn": 1.0},
    "reward_low_FN_rate": {"tp": 1.0, "fp": 0.11, "fn": 2.0},
}


def scaled_sigmoid(position: float) -> float:
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probation_rows(n: int, fraction: float = 0.15) -> int:
    return int(min(math.floor(fraction * n), fraction * 5000))


@dataclass(frozen=True)
class FileScore:
    raw: float
    null: float
    perfect: float
    tp: int  # windows detected
    fn: int  # windows missed
    fp: int  # detections outside windows (after probation)


def score_file(
    detections: np.ndarray, windows: list[tuple[int, int]], profile: dict[str, float]
) -> FileScore:
    """Score binary ``detections`` (one bool per row) against row-index ``windows``."""
    n = len(detections)
    probation = probation_rows(n)
    # windows that end inside the probationary period are not scored (as in NAB)
    windows = sorted(w for w in windows if w[1] >= probation)
    a_tp, a_fp, a_fn = profile["tp"], profile["fp"], profile["fn"]
    max_tp = scaled_sigmoid(-1.0)
    best: list[float | None] = [None] * len(windows)
    fp_total = 0.0
    fp_count = 0
    w_idx = 0  # next window not yet ended
    prev_end: int | None = None
    prev_width = 0
    for i in range(n):
        while w_idx < len(windows) and i > windows[w_idx][1]:
            prev_end, prev_width = windows[w_idx][1], windows[w_idx][1] - windows[w_idx][0] + 1
            w_idx += 1
        if not detections[i] or i < probation:
            continue
        in_window = w_idx < len(windows) and windows[w_idx][0] <= i <= windows[w_idx][1]
        if in_window:
            start, end = windows[w_idx]
            width = end - start + 1
            score = scaled_sigmoid(-(end - i + 1) / width) * a_tp / max_tp
            current = best[w_idx]
            best[w_idx] = score if current is None else max(current, score)
        else:
            position = 3.0 if prev_end is None else abs(prev_end - i) / max(prev_width - 1, 1)
            fp_total += scaled_sigmoid(position) * a_fp
            fp_count += 1
    tp_total = sum(b for b in best if b is not None)
    missed = sum(1 for b in best if b is None)
    raw = tp_total - a_fn * missed + fp_total
    return FileScore(
        raw=raw,
        null=-a_fn * len(windows),
        perfect=a_tp * len(windows),
        tp=len(windows) - missed,
        fn=missed,
        fp=fp_count,
    )


def normalised(scores: list[FileScore]) -> float:
    raw = sum(s.raw for s in scores)
    null = sum(s.null for s in scores)
    perfect = sum(s.perfect for s in scores)
    if perfect == null:
        return 0.0
    return 100.0 * (raw - null) / (perfect - null)


def parse_time(text: str) -> int:
    """NAB timestamps (``2014-04-10 07:15:00[.000000]``, UTC) → epoch ms."""
    stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return int(stamp.timestamp() * 1000)


def read_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``timestamp,value`` CSV → (epoch ms int64, values float64)."""
    times: list[int] = []
    values: list[float] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            times.append(parse_time(row["timestamp"]))
            text = (row.get("value") or "").strip()
            values.append(float(text) if text else math.nan)
    return np.asarray(times, np.int64), np.asarray(values, np.float64)


def windows_to_rows(times_ms: np.ndarray, windows: list[list[str]]) -> list[tuple[int, int]]:
    """Map ``[start, end]`` timestamps to the first row ≥ start and the last row ≤ end."""
    rows = []
    for start, end in windows:
        lo = int(np.searchsorted(times_ms, parse_time(start), side="left"))
        hi = int(np.searchsorted(times_ms, parse_time(end), side="right")) - 1
        if lo <= hi:
            rows.append((lo, hi))
    return rows


def load_labels(path: Path) -> dict[str, list[list[str]]]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object keyed by file name")
    return {str(k): list(v) for k, v in data.items()}


@dataclass(frozen=True)
class LabelledScores:
    """One series' graded anomaly scores (one per row) and its anomaly windows (row ranges)."""

    name: str
    scores: np.ndarray
    windows: list[tuple[int, int]]


@dataclass(frozen=True)
class Sweep:
    """The threshold that maximises the normalised score of a set of series, per profile."""

    profile: str
    threshold: float
    score: float
    curve: list[tuple[float, float]]  # (threshold, normalised score), ascending thresholds


class _FileCurve:
    """The raw NAB score of one series as a step function of the threshold."""

    def __init__(self, item: LabelledScores, profile: dict[str, float]) -> None:
        scores = np.nan_to_num(np.asarray(item.scores, np.float64), nan=-np.inf)
        n = len(scores)
        probation = probation_rows(n)
        windows = sorted(w for w in item.windows if w[1] >= probation)
        a_tp, a_fp, a_fn = profile["tp"], profile["fp"], profile["fn"]
        max_tp = scaled_sigmoid(-1.0)
        self.a_fn = a_fn
        self.null = -a_fn * len(windows)
        self.perfect = a_tp * len(windows)
        # per window: prefix maxima of the scores and the reward of each row
        self.windows: list[tuple[np.ndarray, np.ndarray]] = []
        in_window = np.zeros(n, bool)
        fp_weight = np.zeros(n)
        prev_end: int | None = None
        prev_width = 0
        w_idx = 0
        for i in range(probation, n):
            while w_idx < len(windows) and i > windows[w_idx][1]:
                prev_end = windows[w_idx][1]
                prev_width = windows[w_idx][1] - windows[w_idx][0] + 1
                w_idx += 1
            if w_idx < len(windows) and windows[w_idx][0] <= i <= windows[w_idx][1]:
                in_window[i] = True
            else:
                position = 3.0 if prev_end is None else abs(prev_end - i) / max(prev_width - 1, 1)
                fp_weight[i] = scaled_sigmoid(position) * a_fp
        for start, end in windows:
            lo = max(start, probation)
            width = end - start + 1
            rows = np.arange(lo, end + 1)
            rewards = np.array([scaled_sigmoid(-(end - i + 1) / width) * a_tp / max_tp
                                for i in rows])
            self.windows.append((np.maximum.accumulate(scores[lo : end + 1]), rewards))
        fp_rows = np.flatnonzero(~in_window & (np.arange(n) >= probation))
        order = np.argsort(-scores[fp_rows], kind="stable")
        self.fp_scores = -scores[fp_rows][order]  # ascending copy of -score for searchsorted
        self.fp_cum = np.concatenate([[0.0], np.cumsum(fp_weight[fp_rows][order])])

    def raw(self, thresholds: np.ndarray) -> np.ndarray:
        """Raw NAB score at each threshold (detection: score >= threshold)."""
        total = self.fp_cum[np.searchsorted(self.fp_scores, -thresholds, side="right")]
        for prefix_max, rewards in self.windows:
            first = np.searchsorted(prefix_max, thresholds, side="left")
            hit = first < len(prefix_max)
            total = total + np.where(hit, rewards[np.minimum(first, len(rewards) - 1)],
                                     -self.a_fn)
        return total


def sweep(items: list[LabelledScores], profile: str = "standard",
          thresholds: np.ndarray | None = None) -> Sweep:
    """Normalised NAB score over all ``items`` at every threshold; the best one wins.

    Default thresholds: every distinct score (rounded to 3 decimals) plus one above them all
    (the null detector). NAB sweeps the threshold the same way, over the whole corpus at once.
    """
    weights = PROFILES[profile]
    if thresholds is None:
        parts: list[np.ndarray] = [np.zeros(0)]
        parts += [np.round(np.asarray(i.scores, np.float64), 3) for i in items]
        every = np.concatenate(parts)
        every = every[np.isfinite(every)]
        thresholds = np.unique(np.concatenate([every, [np.inf]]))
    curves = [_FileCurve(i, weights) for i in items]
    raw = sum((c.raw(thresholds) for c in curves), np.zeros(len(thresholds)))
    null = sum(c.null for c in curves)
    perfect = sum(c.perfect for c in curves)
    norm = 100.0 * (raw - null) / (perfect - null) if perfect != null else np.zeros_like(raw)
    best = int(np.argmax(norm))
    return Sweep(profile, float(thresholds[best]), float(norm[best]),
                 [(float(t), float(s)) for t, s in zip(thresholds, norm, strict=True)])
