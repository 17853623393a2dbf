"""TinyML: the trained .tflite under LiteRT agrees with the numpy reference; degradation."""

from __future__ import annotations

import itertools
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.model import QC_NOT_EVALUATED, QC_PASS, QC_SUSPECT, Observation
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
    # the learned detector does not need LiteRT: every value still has its anomaly score
    assert all(0.0 <= o.quality.scores["anomaly"] <= 1.0 for o in co)


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


# ---------------------------------------------------------------------- gateway retraining
def _history_stage(folder: Path, clock: list[float]) -> tuple[QualityStage, list[Observation]]:
    """A stage retraining into ``folder``, fed 40 days of hourly UCI CO with T and RH."""
    stage = QualityStage(QualitySettings.model_validate(
        {"ml": {"model_dir": str(folder), "retrain": True}}), clock=lambda: clock[0])
    series = load_series(None)
    co = []
    for i in range(3000, 3000 + 40 * 24):
        t = int(series.times_ms[i])
        batch = [make_obs("aq", q, float(series.values[q][i]), t)
                 for q in ("temperature", "humidity", "co") if np.isfinite(series.values[q][i])]
        stage.process(batch)
        co += [o for o in batch if o.stream.quantity_code == "co"]
    return stage, co


def test_gateway_retraining_is_deterministic_and_hot_swapped(
    trained: tuple[ModelArtefact, Path], tmp_path: Path
) -> None:
    artefact, folder = trained
    clock = [0.0]
    copies = []
    for name in ("a", "b"):
        target = tmp_path / name / "co-test"
        shutil.copytree(folder / "co-test", target)
        copies.append(target)
    stage_a, _ = _history_stage(copies[0].parent, clock)
    stage_b, _ = _history_stage(copies[1].parent, clock)
    assert stage_a.retrain_now() == [copies[0]]
    assert stage_b.retrain_now() == [copies[1]]
    new = load_artefact(copies[0])
    assert new.tflite == load_artefact(copies[1]).tflite  # same history, same bytes
    assert new.tflite != artefact.tflite and new.meta["retrained_on_gateway"] is True
    assert new.meta["training"]["train_rows"] >= 300
    assert stage_a.reload_models() == [f"{new.name}@{new.version}"]
    assert stage_a.reload_models() == []  # nothing changed since
    # LiteRT runs the retrained model exactly like its numpy reference
    series = load_series(None)
    rows, _ = feature_matrix(series.values["co"][5000:5600], series.times_ms[5000:5600],
                             {f: series.values[f][5000:5600] for f in new.co_features},
                             new.window, new.norm, new.co_features)
    got = LiteRtScorer(new).score_many(rows)
    assert np.max(np.abs(got - reference_score(layers_of(new), rows))) < 1e-4
    # and the stage scores with it from now on (its window fills anew)
    more = [make_obs("aq", q, v, T0 + 400 * 86_400_000 + k * HOUR)
            for k in range(20) for q, v in (("temperature", 12.0), ("humidity", 70.0),
                                            ("co", 1.0 + 0.1 * (k % 4)))]
    stage_a.process(more)
    scored = [o for o in more if o.quality and "ml_anomaly" in o.quality.scores]
    assert scored and stage_a.ml_status == f"ok: {new.name}@{new.version}"


def test_retraining_in_the_background_swaps_in_on_a_later_batch(
    trained: tuple[ModelArtefact, Path], tmp_path: Path
) -> None:
    _, folder = trained
    shutil.copytree(folder / "co-test", tmp_path / "co-test")
    clock = [0.0]
    stage, _ = _history_stage(tmp_path, clock)
    before = stage.ml_status
    clock[0] = 8 * 86_400.0  # a week later: due
    stage.process([make_obs("aq", "temperature", 12.0, T0)])
    assert stage._retraining is not None
    stage._retraining.join(60)
    stage.process([make_obs("aq", "temperature", 12.0, T0 + HOUR)])
    assert stage.ml_status != before and stage.ml_status.startswith("ok")


def test_retrain_needs_a_model_folder() -> None:
    with pytest.raises(ValueError, match="model_dir"):
        QualitySettings.model_validate({"ml": {"retrain": True}})


def test_documented_training_command_reproduces_the_shipped_model(tmp_path: Path) -> None:
    """docs/quality.md: `duet-edge quality train --out …` rebuilds the shipped model — byte
    for byte on the numpy build and CPU recorded in it, else to float rounding."""
    import platform

    from typer.testing import CliRunner

    from edge.quality.cli import app

    res = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "co-autoencoder")])
    assert res.exit_code == 0, res.output
    shipped_dir = shipped_model_dir() / "co-autoencoder"
    shipped, again = load_artefact(shipped_dir), load_artefact(tmp_path / "co-autoencoder")
    built = shipped.meta["training"]
    if (built["numpy"], built["machine"]) == (np.__version__, platform.machine()):
        assert again.tflite == shipped.tflite
        assert (tmp_path / "co-autoencoder" / "model.json").read_bytes() == (
            shipped_dir / "model.json").read_bytes()
    series = load_series(None)
    rows, _ = feature_matrix(series.values["co"][4000:6000], series.times_ms[4000:6000],
                             {f: series.values[f][4000:6000] for f in shipped.co_features},
                             shipped.window, shipped.norm, shipped.co_features)
    a = reference_score(layers_of(shipped), rows)
    b = reference_score(layers_of(again), rows)
    assert np.max(np.abs(a - b) / np.maximum(a, 1e-6)) < 1e-3
    assert np.array_equal(a > shipped.threshold, b > again.threshold)
