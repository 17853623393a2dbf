"""Candidate fitting, forward-chaining validation and model choice."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration.fit import (
    MODELS,
    FitError,
    Problem,
    candidate_fitters,
    forward_chaining_folds,
    predict,
    select_model,
)
from calibration.metrics import expanded_uncertainty, metrics, orthogonal_regression
from calibration.models import ChainModel, KoehlerModel, LinearModel


@settings(max_examples=60, deadline=None)
@given(
    times=st.lists(st.integers(0, 10**9), min_size=10, max_size=300, unique=True),
    n_blocks=st.integers(2, 8),
)
def test_forward_chaining_never_trains_on_the_future(times: list[int], n_blocks: int) -> None:
    t = np.array(times, dtype=float)  # deliberately unsorted input
    folds = forward_chaining_folds(t, n_blocks)
    assert len(folds) == n_blocks - 1
    seen_valid: set[int] = set()
    for train, valid in folds:
        assert train.size and valid.size
        assert t[train].max() < t[valid].min()
        assert not set(train.tolist()) & set(valid.tolist())
        seen_valid |= set(valid.tolist())
    # every sample but the first block is validated exactly once
    assert len(seen_valid) == sum(v.size for _, v in folds)


def _synthetic(n: int = 600, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n) * 3600.0
    temp = 10 + 8 * np.sin(np.arange(n) / 24 * 2 * np.pi) + rng.normal(0, 1, n)
    rh = np.clip(60 + 20 * np.cos(np.arange(n) / 24 * 2 * np.pi) + rng.normal(0, 5, n), 5, 99)
    return t, temp, rh


def test_multilinear_recovers_known_coefficients() -> None:
    t, temp, rh = _synthetic()
    rng = np.random.default_rng(2)
    truth = rng.gamma(2.0, 10.0, t.size)
    raw = (truth - 3.0 + 0.2 * temp - 0.05 * rh) / 0.8  # y = 3 + 0.8·raw − 0.2·T + 0.05·RH
    X = np.column_stack([raw, temp, rh])
    spec = candidate_fitters(Problem(X, truth, t, ("no2", "temperature", "humidity")))["linear"](
        X, truth)
    assert isinstance(spec, LinearModel)
    assert spec.intercept == pytest.approx(3.0, abs=1e-6)
    assert [term.coef for term in spec.terms] == pytest.approx([0.8, -0.2, 0.05], abs=1e-6)


def test_power_law_data_chooses_a_power_law_shape() -> None:
    t, temp, _ = _synthetic()
    rng = np.random.default_rng(3)
    truth = rng.lognormal(0.5, 0.6, t.size)
    raw = 800.0 * truth**0.4 * np.exp(0.01 * temp) * rng.lognormal(0, 0.03, t.size)
    X = np.column_stack([raw, temp])
    sel = select_model(Problem(X, truth, t, ("co", "temperature")))
    assert sel.chosen.startswith("power-law")
    assert sel.cv_rmse[sel.chosen] < sel.cv_rmse["linear"]
    assert metrics(truth, predict(sel.spec, X))["r2"] > 0.95


def test_koehler_candidate_recovers_kappa() -> None:
    t, _, rh = _synthetic()
    rng = np.random.default_rng(4)
    dry = rng.gamma(2.0, 6.0, t.size)
    rhc = np.clip(rh, 0, 95)
    wet = dry * (1 + 0.35 / (100 / rhc - 1)) * rng.normal(1, 0.01, t.size)
    X = np.column_stack([wet, rh])
    problem = Problem(X, dry, t, ("pm2_5", "humidity"))
    sel = select_model(problem)
    assert sel.chosen == "koehler"  # pure hygroscopic growth: the physics-only model wins
    assert isinstance(sel.spec, KoehlerModel)
    assert sel.spec.kappa == pytest.approx(0.35, abs=0.02)
    # with a sensor gain on top, the Köhler + gain chain recovers both
    sel = select_model(Problem(np.column_stack([1.4 * wet, rh]), dry, t, ("pm2_5", "humidity")),
                       only=["koehler+gain", "koehler"])
    assert sel.chosen == "koehler+gain" and isinstance(sel.spec, ChainModel)
    step = sel.spec.steps[0]
    assert isinstance(step, KoehlerModel) and step.kappa == pytest.approx(0.35, abs=0.02)


def test_too_little_data_is_a_clear_error() -> None:
    t = np.arange(20) * 3600.0
    X = np.ones((20, 1))
    with pytest.raises(FitError, match="only 20 aligned samples"):
        select_model(Problem(X, np.ones(20), t, ("co",)))


def test_unknown_model_restriction() -> None:
    t, temp, _ = _synthetic(200)
    with pytest.raises(FitError, match=r"unknown model\(s\) \['xgb'\]; models: offset-gain"):
        select_model(Problem(np.column_stack([temp + 30]), temp + 1, t, ("co",)), only=["xgb"])
    with pytest.raises(FitError, match="koehler: needs a humidity input"):
        select_model(Problem(np.column_stack([temp + 30]), temp + 1, t, ("pm2_5",)),
                     only=["koehler"])


def test_dropped_candidates_carry_their_reason() -> None:
    """Issue 16 item 4: two reference values of 0 disable the power-law family — with a reason."""
    t, temp, _ = _synthetic()
    rng = np.random.default_rng(5)
    truth = rng.gamma(2.0, 5.0, t.size)
    truth[[10, 20]] = 0.0
    X = np.column_stack([truth * 1.5 + 2 + rng.normal(0, 0.5, t.size), temp])
    sel = select_model(Problem(X, truth, t, ("pm2_5", "temperature")))
    for name in ("power-law", "power-law-robust", "blend", "blend-robust"):
        assert sel.skipped[name] == "power-law needs positive values: 2 reference value(s) ≤ 0 (min 0)"
    assert sel.skipped["koehler"] == "needs a humidity input (--input humidity=COLUMN)"
    assert set(sel.skipped) | set(sel.cv_rmse) == set(MODELS)


def _piecewise_truth(n: int = 1500) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(6)
    t = np.arange(n) * 3600.0
    rh = np.clip(55 + 30 * np.sin(np.arange(n) / 24 * 2 * np.pi) + rng.normal(0, 8, n), 10, 99)
    dry = rng.gamma(2.0, 6.0, n)
    gain = 1.3 + 0.02 * np.maximum(rh - 65, 0) ** 1.5  # growth that bends above ~65 % RH
    return t, dry, rh, dry * gain + rng.normal(0, 0.3, n)


def test_piecewise_rh_model_wins_only_when_forward_chaining_says_so() -> None:
    t, dry, rh, wet = _piecewise_truth()
    X = np.column_stack([wet, rh])
    sel = select_model(Problem(X, dry, t, ("pm2_5", "humidity")),
                       only=["linear", "rh-hinge"])
    assert sel.chosen == "rh-hinge"
    assert sel.cv_rmse["rh-hinge"] < 0.7 * sel.cv_rmse["linear"]
    # on data where a straight line is the truth, the piecewise model is not taken
    lin_truth = 0.7 * wet - 0.02 * rh + 1.0
    plain = select_model(Problem(X, lin_truth, t, ("pm2_5", "humidity")),
                         only=["linear", "rh-hinge"])
    assert plain.chosen == "linear"
    assert "the simpler model is kept" in plain.skipped.get("rh-hinge", "the simpler model is kept")


def test_leave_one_sensor_out_scores_each_sensor() -> None:
    t, dry, rh, _ = _piecewise_truth(600)
    rng = np.random.default_rng(8)
    groups = np.repeat(np.array(["a", "b", "c"]), 200)
    gains = {"a": 1.4, "b": 1.5, "c": 2.5}  # sensor c reads far higher than the others
    wet = np.array([dry[i] * gains[g] for i, g in enumerate(groups)]) + rng.normal(0, 0.2, 600)
    sel = select_model(Problem(np.column_stack([wet, rh]), dry, np.tile(t[:200], 3),
                               ("pm2_5", "humidity"), groups=groups), only=["offset-gain"])
    assert set(sel.loso_rmse) == {"a", "b", "c"}
    assert max(sel.loso_rmse, key=sel.loso_rmse.__getitem__) == "c"  # the odd unit stands out


def test_orthogonal_regression_and_uncertainty_by_hand() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = 2.0 * x + 1.0
    fit = orthogonal_regression(x, y)
    assert fit.slope == pytest.approx(2.0)
    assert fit.intercept == pytest.approx(1.0)
    # no scatter: W = 2·|b0 + (b1−1)·LV| / LV = 2·(1 + 10)/10 = 2.2
    assert expanded_uncertainty(x, y, 10.0) == pytest.approx(2.2)
    # symmetric scatter: Sxx = Syy = 10, Sxy = 8 → slope 1, intercept 0; residuals ±1 →
    # RSS/(n−2) = 4/2 = 2; at LV = 10: W = 2·sqrt(2)/10
    x2 = np.array([1.0, 2.0, 4.0, 5.0])
    y2 = np.array([2.0, 1.0, 5.0, 4.0])
    fit2 = orthogonal_regression(x2, y2)
    assert (fit2.slope, fit2.intercept) == pytest.approx((1.0, 0.0))
    assert expanded_uncertainty(x2, y2, 10.0) == pytest.approx(2 * np.sqrt(2) / 10, rel=1e-9)
    # the reference's own uncertainty is removed from the random term: u_ref² = 1 → W = 2·1/10
    assert expanded_uncertainty(x2, y2, 10.0, u_ref=1.0) == pytest.approx(0.2, rel=1e-9)


def test_metrics_by_hand() -> None:
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([2.0, 3.0, 4.0, 5.0])
    m = metrics(ref, pred, "no2")
    assert m["bias"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(1.0)
    assert m["crmse"] == pytest.approx(0.0, abs=1e-12)
    assert m["mae"] == pytest.approx(1.0)
    assert m["r2"] == pytest.approx(1 - 4 / 5)
    assert m["dqo"] == 0.25
