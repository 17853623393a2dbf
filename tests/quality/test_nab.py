"""The NAB scorer against scores computed by hand from the published rules."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edge.quality import nab


def sig(p: float) -> float:
    """NAB's scaled sigmoid, written out by hand."""
    return -1.0 if p >= 3 else 2.0 / (1.0 + math.exp(5.0 * p)) - 1.0


def test_scaled_sigmoid_landmarks() -> None:
    assert nab.scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert nab.scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert nab.scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(3.0) == -1.0


def test_probation_length() -> None:
    assert nab.probation_rows(20) == 3
    assert nab.probation_rows(100_000) == 750


def _example() -> tuple[np.ndarray, list[tuple[int, int]]]:
    # 20 rows, probation = 3 rows; windows rows 8-11 (detected) and 16-18 (missed)
    det = np.zeros(20, bool)
    det[[1, 5, 9, 10, 15]] = True  # 1: probation, 5: FP before any window, 9/10: TP, 15: FP
    return det, [(8, 11), (16, 18)]


def test_hand_computed_standard_profile() -> None:
    det, windows = _example()
    s = nab.score_file(det, windows, nab.PROFILES["standard"])
    tp = sig(-(11 - 9 + 1) / 4) / sig(-1.0)  # earliest detection in the window wins
    fp = 0.11 * sig(3.0) + 0.11 * sig(abs(11 - 15) / (4 - 1))
    raw = tp - 1.0 + fp  # second window missed: -A_FN
    assert tp == pytest.approx(0.966989, abs=1e-6)
    assert raw == pytest.approx(-0.252731, abs=1e-6)
    assert s.raw == pytest.approx(raw, abs=1e-9)
    assert (s.tp, s.fn, s.fp) == (1, 1, 2)
    assert s.null == -2.0 and s.perfect == 2.0
    assert nab.normalised([s]) == pytest.approx(100 * (raw + 2) / 4, abs=1e-9)
    assert nab.normalised([s]) == pytest.approx(43.6818, abs=1e-3)


def test_hand_computed_other_profiles() -> None:
    det, windows = _example()
    low_fp = nab.score_file(det, windows, nab.PROFILES["reward_low_FP_rate"])
    low_fn = nab.score_file(det, windows, nab.PROFILES["reward_low_FN_rate"])
    tp = sig(-0.75) / sig(-1.0)
    fp_unit = sig(3.0) + sig(4 / 3)
    assert low_fp.raw == pytest.approx(tp - 1.0 + 0.22 * fp_unit, abs=1e-9)
    assert low_fn.raw == pytest.approx(tp - 2.0 + 0.11 * fp_unit, abs=1e-9)
    assert low_fn.null == -4.0


def test_perfect_and_null_detectors() -> None:
    windows = [(8, 11), (16, 18)]
    perfect = np.zeros(20, bool)
    perfect[[8, 16]] = True
    null = np.zeros(20, bool)
    p = nab.PROFILES["standard"]
    assert nab.normalised([nab.score_file(perfect, windows, p)]) == pytest.approx(100.0)
    assert nab.normalised([nab.score_file(null, windows, p)]) == pytest.approx(0.0)


def test_window_in_probation_is_not_scored() -> None:
    det = np.zeros(100, bool)
    s = nab.score_file(det, [(2, 5)], nab.PROFILES["standard"])  # probation = 15 rows
    assert (s.null, s.fn) == (0.0, 0)


def test_labels_and_series_layout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a.csv").write_text(
        "timestamp,value\n" + "".join(f"2014-04-01 00:{m:02d}:00,{m}\n" for m in range(10))
    )
    (tmp_path / "labels.json").write_text(
        json.dumps({"a.csv": [["2014-04-01 00:03:00.000000", "2014-04-01 00:05:00.000000"]]})
    )
    times, values = nab.read_series(tmp_path / "a.csv")
    labels = nab.load_labels(tmp_path / "labels.json")
    assert nab.windows_to_rows(times, labels["a.csv"]) == [(3, 5)]
    assert values[4] == 4.0
