"""Fixtures for the calibration tests: artefacts on disk, synthetic co-location data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from calibration.artefact import Artefact, FitInfo, InputSpec, SensorSpec, save_artefact
from calibration.models import KoehlerModel, LinearModel, ModelSpec, Term

UCI = Path(__file__).resolve().parents[2] / "calibration" / "data" / "AirQualityUCI.csv"


def make_artefact(
    model: ModelSpec | None = None,
    *,
    art_id: str = "pm25-test",
    version: str = "1",
    quantity: str = "pm2_5",
    inputs: tuple[InputSpec, ...] | None = None,
    sensor_model: str = "SDS011",
    serial: str = "",
) -> Artefact:
    return Artefact(
        schema="duet-edge/calibration/2",
        id=art_id,
        version=version,
        quantity=quantity,
        sensor=SensorSpec(model=sensor_model, serial=serial),
        inputs=inputs or (InputSpec(name="signal", quantity=quantity, range=(0.0, 200.0)),),
        model=model or LinearModel(intercept=1.0, terms=(Term(input=0, coef=0.5),),
                                   target_transform="identity"),
        fit=FitInfo(),
        sha256=None,
    )


def koehler_artefact(art_id: str = "pm25-koehler") -> Artefact:
    return make_artefact(
        KoehlerModel(kappa=0.4, rh_input=1, rh_clamp=(0.0, 95.0)),
        art_id=art_id,
        inputs=(
            InputSpec(name="signal", quantity="pm2_5", range=(0.0, 200.0)),
            InputSpec(name="rh", quantity="humidity", range=(20.0, 90.0)),
        ),
    )


@pytest.fixture
def artefact_dir(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing artefacts into tmp_path/artefacts and returning the directory."""

    def write(*artefacts: Artefact) -> Path:
        d = tmp_path / "artefacts"
        d.mkdir(exist_ok=True)
        for a in artefacts:
            save_artefact(a, d / f"{a.id}-{a.version}.json")
        return d

    return write
