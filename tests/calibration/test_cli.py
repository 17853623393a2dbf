"""`duet-edge calibrate …` end to end on the UCI Air Quality data (the published table)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from calibration.artefact import load_artefact
from calibration.cli import app
from tests.calibration.conftest import UCI

runner = CliRunner()

UCI_TIME = [
    "--sensor-time", "Date,Time", "--sensor-time-format", "%d/%m/%Y %H.%M.%S",
    "--sensor-tz", "Europe/Rome", "--ref-time", "Date,Time", "--ref-time-format",
    "%d/%m/%Y %H.%M.%S", "--ref-tz", "Europe/Rome", "--ref-convention", "begin", "--na", "-200",
]
CO_ARGS = [
    "fit", "--sensor", str(UCI), "--reference", str(UCI), "--signal", "PT08.S1(CO)",
    "--input", "s2=PT08.S2(NMHC):mox_response", "--input", "temperature=T",
    "--extra", "humidity=RH",
    "--ref-column", "CO(GT)", "--quantity", "co", *UCI_TIME, "--train-days", "28",
    "--id", "uci-co", "--sensor-model", "PT08",
]
NO2_ARGS = [
    "fit", "--sensor", str(UCI), "--reference", str(UCI), "--signal", "PT08.S4(NO2)",
    "--input", "s1=PT08.S1(CO):mox_response", "--input", "s2=PT08.S2(NMHC):mox_response",
    "--input", "s3=PT08.S3(NOx):mox_response", "--input", "s5=PT08.S5(O3):mox_response",
    "--extra", "temperature=T", "--extra", "humidity=RH",  # report only: residual plots
    "--ref-column", "NO2(GT)", "--quantity", "no2", *UCI_TIME, "--train-days", "28",
    "--id", "uci-no2", "--sensor-model", "PT08",
]


def _r2(output: str) -> float:
    match = re.search(r"hold-out: n=\d+ R²=([-0-9.]+)", output)
    assert match, output
    return float(match.group(1))


@pytest.fixture(scope="module")
def co_fit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    d = tmp_path_factory.mktemp("co")
    result = runner.invoke(app, [*CO_ARGS, "--out", str(d / "co.json"), "--report-dir",
                                 str(d / "report"), "--aligned-out", str(d / "aligned.csv")])
    assert result.exit_code == 0, result.output
    return d, result.output


def test_co_automatic_choice_beats_the_random_forest_baseline(co_fit: tuple[Path, str]) -> None:
    d, output = co_fit
    assert _r2(output) > 0.866
    artefact = load_artefact(d / "co.json")
    assert artefact.fit.validation["chosen"] in output
    assert artefact.fit.n_samples > 500
    assert artefact.fit.period_start == "2004-03-10T17:00:00Z"  # 18:00 Rome (CET) = 17:00 UTC
    assert artefact.inputs[2].range is not None


def test_no2_automatic_choice_beats_the_multilinear_baseline(tmp_path: Path) -> None:
    result = runner.invoke(app, [*NO2_ARGS, "--out", str(tmp_path / "no2.json"),
                                 "--report-dir", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert _r2(result.output) > 0.70
    # T and RH are not model inputs here, but the report still plots residuals against them
    assert (tmp_path / "report" / "residuals_env.png").stat().st_size > 20_000
    assert [i.name for i in load_artefact(tmp_path / "no2.json").inputs] == [
        "signal", "s1", "s2", "s3", "s5"]


def test_report_renders_figures(co_fit: tuple[Path, str]) -> None:
    d, _ = co_fit
    report = d / "report"
    html = (report / "index.html").read_text()
    assert "Expanded relative uncertainty" in html and "forward-chaining" in html
    for name in ("scatter.png", "timeseries.png", "residuals_env.png"):
        png = report / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 20_000, name  # a real plot, not an empty canvas
    again = runner.invoke(app, ["report", str(d / "co.json"), "--data", str(d / "aligned.csv"),
                                "--out-dir", str(d / "report2")])
    assert again.exit_code == 0, again.output
    assert (d / "report2" / "scatter.png").stat().st_size > 20_000


def test_check_keeps_a_good_calibration_and_flags_drift(co_fit: tuple[Path, str]) -> None:
    d, _ = co_fit
    lines = (d / "aligned.csv").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    cols = header.split(",")
    ref_i = cols.index("reference")
    # the first weeks (fitting period) → keep
    (d / "early.csv").write_text("\n".join([header, *rows[:500]]) + "\n")
    keep = runner.invoke(app, ["check", str(d / "co.json"), "--data", str(d / "early.csv"),
                               "--json"])
    assert keep.exit_code == 0, keep.output
    assert json.loads(keep.output)["recommendation"] == "keep"
    # the reference reads 60 % higher (a sensor that lost sensitivity) → refit, exit 1
    drifted = []
    for row in rows[:500]:
        cells = row.split(",")
        cells[ref_i] = repr(float(cells[ref_i]) * 1.6)
        drifted.append(",".join(cells))
    (d / "drift.csv").write_text("\n".join([header, *drifted]) + "\n")
    bad = runner.invoke(app, ["check", str(d / "co.json"), "--data", str(d / "drift.csv")])
    assert bad.exit_code == 1, bad.output
    assert "recommendation: REFIT" in bad.output


def test_bad_inputs_give_clear_errors(tmp_path: Path) -> None:
    args = [a if a != "CO(GT)" else "CO_ref" for a in CO_ARGS]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "x.json")])
    assert result.exit_code == 2
    assert "column(s) 'CO_ref' not found" in result.output
    result = runner.invoke(app, [*CO_ARGS, "--sensor-sep", ",", "--out", str(tmp_path / "x.json")])
    assert result.exit_code == 2
    assert "try separator ';'" in result.output
    result = runner.invoke(app, [*CO_ARGS, "--input", "oops", "--out", str(tmp_path / "x.json")])
    assert result.exit_code == 2 and "NAME=COLUMN" in result.output


def test_preset_command_writes_a_loadable_artefact(tmp_path: Path) -> None:
    result = runner.invoke(app, ["preset", "us-epa-purpleair-2021", "--out", str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    assert load_artefact(tmp_path / "p.json").id == "us-epa-purpleair-2021"
