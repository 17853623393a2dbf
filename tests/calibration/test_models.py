"""Model maths against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from calibration.artefact import compile_artefact, purpleair_epa_preset
from calibration.fit import predict
from calibration.models import (
    CalibrationMathError,
    ChainModel,
    EnsembleModel,
    KoehlerModel,
    LinearModel,
    Term,
    compile_model,
    koehler_dry,
)


def lin(b0: float, *terms: tuple[int, str, float], target: str = "identity") -> LinearModel:
    return LinearModel(
        intercept=b0,
        terms=tuple(Term(input=i, transform=t, coef=c) for i, t, c in terms),  # type: ignore[arg-type]
        target_transform=target,  # type: ignore[arg-type]
    )


def test_offset_gain() -> None:
    f = compile_model(lin(2.0, (0, "identity", 0.5)))
    assert f([10.0]) == pytest.approx(7.0)


def test_multilinear_with_temperature_and_humidity() -> None:
    # 1.5 + 0.8·20 − 0.1·15 + 0.05·60 = 1.5 + 16 − 1.5 + 3 = 19
    f = compile_model(lin(1.5, (0, "identity", 0.8), (1, "identity", -0.1), (2, "identity", 0.05)))
    assert f([20.0, 15.0, 60.0]) == pytest.approx(19.0)


def test_power_law() -> None:
    # log y = −2 + 0.5·log(400) → y = e^−2 · 20 = 2.70671
    f = compile_model(lin(-2.0, (0, "log", 0.5), target="log"))
    assert f([400.0]) == pytest.approx(20.0 * math.exp(-2.0), rel=1e-12)


def test_power_law_rejects_non_positive_input() -> None:
    f = compile_model(lin(0.0, (0, "log", 1.0), target="log"))
    with pytest.raises(CalibrationMathError):
        f([0.0])


def test_koehler_hand_value() -> None:
    # Petters & Kreidenweis κ, volume growth: RH 80 % → a_w/(1 − a_w) = 0.8/0.2 = 4;
    # κ = 0.4 → growth 1 + 1.6 = 2.6
    assert koehler_dry(30.0, 80.0, 0.4, 0.0, 95.0) == pytest.approx(30.0 / 2.6, rel=1e-12)
    # ammonium sulfate, κ ≈ 0.53 (P&K 2007 table 1) at RH 90 %: growth 1 + 0.53·9 = 5.77
    assert koehler_dry(5.77, 90.0, 0.53, 0.0, 95.0) == pytest.approx(1.0, rel=1e-12)


def test_koehler_clamps_rh() -> None:
    clamped = koehler_dry(30.0, 99.5, 0.4, 0.0, 95.0)
    assert clamped == pytest.approx(koehler_dry(30.0, 95.0, 0.4, 0.0, 95.0))
    # 95 %: 0.95/0.05 = 19; growth 1 + 0.4·19 = 8.6 → 30/8.6 = 3.488372
    assert clamped == pytest.approx(30.0 / 8.6, rel=1e-12)
    assert koehler_dry(30.0, 0.0, 0.4, 0.0, 95.0) == 30.0


def test_hinge_and_interaction_terms_by_hand() -> None:
    # y = 1 + 0.5·pm + 0.01·pm·rh − 0.02·pm·(rh − 60)+ + 0.1·(rh − 60)+
    spec = LinearModel(intercept=1.0, terms=(
        Term(input=0, coef=0.5), Term(input=0, coef=0.01, times=1),
        Term(input=1, transform="hinge", knot=60.0, coef=-0.02, times=0),
        Term(input=1, transform="hinge", knot=60.0, coef=0.1)))
    f = compile_model(spec)
    # rh 50 (below the knot): 1 + 10 + 0.01·20·50 = 21
    assert f([20.0, 50.0]) == pytest.approx(21.0)
    # rh 80: 1 + 10 + 16 − 0.02·20·20 + 0.1·20 = 27 − 8 + 2 = 21
    assert f([20.0, 80.0]) == pytest.approx(21.0)
    with pytest.raises(ValueError, match="hinge"):
        Term(input=1, transform="hinge", coef=1.0)


def test_purpleair_epa_preset() -> None:
    # 0.524·20 − 0.0862·50 + 5.75 = 10.48 − 4.31 + 5.75 = 11.92
    compiled = compile_artefact(purpleair_epa_preset())
    value, status = compiled.apply([20.0, 50.0])
    assert value == pytest.approx(11.92)
    assert status == 0


def test_chain_humidity_then_linear() -> None:
    spec = ChainModel(steps=(KoehlerModel(kappa=0.4, rh_input=1, rh_clamp=(0.0, 95.0)),
                             lin(1.0, (0, "identity", 2.0))))
    dry = 30.0 / 2.6
    assert compile_model(spec)([30.0, 80.0]) == pytest.approx(1.0 + 2.0 * dry, rel=1e-9)


def test_ensemble_mean() -> None:
    spec = EnsembleModel(members=(lin(0.0, (0, "identity", 1.0)), lin(10.0)), weights=None)
    assert compile_model(spec)([4.0]) == pytest.approx(7.0)
    weighted = EnsembleModel(members=spec.members, weights=(3.0, 1.0))
    assert compile_model(weighted)([4.0]) == pytest.approx(0.75 * 4 + 0.25 * 10)


def test_rh_clamp_range_validated() -> None:
    with pytest.raises(ValueError, match="rh_clamp"):
        KoehlerModel(kappa=0.4, rh_input=1, rh_clamp=(50.0, 100.0))


finite = st.floats(min_value=0.1, max_value=1e4, allow_nan=False)


@given(pm=finite, rh=st.floats(min_value=0.0, max_value=100.0), t=st.floats(-20, 40))
def test_vectorised_prediction_matches_gateway_evaluator(pm: float, rh: float, t: float) -> None:
    """The fitting tool (numpy) and the gateway (pure Python) compute the same value."""
    specs = [
        lin(1.0, (0, "log", 0.7), (2, "identity", 0.01), target="log"),
        ChainModel(steps=(KoehlerModel(kappa=0.3, rh_input=1, rh_clamp=(0.0, 95.0)),
                          lin(0.5, (0, "identity", 1.1), (2, "identity", -0.2)))),
        EnsembleModel(members=(lin(0.0, (0, "identity", 1.0), (1, "identity", -0.1)),
                               lin(0.2, (0, "log", 1.0), target="log")), weights=None),
        LinearModel(intercept=0.3, terms=(
            Term(input=0, coef=0.6), Term(input=1, coef=0.002, times=0),
            Term(input=1, transform="hinge", knot=65.0, coef=-0.01, times=0),
            Term(input=1, transform="hinge", knot=50.0, coef=0.05), Term(input=2, coef=0.1))),
    ]
    for spec in specs:
        gateway = compile_model(spec)([pm, rh, t])
        tool = float(predict(spec, np.array([[pm, rh, t]]))[0])
        assert tool == pytest.approx(gateway, rel=1e-9, abs=1e-9)
