"""The learned online detector on its own: properties, exact state, calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.quality.detector import STATE_BYTES, StreamDetector, score_of

T0 = 1_700_000_000_000
MINUTE = 60_000

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=1e6),
    st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324, 1e99, 1e101]),
)
times = st.integers(min_value=-(10**13), max_value=10**14)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(values, times), max_size=300), st.integers(min_value=10, max_value=50))
def test_score_in_range_never_raises_state_bounded(
    items: list[tuple[float, int]], warmup: int
) -> None:
    det = StreamDetector(warmup=warmup)
    for x, t in items:
        s = det.update(x, t)
        assert 0.0 <= s <= 1.0 and not math.isnan(s)
        assert det.alarm == (s >= det.threshold)
    state = det.to_bytes()
    assert len(state) == STATE_BYTES <= 4096
    again = StreamDetector.from_bytes(state)
    assert again.to_bytes() == state


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=-1e3, max_value=1e3), min_size=50, max_size=400),
       st.integers(min_value=1, max_value=399))
def test_restored_state_continues_the_same_scores(xs: list[float], cut: int) -> None:
    whole = StreamDetector(warmup=20)
    a = [whole.update(x, T0 + i * MINUTE) for i, x in enumerate(xs)]
    first = StreamDetector(warmup=20)
    b = [first.update(x, T0 + i * MINUTE) for i, x in enumerate(xs[:cut])]
    second = StreamDetector.from_bytes(first.to_bytes())
    b += [second.update(x, T0 + i * MINUTE) for i, x in enumerate(xs[cut:], start=cut)]
    assert a == b


def test_state_of_another_format_is_refused() -> None:
    with pytest.raises(ValueError, match="bytes"):
        StreamDetector.from_bytes(b"\x01\x02")
    state = bytearray(StreamDetector().to_bytes())
    state[0] = 99
    with pytest.raises(ValueError, match="format"):
        StreamDetector.from_bytes(bytes(state))


def test_warm_up_reports_zero_and_no_alarm() -> None:
    det = StreamDetector(warmup=100)
    scores = [det.update(float(v), T0 + i * MINUTE) for i, v in enumerate([1, 5, 1e4, -3] * 25)]
    assert scores == [0.0] * 100 and not det.alarm and not det.warm
    det.update(2.0, T0 + 101 * MINUTE)
    assert det.warm


def test_score_scale_is_the_tail_probability() -> None:
    assert score_of(1e-5) == pytest.approx(0.5, abs=1e-4)
    assert score_of(1e-8) == pytest.approx(0.8, abs=1e-3)
    assert score_of(0.0) == 1.0
    assert score_of(1.0) == 0.0


def test_false_alarm_rate_on_noise_and_one_alarm_per_spike() -> None:
    """Gaussian noise with a daily cycle: alarms stay rare; each big spike alarms once."""
    rng = np.random.default_rng(11)
    n = 30_000
    x = 20 + 3 * np.sin(np.arange(n) * 2 * np.pi / 1440) + rng.normal(0, 0.5, n)
    spikes = list(range(5_000, n, 5_000))
    x[spikes] += 15.0
    det = StreamDetector()
    alarms = [i for i, v in enumerate(x) if det.update(float(v), T0 + i * MINUTE) >= 0.5 and
              det.alarm]
    assert set(spikes) <= set(alarms)
    others = [i for i in alarms if i not in spikes]
    assert len(others) <= n // 2000, others  # ≤ 0.05 % false alarms


def test_stuck_stream_alarms_once_not_forever() -> None:
    rng = np.random.default_rng(2)
    x = list(10 + rng.normal(0, 1, 3000)) + [10.0] * 2000
    det = StreamDetector()
    scores = [det.update(float(v), T0 + i * MINUTE) for i, v in enumerate(x)]
    alarms = [i for i, s in enumerate(scores) if s >= 0.5]
    assert any(i >= 3000 for i in alarms)
    assert len([i for i in alarms if i >= 3000]) <= 3
