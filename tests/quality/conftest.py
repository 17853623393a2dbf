"""Fixtures for the quality tests: observation builders and a freshly trained model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edge.model import Datastream, Observation, Provenance
from edge.quality.ml import ModelArtefact, save_artefact
from edge.quality.train import TrainConfig, load_series, train

PROV = Provenance(sensor_model="test")
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def make_obs(sensor: str, code: str, value: float, ms: int) -> Observation:
    return Observation(Datastream("gw", sensor, code), value, ms, PROV)


ObsFactory = Callable[[str, str, float, int], Observation]


@pytest.fixture
def obs() -> ObsFactory:
    return make_obs


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelArtefact, Path]:
    """A model trained by the pipeline on the UCI data (seeded, ~1 s)."""
    artefact = train(load_series(None), TrainConfig(epochs=20))
    folder = tmp_path_factory.mktemp("models") / "co-test"
    save_artefact(artefact, folder)
    return artefact, folder.parent
