"""Each rule on synthetic series with known answers, through the real QualityStage."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.model import QC_FAIL, QC_NOT_EVALUATED, QC_PASS, QC_SUSPECT, Quality
from edge.quality.settings import QualitySettings
from edge.quality.stage import QualityStage

from .conftest import T0, make_obs
from .series import clean_site_pm

MIN = 60_000


def stage(**quality: object) -> QualityStage:
    data = {"ml": {"enabled": False}, **quality}
    return QualityStage(QualitySettings.model_validate(data))


def run(s: QualityStage, values: list[float], code: str = "pm2_5", step_ms: int = MIN,
        sensor: str = "s1") -> list[Quality]:
    out = []
    for i, v in enumerate(values):
        o = make_obs(sensor, code, v, T0 + i * step_ms)
        s.process([o])
        assert o.quality is not None
        out.append(o.quality)
    return out


def wiggle(n: int, base: float = 10.0, amp: float = 1.0) -> list[float]:
    """A smooth, never-repeating series."""
    return [base + amp * math.sin(i * 0.7) + 0.01 * i for i in range(n)]


def test_gross_range_fail_and_suspect() -> None:
    q = run(stage(), [10.0, -5.0, 1500.0, 700.0, math.nan, math.inf])
    assert [x.tests["gross_range"] for x in q] == [
        QC_PASS, QC_FAIL, QC_FAIL, QC_SUSPECT, QC_FAIL, QC_FAIL
    ]
    assert [x.aggregate for x in q[1:3]] == [QC_FAIL, QC_FAIL]


def test_climatology_by_month() -> None:
    # T0 is in November: the winter range applies; no range for May → not evaluated
    s = stage(quantities={"temperature": {"climatology": [
        {"months": [11, 12, 1, 2], "min": -10, "max": 15},
    ]}})
    q = run(s, [5.0, 20.0], code="temperature")
    assert [x.tests["climatology"] for x in q] == [QC_PASS, QC_SUSPECT]
    may = make_obs("s1", "temperature", 5.0, 1_715_000_000_000)
    s.process([may])
    assert may.quality is not None and may.quality.tests["climatology"] == QC_NOT_EVALUATED


def test_spike_flagged_and_neighbours_pass() -> None:
    values = wiggle(40)
    values[30] += 40.0  # suspect (> 8 scales), not fail
    values[35] += 400.0  # fail (> 16 scales)
    q = run(stage(), values)
    flags = [x.tests["spike"] for x in q]
    assert flags[:3] == [QC_NOT_EVALUATED] * 3  # needs 3 previous values
    assert flags[30] in (QC_SUSPECT, QC_FAIL)
    assert flags[35] == QC_FAIL
    others = [f for i, f in enumerate(flags[12:], start=12) if i not in (30, 35)]
    assert set(others) == {QC_PASS}


def test_spike_below_absolute_floor_is_not_a_spike() -> None:
    values = [10.0 + 0.001 * (i % 2) for i in range(30)]
    values[20] = 14.0  # huge in robust scales, but below spike_min_abs = 5 µg/m³
    q = run(stage(), values)
    assert q[20].tests["spike"] == QC_PASS


def test_rate_of_change() -> None:
    # humidity default: 0.2 %/s; 60 s steps: +6 % passes, +20 % is suspect
    q = run(stage(), [50.0, 56.0, 76.0], code="humidity")
    assert [x.tests.get("rate_of_change") for x in q] == [None, QC_PASS, QC_SUSPECT]


def test_flat_line_suspect_then_fail() -> None:
    # once the stream's habits are learned (here: it never repeats), the configured counts rule
    s = stage(quantities={"pm2_5": {"flat_line_suspect": 4, "flat_line_fail": 6}})
    q = run(s, wiggle(30, base=30.0) + [22.0] * 7 + [23.0])[30:]
    flags = [x.tests["flat_line"] for x in q]
    assert flags == [QC_PASS] * 3 + [QC_SUSPECT] * 2 + [QC_FAIL] * 2 + [QC_PASS]


def test_flat_line_below_min_level_is_clean_air() -> None:
    s = stage(quantities={"pm2_5": {"flat_line_suspect": 3, "flat_line_fail": 4}})
    q = run(s, [1.0] * 10)
    assert {x.tests["flat_line"] for x in q} == {QC_PASS}


def test_gap_marks_first_value_after_gap_without_touching_aggregate() -> None:
    s = stage()
    times = [0, 1, 2, 3, 4, 20, 21]  # minutes: 16-minute gap before the 6th value
    qs = []
    for i, t in enumerate(times):
        o = make_obs("s1", "pm2_5", wiggle(10)[i], T0 + t * MIN)
        s.process([o])
        qs.append(o.quality)
    assert [q.tests.get("gap") for q in qs] == [None] * 5 + [9, None]
    assert qs[5].scores["gap_s"] == pytest.approx(16 * 60)
    assert qs[5].aggregate == QC_PASS


def test_pm_order_and_cf1_consistency() -> None:
    s = stage()
    ok = [make_obs("pms", c, v, T0) for c, v in
          (("pm1", 5.0), ("pm2_5", 8.0), ("pm10", 9.0), ("pm2_5_cf1", 8.0))]
    s.process(ok)
    assert all(o.quality and o.quality.tests["pm_order"] == QC_PASS for o in ok[:3])
    assert ok[1].quality and ok[1].quality.tests["pm_cf1"] == QC_PASS
    bad = [make_obs("pms", c, v, T0 + MIN) for c, v in
           (("pm1", 5.0), ("pm2_5", 15.0), ("pm10", 9.0), ("pm2_5_cf1", 10.0))]
    s.process(bad)
    flags = {o.stream.quantity_code: o.quality.tests for o in bad if o.quality}
    assert flags["pm1"]["pm_order"] == QC_PASS
    assert flags["pm2_5"]["pm_order"] == QC_SUSPECT
    assert flags["pm10"]["pm_order"] == QC_SUSPECT
    assert flags["pm2_5"]["pm_cf1"] == QC_SUSPECT
    assert bad[1].quality and bad[1].quality.aggregate == QC_SUSPECT


def _pair_settings(**extra: object) -> dict[str, object]:
    pair = {"sensor_a": "a", "sensor_b": "b", "quantity": "pm2_5", "abs_tolerance": 2.0,
            "rel_tolerance": 0.3, "ratio_floor": 1.0, "drift_warmup": 100, **extra}
    return {"colocated": [pair]}


def test_colocated_disagreement() -> None:
    s = stage(**_pair_settings())
    pairs = [(20.0, 21.0), (20.0, 40.0)]
    flags = []
    for i, (a, b) in enumerate(pairs):
        oa, ob = make_obs("a", "pm2_5", a, T0 + i * MIN), make_obs("b", "pm2_5", b, T0 + i * MIN)
        s.process([oa, ob])
        assert ob.quality is not None
        flags.append(ob.quality.tests["colocated"])
    assert flags == [QC_PASS, QC_SUSPECT]


def test_colocated_drift_detected_and_not_on_clean_pair() -> None:
    import numpy as np

    rng = np.random.default_rng(3)
    n = 400
    base = 20 + 5 * np.sin(np.arange(n) / 10)
    noise_a = np.exp(rng.normal(0, 0.02, n))
    noise_b = np.exp(rng.normal(0, 0.02, n))
    drift = np.where(np.arange(n) >= 200, 1 + 0.004 * (np.arange(n) - 200), 1.0)
    for drifting, expect in ((False, False), (True, True)):
        s = stage(**_pair_settings())
        first = None
        for i in range(n):
            a = float(base[i] * noise_a[i] * (drift[i] if drifting else 1.0))
            oa = make_obs("a", "pm2_5", a, T0 + i * MIN)
            ob = make_obs("b", "pm2_5", float(base[i] * noise_b[i]), T0 + i * MIN)
            s.process([ob, oa])
            assert oa.quality is not None
            if oa.quality.tests.get("colocated_drift") == QC_SUSPECT and first is None:
                first = i
        assert (first is not None) is expect
        if expect:
            assert first is not None and 200 < first < 300


def test_existing_quality_is_merged() -> None:
    s = stage()
    o = make_obs("s1", "pm2_5", 10.0, T0)
    o.quality = Quality()
    o.quality.set("calibration_range", QC_SUSPECT)
    s.process([o])
    assert o.quality.tests["calibration_range"] == QC_SUSPECT
    assert o.quality.tests["gross_range"] == QC_PASS
    assert o.quality.aggregate == QC_SUSPECT


def test_disabled_stage_passes_through() -> None:
    s = QualityStage(QualitySettings.model_validate({"enabled": False}))
    o = make_obs("s1", "pm2_5", 10.0, T0)
    assert s.process([o]) == [o] and o.quality is None


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["pm1", "pm2_5", "pm10", "pm2_5_cf1", "temperature", "co", "nc0_3"]),
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none(), st.text(max_size=3)),
    st.integers(min_value=-10**12, max_value=10**13),
), max_size=40))
def test_never_raises_on_bad_data(items: list[tuple[str, object, int]]) -> None:
    s = stage(**_pair_settings())
    batch = [make_obs("a", code, v, t) for code, v, t in items]
    s.process(batch)
    for o in batch:
        assert o.quality is not None
        assert o.quality.aggregate in (QC_PASS, QC_NOT_EVALUATED, QC_SUSPECT, QC_FAIL)
        if o.result is None:
            assert o.quality.tests["gross_range"] == QC_FAIL


# ---------------------------------------------------------------------- real-world behaviour
SECOND = 1000


def _flags(qualities: list[Quality], test: str) -> list[int]:
    return [i for i, q in enumerate(qualities) if q.tests.get(test, QC_PASS) >= QC_SUSPECT]


def test_level_step_is_flagged_briefly_then_accepted() -> None:
    """PM2.5 steps from ~5 to ~60 µg/m³ at 1 s cadence (a bonfire, a wind change) and stays."""
    values = clean_site_pm(3600, seed=5, base=5.0) + clean_site_pm(3600, seed=6, base=60.0)
    q = run(QualityStage(QualitySettings.model_validate({"ml": {"enabled": False}})), values,
            step_ms=SECOND)
    spikes = _flags(q, "spike")
    assert spikes and spikes[0] == 3600 and len(spikes) <= 3, spikes
    assert _flags(q, "anomaly") == [3600]  # one alarm for the episode
    after = q[3600 + 10 :]
    assert all(x.aggregate <= QC_PASS for x in after), [
        (i, x.tests) for i, x in enumerate(after) if x.aggregate > QC_PASS][:3]


@pytest.mark.parametrize("base", [5.0, 25.0])
@pytest.mark.parametrize("seed", [0, 1, 3])
def test_quantised_clean_pm_is_not_flat_lined(base: float, seed: int) -> None:
    """Six hours of whole-µg/m³ PMS5003 values at 1 s: repeats for minutes, never stuck."""
    values = clean_site_pm(6 * 3600, seed=seed, base=base)
    longest = max(len(list(g)) for _, g in itertools.groupby(values))
    assert longest >= 40  # the series does repeat for long
    q = run(QualityStage(QualitySettings.model_validate({"ml": {"enabled": False}})), values,
            step_ms=SECOND)
    assert _flags(q, "flat_line") == []
    assert sum(x.aggregate >= QC_SUSPECT for x in q) <= len(q) // 1000


def test_stuck_sensor_is_still_flat_lined() -> None:
    """The same sensor at an urban level freezes for 30 minutes: flagged within minutes."""
    values = clean_site_pm(6 * 3600, seed=0, base=25.0)
    frozen = [values[-1]] * 1800
    q = run(QualityStage(QualitySettings.model_validate({"ml": {"enabled": False}})),
            values + frozen, step_ms=SECOND)[len(values):]
    flagged = _flags(q, "flat_line")
    assert flagged and flagged[0] < 300, flagged[:3]
    assert flagged == list(range(flagged[0], len(frozen)))  # and stays flagged
    assert q[-1].tests["flat_line"] == QC_FAIL


def test_frozen_particle_counts_flag_a_stuck_pms_at_a_clean_site() -> None:
    """At 5 µg/m³ the integer mass reading may hold for long; its particle counts never do."""
    s = QualityStage(QualitySettings.model_validate({"ml": {"enabled": False}}))
    pm = clean_site_pm(3600, seed=2, base=5.0)
    counts = [v * 160.0 + 40.0 * math.sin(i / 7.0) + (i * 7919 % 13) for i, v in enumerate(pm)]
    q = run(s, counts + [counts[-1]] * 600, code="nc0_3", step_ms=SECOND)[3600:]
    flagged = _flags(q, "flat_line")
    assert flagged and flagged[0] < 120, flagged[:3]
