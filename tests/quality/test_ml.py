"""TinyML: the trained .tflite under LiteRT agrees with the numpy reference; degradation."""

from __future__ import annotations

import itertools
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.model import QC_NOT_EVALUATED, QC_PASS, QC_SUSPECT
from edge.quality.ml import (
    LiteRtScorer,
    ModelArtefact,
    WindowFeatures,
    discover,
    feature_matrix,
    load_artefact,
    shipped_model_dir,
)
from edge.quality.settings import QualitySettings
from edge.quality.stage import QualityStage
from edge.quality.tflite_writer import build_autoencoder, reference_score
from edge.quality.train import MAX_MODEL_BYTES, TrainConfig, layers_of, load_series, train

from .conftest import T0, make_obs

HOUR = 3_600_000


def test_trained_model_scores_like_numpy(trained: tuple[ModelArtefact, Path]) -> None:
    artefact, _ = trained
    series = load_series(None)
    rows, _ = feature_matrix(
        series.values["co"][4000:4600], series.times_ms[4000:4600],
        {f: series.values[f][4000:4600] for f in artefact.co_features},
        artefact.window, artefact.norm, artefact.co_features,
    )
    assert len(rows) > 100
    got = LiteRtScorer(artefact).score_many(rows)
    want = reference_score(layers_of(artefact), rows)
    assert np.max(np.abs(got - want)) < 1e-4


def test_writer_handles_other_shapes() -> None:
    rng = np.random.default_rng(0)
    dims = [7, 5, 2, 5, 7]
    layers = [(rng.normal(size=(o, i)).astype(np.float32), rng.normal(size=o).astype(np.float32))
              for i, o in itertools.pairwise(dims)]
    artefact = ModelArtefact("t", "1", "co", 3, ["temperature", "humidity"], {}, 1.0,
                             build_autoencoder(layers), dims)
    x = rng.normal(size=(50, 7)).astype(np.float32)
    got = LiteRtScorer(artefact).score_many(x)
    assert np.max(np.abs(got - reference_score(layers, x)) / np.maximum(1, got)) < 1e-4


def test_artefact_budget_and_reproducibility(trained: tuple[ModelArtefact, Path]) -> None:
    artefact, folder = trained
    assert len(artefact.tflite) <= MAX_MODEL_BYTES
    again = train(load_series(None), TrainConfig(epochs=20))
    assert again.tflite == artefact.tflite  # same seed, same bytes
    assert again.threshold == artefact.threshold
    loaded = discover(folder)
    assert [a.name for a in loaded] == [artefact.name]
    assert loaded[0].threshold == artefact.threshold and loaded[0].window == artefact.window


def test_shipped_model_loads_and_fits_budget() -> None:
    arts = discover(None)
    assert arts, f"no model under {shipped_model_dir()}"
    for art in arts:
        assert len(art.tflite) <= MAX_MODEL_BYTES
        assert art.meta["training"]["seed"] is not None
    assert load_artefact(shipped_model_dir() / "co-autoencoder").quantity == "co"


def test_tampered_artefact_is_rejected(trained: tuple[ModelArtefact, Path],
                                       tmp_path: Path) -> None:
    artefact, folder = trained
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.json").write_text((folder / "co-test" / "model.json").read_text())
    (bad / "model.tflite").write_bytes(artefact.tflite[:-1] + b"\0")
    with pytest.raises(ValueError, match="tflite_sha256"):
        load_artefact(bad)


def test_streaming_features_equal_batch_features(trained: tuple[ModelArtefact, Path]) -> None:
    artefact, _ = trained
    rng = np.random.default_rng(1)
    n = 40
    values = rng.uniform(0, 5, n)
    temps = rng.uniform(0, 30, n)
    hums = rng.uniform(20, 90, n)
    times = T0 + np.arange(n, dtype=np.int64) * HOUR
    rows, last = feature_matrix(values, times, {"temperature": temps, "humidity": hums},
                                artefact.window, artefact.norm, artefact.co_features)
    wf = WindowFeatures(artefact)
    streamed = []
    for i in range(n):
        if wf.push(float(values[i]), int(times[i]), [float(temps[i]), float(hums[i])]):
            streamed.append(wf.row[0].copy())
    assert np.allclose(np.array(streamed), rows, atol=1e-5)
    assert last[0] == artefact.window - 1


def _feed(stage: QualityStage, n: int = 30) -> list:  # type: ignore[type-arg]
    out = []
    for i in range(n):
        t = T0 + i * HOUR
        batch = [make_obs("aq", "temperature", 15.0 + i % 5, t),
                 make_obs("aq", "humidity", 60.0 - i % 7, t),
                 make_obs("aq", "co", 1.0 + 0.3 * np.sin(i / 3), t)]
        stage.process(batch)
        out.append(batch[2])
    return out


def test_stage_scores_with_model(trained: tuple[ModelArtefact, Path]) -> None:
    _, folder = trained
    stage = QualityStage(QualitySettings.model_validate({"ml": {"model_dir": str(folder)}}))
    assert stage.ml_status.startswith("ok")
    co = _feed(stage)
    scored = [o for o in co if "ml_anomaly" in o.quality.scores]
    assert len(scored) >= len(co) - 12
    assert all(o.quality.tests["ml_anomaly"] in (QC_PASS, QC_SUSPECT) for o in scored)
    assert co[0].quality.tests["ml_anomaly"] == QC_NOT_EVALUATED  # window not full yet


def test_missing_runtime_degrades_to_rules(monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import fails
    caplog.set_level(logging.WARNING, logger="edge.quality.stage")
    stage = QualityStage(QualitySettings())
    co = _feed(stage)
    assert stage.ml_status.startswith("unavailable")
    warnings = [r for r in caplog.records if "anomaly detection off" in r.getMessage()]
    assert len(warnings) == 1  # said once, not per observation
    assert "ai-edge-litert" in warnings[0].getMessage()
    assert {o.quality.tests["ml_anomaly"] for o in co} == {QC_NOT_EVALUATED}
    assert all(o.quality.tests["gross_range"] == QC_PASS for o in co)


def test_missing_model_degrades_to_rules(tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge.quality.stage")
    stage = QualityStage(QualitySettings.model_validate({"ml": {"model_dir": str(tmp_path)}}))
    co = _feed(stage, 5)
    assert "no anomaly model" in stage.ml_status
    assert sum("anomaly detection off" in r.getMessage() for r in caplog.records) == 1
    assert {o.quality.tests["ml_anomaly"] for o in co} == {QC_NOT_EVALUATED}


def test_stream_off_the_models_cadence_is_not_scored(
    trained: tuple[ModelArtefact, Path], caplog: pytest.LogCaptureFixture
) -> None:
    artefact, folder = trained
    assert artefact.sample_period_s == 3600.0
    caplog.set_level(logging.WARNING, logger="edge.quality.stage")
    stage = QualityStage(QualitySettings.model_validate({"ml": {"model_dir": str(folder)}}))
    co = []
    for i in range(40):  # one value a minute: the hourly model does not apply
        t = T0 + i * 60_000
        batch = [make_obs("aq", "temperature", 15.0, t), make_obs("aq", "humidity", 60.0, t),
                 make_obs("aq", "co", 1.0 + 0.1 * (i % 3), t)]
        stage.process(batch)
        co.append(batch[2])
    assert {o.quality.tests["ml_anomaly"] for o in co} == {QC_NOT_EVALUATED}
    assert sum("not scored" in r.getMessage() for r in caplog.records) == 1
