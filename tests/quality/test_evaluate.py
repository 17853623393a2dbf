"""Fault injection is reproducible, and the published targets hold on the UCI base signal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge.quality.cli import app
from edge.quality.evaluate import evaluate
from edge.quality.faults import FAULT_TYPES, inject
from edge.quality.train import load_series


@pytest.fixture(scope="module")
def series():  # type: ignore[no-untyped-def]
    return load_series(None)


def test_injection_is_seeded_and_bounded(series) -> None:  # type: ignore[no-untyped-def]
    co, times = series.values["co"], series.times_ms
    for kind in FAULT_TYPES:
        a = inject(co, times, kind, 10, seed=5, lo=3000)
        b = inject(co, times, kind, 10, seed=5, lo=3000)
        assert np.array_equal(a.values, b.values, equal_nan=True)
        assert a.events == b.events and a.events
        assert all(ev.start >= 3000 and ev.end >= ev.start for ev in a.events)
        untouched = np.ones(len(co), bool)
        for ev in a.events:
            untouched[ev.start : ev.end + 1] = False
        if kind == "dropout":
            continue
        assert np.array_equal(a.values[untouched], co[untouched], equal_nan=True)


def test_published_targets(series) -> None:  # type: ignore[no-untyped-def]
    """The numbers in docs/quality.md: spikes/stuck F1 ≥ 0.9, drift ≤ 48 h, clean ≤ 1 %."""
    report = evaluate(series, kinds=("spike", "stuck", "drift_linear", "drift_exp"))
    for label in ("rules", "rules+anomaly", "rules+anomaly+model"):
        res = report.results[label]
        assert report.clean_false_flag_rate[label] <= 0.01
        for kind in ("drift_linear", "drift_exp"):
            assert res[kind].event_recall == 1.0
            assert res[kind].delay_h_max is not None and res[kind].delay_h_max <= 48
    rules = report.results["rules"]
    assert rules["spike"].point_f1 >= 0.9
    assert rules["stuck"].point_f1 >= 0.9
    assert report.ml_status.startswith("ok")


def test_cli_train_and_evaluate(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "m"
    res = runner.invoke(app, ["train", "--out", str(out), "--epochs", "5"])
    assert res.exit_code == 0, res.output
    assert (out / "model.tflite").stat().st_size <= 32 * 1024
    assert json.loads((out / "model.json").read_text())["quantity"] == "co"
    res = runner.invoke(app, ["evaluate", "--faults", "spike", "--events", "5",
                              "--model-dir", str(tmp_path), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert "| rules | spike |" in res.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["results"]["rules"]["spike"]["events"] == 5


def test_cli_nab_mode(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = 10 + rng.normal(0, 0.5, 300)
    values[200] = 80.0  # a spike inside the labelled window
    lines = ["timestamp,value"] + [
        f"2015-01-{1 + i // 24:02d} {i % 24:02d}:00:00,{v:.3f}" for i, v in enumerate(values)
    ]
    (tmp_path / "s.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "labels.json").write_text(json.dumps(
        {"s.csv": [["2015-01-09 04:00:00.000000", "2015-01-09 12:00:00.000000"]]}))
    res = CliRunner().invoke(app, ["evaluate", "--nab-labels", str(tmp_path / "labels.json"),
                                   "--quantity", "pm2_5", "--json", str(tmp_path / "n.json")])
    assert res.exit_code == 0, res.output
    scores = json.loads((tmp_path / "n.json").read_text())["scores"]
    assert set(scores) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    assert scores["standard"] > 50


def test_cli_rejects_unknown_fault() -> None:
    res = CliRunner().invoke(app, ["evaluate", "--faults", "gremlins"])
    assert res.exit_code != 0
    assert "gremlins" in res.output


def test_train_from_twin_store(tmp_path: Path) -> None:
    """The receiver's SQLite store is training data; flagged rows are left out."""
    import asyncio
    import math

    from edge.ingest.rows import IngestBatch, StreamDef
    from edge.ingest.sqlite_store import SqliteStore

    db = tmp_path / "twin.db"
    codes = ("co", "temperature", "humidity")
    batch = IngestBatch("gw", [StreamDef.of("aq", c, {}) for c in codes])
    t0 = 1_700_000_000_000
    for i in range(400):
        t = t0 + i * 3_600_000
        values = {"co": 1 + 0.5 * math.sin(i / 4), "temperature": 10 + math.sin(i / 24),
                  "humidity": 70 + 5 * math.cos(i / 24)}
        for k, (code, v) in enumerate(values.items()):
            agg = 4 if (code == "co" and i == 50) else 1
            for column, value in (("stream_index", k), ("seq", 3 * i + k + 1),
                                  ("phenomenon_ms", t), ("duration_ms", None),
                                  ("result_offset_ms", None), ("result", v),
                                  ("raw_result", None), ("quality_flag", agg),
                                  ("quality_profile", None), ("anomaly_milli", None),
                                  ("other_scores", None)):
                getattr(batch, column).append(value)

    async def fill() -> None:
        store = SqliteStore(db)
        await store.open()
        await store.store_batches([batch], t0)
        await store.close()

    asyncio.run(fill())
    out = tmp_path / "m"
    res = CliRunner().invoke(app, ["train", "--data", str(db), "--sensor", "aq", "--out",
                                   str(out), "--epochs", "3", "--train-fraction", "0.5"])
    assert res.exit_code == 0, res.output
    from edge.quality.train import load_series as load

    series = load(db, "aq")
    assert np.isnan(series.values["co"][50]) and not np.isnan(series.values["co"][51])
    res = CliRunner().invoke(app, ["train", "--data", str(db), "--out", str(out)])
    assert res.exit_code != 0 and "--sensor" in res.output
