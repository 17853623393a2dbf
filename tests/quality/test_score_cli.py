"""``duet-edge quality score`` writes what the gateway uploads; evaluate reads results folders;
the CLI's errors are one line with exit code 2 (issue 15 item 3)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge.contract import decode_batch, encode_batch
from edge.model import Datastream, Observation, Provenance
from edge.outbox import Outbox
from edge.quality.cli import app

from .runtime_helpers import gateway_config, run_gateway

pytestmark = pytest.mark.timeout(180)

T0 = 1_700_000_000_000
MINUTE = 60_000
REPO = Path(__file__).parents[2]


def write_input(path: Path, n: int = 1500) -> list[dict[str, str]]:
    """Two quantity columns and one free-named column, a few gaps, a spike and a step."""
    rng = np.random.default_rng(4)
    i = np.arange(n)
    pm = 10 + 3 * np.sin(i / 90) + rng.normal(0, 0.8, n)
    pm[min(700, n - 1)] += 50
    temp = 18 + np.sin(i / 200) + rng.normal(0, 0.05, n)
    flow = np.where(i > 1100, 40.0, 20.0) + rng.normal(0, 1, n)
    rows = []
    for k in range(n):
        stamp = datetime.fromtimestamp((T0 + k * MINUTE) / 1000, UTC).strftime(
            "%Y-%m-%d %H:%M:%S")
        rows.append({"timestamp": stamp, "pm2_5": f"{pm[k]:.1f}",
                     "temperature": "" if k % 97 == 0 else f"{temp[k]:.2f}",
                     "flow": f"{flow[k]:.2f}"})
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["timestamp", "pm2_5", "temperature", "flow"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


async def gateway_uploads(rows: list[dict[str, str]], data_dir: Path) -> dict[str, list[str]]:
    """Anomaly scores per column as the uplink would send them (contract encode → decode)."""
    prov = Provenance(sensor_model="csv")
    batches = [[Observation(Datastream("gw-score", col, "value" if col == "flow" else col),
                            float(row[col]), T0 + k * MINUTE, prov)
                for col in ("pm2_5", "temperature", "flow") if row[col]]
               for k, row in enumerate(rows)]
    cfg = gateway_config("gw-score", data_dir)
    await run_gateway(cfg, batches)
    outbox = Outbox(cfg.outbox_path, cfg.buffer, "gw-score", uplinks=["none"])
    try:
        batch = outbox.next_batch("none", 10 * len(rows))
    finally:
        outbox.close()
    sent = decode_batch(encode_batch(batch))
    out: dict[str, list[str]] = {}
    for o in sent.observations:
        assert o.quality is not None
        out.setdefault(o.stream.sensor_id, []).append(f"{o.quality.scores['anomaly']:.3f}")
    return out


async def test_score_output_equals_what_the_gateway_uploads(tmp_path: Path) -> None:
    rows = write_input(tmp_path / "in.csv")
    res = CliRunner().invoke(app, ["score", str(tmp_path / "in.csv"), "--out",
                                   str(tmp_path / "out"), "--flags"])
    assert res.exit_code == 0, res.output
    cli: dict[str, list[str]] = {}
    for col in ("pm2_5", "temperature", "flow"):
        with (tmp_path / "out" / f"{col}.csv").open() as fh:
            out = list(csv.DictReader(fh))
        assert len(out) == len(rows)  # one output row per input row
        assert [r["timestamp"] for r in out] == [r["timestamp"] for r in rows]
        cli[col] = [r["anomaly_score"] for r in out if r["value"]]
        assert all(r["anomaly_score"] == "" for r in out if not r["value"])
    assert max(float(s) for s in cli["pm2_5"]) >= 0.5  # the spike
    uploaded = await gateway_uploads(rows, tmp_path / "gw")
    assert cli == uploaded


def test_score_single_column_to_stdout_in_a_subprocess(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    lines = ["timestamp,value"] + [f"{1_600_000_000 + 300 * k},{math.sin(k / 10):.4f}"
                                   for k in range(400)]
    path.write_text("\n".join(lines) + "\n")
    exe = Path(sys.executable).parent / "duet-edge"
    proc = subprocess.run([str(exe), "quality", "score", str(path)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = list(csv.DictReader(proc.stdout.splitlines()))
    assert len(out) == 400 and set(out[0]) == {"timestamp", "value", "anomaly_score"}
    assert all(0.0 <= float(r["anomaly_score"]) <= 1.0 for r in out)


@pytest.mark.parametrize(("content", "words"), [
    ("time,value\n1,2\n", ["no 'timestamp' column"]),
    ("timestamp\n1\n", ["no value column"]),
    ("timestamp,value\nyesterday,2\n", ["line 2", "yesterday"]),
])
def test_score_bad_input_is_one_line(tmp_path: Path, content: str, words: list[str]) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    res = CliRunner().invoke(app, ["score", str(path)])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert all(w in lines[0] for w in words), lines


def test_score_many_columns_needs_a_folder(tmp_path: Path) -> None:
    rows = write_input(tmp_path / "in.csv", n=20)
    assert rows
    res = CliRunner().invoke(app, ["score", str(tmp_path / "in.csv")])
    assert res.exit_code == 2 and "--out" in res.output and res.output.count("\n") == 1


def test_evaluate_results_folder_sweeps_the_threshold(tmp_path: Path) -> None:
    folder = tmp_path / "results" / "group"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(3):
        scores = rng.uniform(0, 0.3, 1000)
        labels = np.zeros(1000, int)
        labels[600 + 50 * k : 700 + 50 * k] = 1
        scores[620 + 50 * k] = 0.9  # a detection early in each window
        with (folder / f"s{k}.csv").open("w") as fh:
            fh.write("timestamp,value,anomaly_score,label\n")
            fh.writelines(f"{i},0,{s:.3f},{lab}\n" for i, (s, lab) in
                          enumerate(zip(scores, labels, strict=True)))
    res = CliRunner().invoke(app, ["evaluate", "--results", str(tmp_path / "results"),
                                   "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["sweep"]["standard"]["score"] > 80
    assert 0.3 < data["sweep"]["standard"]["threshold"] <= 0.9
    assert len(data["files"]) == 3
    res = CliRunner().invoke(app, ["evaluate", "--results", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and res.output.startswith("error: ")


def _small_twin_store(path: Path, rows: int) -> None:
    """A twin receiver's SQLite store holding ``rows`` hours of sensor aq1 (co, T, RH)."""
    import asyncio

    from edge.ingest.rows import IngestBatch, StreamDef
    from edge.ingest.sqlite_store import SqliteStore

    codes = ("co", "temperature", "humidity")
    batch = IngestBatch("gw", [StreamDef.of("aq1", c, {}) for c in codes])
    for i in range(rows):
        t = T0 + i * 3_600_000
        for k, v in enumerate((1 + 0.3 * math.sin(i / 5), 12.0 + math.sin(i / 24), 70.0)):
            batch.stream_index.append(k)
            batch.seq.append(3 * i + k + 1)
            batch.phenomenon_ms.append(t)
            batch.result.append(v)
            batch.quality_flag.append(1)
            for column in (batch.duration_ms, batch.result_offset_ms, batch.raw_result,
                           batch.quality_profile, batch.anomaly_milli, batch.other_scores):
                column.append(None)

    async def fill() -> None:
        store = SqliteStore(path)
        await store.open()
        await store.store_batches([batch], T0)
        await store.close()

    asyncio.run(fill())


def test_issue_15_item_3_twin_store_workflows(tmp_path: Path) -> None:
    """`quality evaluate --data twin.db` and `quality train` on a small store: one-line
    errors naming the fix, exit 2; with --sensor, evaluate runs on the store."""
    db = tmp_path / "twin.db"
    _small_twin_store(db, 50)
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "--data", str(db)])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and "--sensor" in res.output and "aq1" in res.output
    res = runner.invoke(app, ["train", "--data", str(db), "--sensor", "aq1", "--out",
                              str(tmp_path / "m")])
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert "need" in res.output and "more data" in res.output
    res = runner.invoke(app, ["evaluate", "--data", str(db), "--sensor", "nope"])
    assert res.exit_code == 2 and "aq1" in res.output
    big = tmp_path / "big.db"
    _small_twin_store(big, 600)
    res = runner.invoke(app, ["evaluate", "--data", str(big), "--sensor", "aq1", "--faults",
                              "spike", "--events", "3", "--twin-noise", "0"])
    assert res.exit_code == 0, res.output
    assert "| rules+anomaly | spike | 3 |" in res.output
