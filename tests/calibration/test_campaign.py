"""Issue 16: co-location campaigns, alignment that cannot shift silently, one-line errors,
input→output mapping, reports. Each test names the problem of the issue it guards."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from calibration.artefact import load_artefact, save_artefact
from calibration.cli import app
from calibration.demo import write_campaign
from calibration.io import AlignmentError, DataError, TableSpec, align
from calibration.settings import CalibrationSettings
from calibration.stage import CalibrationStage
from edge.model import Datastream, Observation, Provenance
from tests.calibration.conftest import UCI

runner = CliRunner()


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("campaign")
    write_campaign(d, days=60)
    return d


def fit_args(d: Path, *extra: str) -> list[str]:
    return [
        "fit", "--sensor", str(d / "sensors.csv"), "--sensor-id-column", "sensor",
        "--signal", "pm2_5_cf1", "--signal-quantity", "pm2_5_cf1",
        "--input", "temperature=temperature", "--input", "humidity=humidity",
        "--reference", str(d / "reference.csv"), "--ref-time", "datum,uur",
        "--ref-time-format", "%d/%m/%Y %H:%M", "--ref-tz", "Europe/Brussels",
        "--ref-column", "PM2.5 (µg/m³)", "--quantity", "pm2_5", "--na", "-999", *extra,
    ]


# ---------------------------------------------------------------- item 1: several sensors


def test_campaign_keeps_one_sample_per_sensor_and_interval(campaign: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, [*fit_args(campaign), "--train-days", "30",
                                 "--out", str(tmp_path / "a.json"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    artefact = load_artefact(tmp_path / "a.json")
    # 6 sensors × 30 days × 24 h fitted: never averaged across sensors into 720 samples
    assert artefact.fit.n_samples == 6 * 30 * 24
    assert artefact.fit.validation["sensors"] == [f"pa-0{i}" for i in range(1, 7)]
    assert set(summary["leave_one_sensor_out_rmse"]) == set(artefact.fit.validation["sensors"])
    hold = summary["hold_out"]
    # hold-out scored on individual sensor-intervals, and per sensor
    assert hold["metrics"]["n"] == 6 * 30 * 24
    assert set(hold["per_sensor"]) == set(artefact.fit.validation["sensors"])
    assert all(m["n"] == 30 * 24 for m in hold["per_sensor"].values())


def test_one_file_per_sensor_gives_the_same_samples(campaign: Path, tmp_path: Path) -> None:
    lines = (campaign / "sensors.csv").read_text().splitlines()
    files = []
    for unit in ("pa-01", "pa-02"):
        path = tmp_path / f"{unit}.csv"
        path.write_text("\n".join([lines[0], *(r for r in lines[1:] if f",{unit}," in r)]) + "\n")
        files += ["--sensor", f"{unit}={path}"]
    args = fit_args(campaign)
    base = args[args.index("--signal"):]
    result = runner.invoke(app, ["fit", *files, *base, "--out", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    assert "2 sensor(s), 2880 sensor-intervals" in result.output
    assert load_artefact(tmp_path / "b.json").fit.validation["sensors"] == ["pa-01", "pa-02"]


# ---------------------------------------------------------------- item 2: no silent shifts


def _daily(tmp_path: Path, ref_labels_end: bool = False) -> tuple[Path, Path]:
    rng = np.random.default_rng(3)
    days = 200
    truth = 8 + 6 * np.abs(np.sin(np.arange(days) / 5.0)) + rng.gamma(2, 1.5, days)
    rows = ["date,sensor,pm,rh"]
    for unit, gain in (("s1", 1.4), ("s2", 1.6), ("s3", 1.5)):
        for d in range(days):
            day = datetime(2021, 1, 1) + timedelta(days=d)
            rows.append(f"{day:%Y-%m-%d},{unit},{gain * truth[d] + rng.normal(0, 0.5):.3f},"
                        f"{50 + 20 * math.sin(d / 9):.1f}")
    sensor = tmp_path / "daily_sensor.csv"
    sensor.write_text("\n".join(rows) + "\n")
    ref_rows = ["date,pm25"]
    for d in range(days):
        label = datetime(2021, 1, 1) + timedelta(days=d + (1 if ref_labels_end else 0))
        ref_rows.append(f"{label:%Y-%m-%d},{truth[d]:.2f}")
    reference = tmp_path / "daily_ref.csv"
    reference.write_text("\n".join(ref_rows) + "\n")
    return sensor, reference


def _daily_args(sensor: Path, reference: Path, *extra: str) -> list[str]:
    return ["fit", "--sensor", str(sensor), "--sensor-id-column", "sensor", "--sensor-time",
            "date", "--signal", "pm", "--input", "humidity=rh", "--reference", str(reference),
            "--ref-time", "date", "--ref-column", "pm25", "--quantity", "pm2_5", *extra]


def test_daily_data_are_detected_and_not_shifted_by_a_day(tmp_path: Path) -> None:
    sensor, reference = _daily(tmp_path)
    ok = runner.invoke(app, [*_daily_args(sensor, reference), "--out", str(tmp_path / "a.json")])
    assert ok.exit_code == 0, ok.output
    assert "averaging period 86400 s" in ok.output  # detected, no --period needed
    assert "3 sensor(s), 600 sensor-intervals" in ok.output
    # the old default (interval-ending labels) shifts daily data by a whole day: refused, exit 3
    shifted = runner.invoke(app, [*_daily_args(sensor, reference, "--ref-convention", "end"),
                                  "--out", str(tmp_path / "b.json")])
    assert shifted.exit_code == 3, shifted.output
    assert "refused: sensor and reference match best when the reference is shifted by" in \
        shifted.stderr
    assert "(+24 h)" in shifted.stderr or "(-24 h)" in shifted.stderr
    assert not (tmp_path / "b.json").exists()
    # a reference that really is labelled by the end of the day fits with --ref-convention end
    (tmp_path / "x").mkdir()
    sensor2, reference2 = _daily(tmp_path / "x", ref_labels_end=True)
    ends = runner.invoke(app, [*_daily_args(sensor2, reference2, "--ref-convention", "end"),
                               "--out", str(tmp_path / "c.json")])
    assert ends.exit_code == 0, ends.output


def test_wrong_time_zone_is_refused_not_fitted(campaign: Path, tmp_path: Path) -> None:
    args = fit_args(campaign)
    args[args.index("Europe/Brussels")] = "Asia/Tokyo"  # 8 h off in winter
    result = runner.invoke(app, [*args, "--period", "3600", "--out", str(tmp_path / "a.json")])
    assert result.exit_code in (2, 3), result.output
    assert "time zone" in result.stderr and "\n" not in result.stderr.strip()


def test_no_overlap_message_names_conventions_and_zones(tmp_path: Path) -> None:
    s = tmp_path / "s.csv"  # the sensor logged on odd days only, the reference on even days
    s.write_text("time,pm\n" + "".join(f"2026-01-{d:02d}T{h:02d}:00:00Z,{h}\n"
                                       for d in (1, 3, 5) for h in range(24)))
    r = tmp_path / "r.csv"
    r.write_text("time,ref\n" + "".join(f"2026-01-{d:02d}T{h:02d}:00:00Z,{h}\n"
                                        for d in (2, 4) for h in range(24)))
    with pytest.raises(DataError, match=r"overlap for 3\.\d days but no 3600 s interval matches.*"
                                        r"conventions.*time zones"):
        align(TableSpec(s, {"signal": "pm"}), TableSpec(r, {"reference": "ref"},
                                                        convention="begin"), 3600)
    s.write_text("time,pm\n" + "".join(f"2026-01-01T{h:02d}:00:00Z,{h}\n" for h in range(24)))
    r.write_text("time,ref\n" + "".join(f"2026-01-02T{h:02d}:00:00Z,{h}\n" for h in range(3, 9)))
    with pytest.raises(DataError, match="usually a time-zone error"):
        align(TableSpec(s, {"signal": "pm"}), TableSpec(r, {"reference": "ref"},
                                                        convention="begin"), 3600)


def test_lag_check_passes_aligned_data_and_catches_one_interval(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = np.convolve(rng.gamma(2, 5, 500), np.ones(3) / 3, mode="same")
    start = datetime(2026, 2, 1, tzinfo=UTC)
    s = tmp_path / "s.csv"
    s.write_text("time,pm\n" + "".join(
        f"{start + timedelta(hours=i):%Y-%m-%dT%H:%M:%SZ},{1.5 * v + rng.normal(0, .3)}\n"
        for i, v in enumerate(x)))
    r = tmp_path / "r.csv"
    r.write_text("time,ref\n" + "".join(
        f"{start + timedelta(hours=i + 1):%Y-%m-%dT%H:%M:%SZ},{v}\n" for i, v in enumerate(x)))
    aligned = align(TableSpec(s, {"signal": "pm"}), TableSpec(r, {"reference": "ref"},
                                                              convention="end"))
    assert len(aligned) == 500 and not aligned.warnings
    with pytest.raises(AlignmentError, match=r"shifted by [+-]1 interval"):
        align(TableSpec(s, {"signal": "pm"}), TableSpec(r, {"reference": "ref"},
                                                        convention="begin"))


# ---------------------------------------------------------------- issue 15 item 7: sentinels


def test_uci_without_na_is_refused_instead_of_a_useless_artefact(tmp_path: Path) -> None:
    from tests.calibration.test_cli import CO_ARGS

    args = list(CO_ARGS)
    i = args.index("--na")
    del args[i:i + 2]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "x.json")])
    assert result.exit_code == 3
    assert "holds 366 of 9357 values equal to -200" in result.stderr
    assert "pass --na -200" in result.stderr
    assert not (tmp_path / "x.json").exists()


def test_sentinels_in_a_campaign_are_refused_until_declared(campaign: Path, tmp_path: Path) -> None:
    args = fit_args(campaign)
    i = args.index("--na")
    del args[i:i + 2]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "x.json")])
    assert result.exit_code == 3 and "equal to -999" in result.stderr


def test_impossible_zero_humidity_is_warned_loudly(tmp_path: Path) -> None:
    rows = ["time,pm,rh"] + [f"2026-01-01T{h:02d}:00:00Z,{h + 1},{0 if h % 4 == 0 else 60}"
                             for h in range(24)]
    (tmp_path / "s.csv").write_text("\n".join(rows))
    (tmp_path / "r.csv").write_text("time,ref\n" + "".join(
        f"2026-01-01T{h:02d}:00:00Z,{h}\n" for h in range(24)))
    aligned = align(TableSpec(tmp_path / "s.csv", {"signal": "pm", "rh": "rh"},
                              quantities={"rh": "humidity"}),
                    TableSpec(tmp_path / "r.csv", {"reference": "ref"}, convention="begin"))
    assert any("holds 6 values of exactly 0, which is impossible" in w for w in aligned.warnings)


# ---------------------------------------------------------------- items 4, 5: reasons, errors


def test_help_lists_every_model_name() -> None:
    result = runner.invoke(app, ["fit", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    for name in ("offset-gain", "linear-robust", "power-law", "koehler+gain", "koehler+linear",
                 "rh-hinge"):
        assert name in result.output


def test_ids_with_plus_and_models_with_slash_work(campaign: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, [*fit_args(campaign), "--id", "rw-koehler+linear",
                                 "--sensor-model", "PA-II/PMS5003", "--out",
                                 str(tmp_path / "a.json"), "--report-dir", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    art = load_artefact(tmp_path / "a.json")
    assert art.id == "rw-koehler+linear" and art.sensor.model == "PA-II/PMS5003"
    derived = runner.invoke(app, [*fit_args(campaign), "--sensor-model", "PA-II/PMS5003",
                                  "--out", str(tmp_path / "b.json")])
    assert derived.exit_code == 0, derived.output
    assert load_artefact(tmp_path / "b.json").id.startswith("pm2_5-PA-II-PMS5003-")
    bad = runner.invoke(app, [*fit_args(campaign), "--id", "a b", "--out", str(tmp_path / "c")])
    assert bad.exit_code == 2
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.output
    assert "--id 'a b': use letters" in bad.stderr


@pytest.mark.parametrize("args, message", [
    (["fit", "--quantity", "pm2_5", "--out", "x.json"], "missing option(s) --sensor"),
    (["check", "nope.json", "--data", "x.csv"], "nope.json: cannot read"),
    (["report", "nope.json", "--data", "x.csv", "--out-dir", "r"], "nope.json: cannot read"),
    (["export-outbox", "nope.db", "--out", "x.csv"], "nope.db: no such outbox database"),
    (["preset", "nope", "--out", "x.json"], "unknown preset 'nope'"),
    (["migrate", "nope.json", "--out", "x.json"], "nope.json: cannot read"),
])
def test_every_error_is_one_line_with_exit_code_2(args: list[str], message: str,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr and result.stdout == ""


def test_skipped_candidates_are_in_the_artefact_with_reasons(campaign: Path,
                                                             tmp_path: Path) -> None:
    result = runner.invoke(app, [*fit_args(campaign), "--models", "linear,rh-hinge,koehler",
                                 "--out", str(tmp_path / "a.json")])
    assert result.exit_code == 0, result.output
    skipped = load_artefact(tmp_path / "a.json").fit.validation["skipped"]
    assert skipped["offset-gain"] == "not requested (--models)"
    assert "offset-gain        not used: not requested (--models)" in result.output


# ---------------------------------------------------------------- item 6: CF=1 in, PM2.5 out


def test_fitted_artefact_takes_cf1_in_and_gives_pm25_out(campaign: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, [*fit_args(campaign), "--id", "pms-cf1", "--sensor-model",
                                 "PMS5003", "--out", str(tmp_path / "a" / "pms.json")])
    assert result.exit_code == 0, result.output
    assert "maps pm2_5_cf1 → pm2_5" in result.output
    settings = CalibrationSettings.model_validate({"artefact_dir": str(tmp_path / "a"), "assign": [
        {"artefact": "pms-cf1", "quantity": "pm2_5_cf1", "sensor_id": "pa-01"}]})
    stage = CalibrationStage(settings)
    prov = Provenance(sensor_model="PMS5003")
    obs = [Observation(Datastream("gw", "pa-01", q), v, 1_000_000, prov)
           for q, v in (("pm2_5_cf1", 40.0), ("temperature", 8.0), ("humidity", 70.0))]
    stage.process(obs)
    assert obs[0].stream.quantity_code == "pm2_5" and obs[0].raw_result == 40.0
    assert obs[0].provenance.calibration_id == "pms-cf1"


def test_check_accepts_the_fit_column_mapping(campaign: Path, tmp_path: Path) -> None:
    fitted = runner.invoke(app, [*fit_args(campaign), "--out", str(tmp_path / "a.json")])
    assert fitted.exit_code == 0, fitted.output
    mapping = fit_args(campaign)[1:]
    for opt in ("--signal-quantity", "--quantity"):  # fit-only: check reads them from the artefact
        i = mapping.index(opt)
        del mapping[i:i + 2]
    result = runner.invoke(app, ["check", str(tmp_path / "a.json"), *mapping, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["recommendation"] == "keep" and len(out["per_sensor"]) == 6
    missing = runner.invoke(app, ["check", str(tmp_path / "a.json"), *mapping[:4]])
    assert missing.exit_code == 2 and "needs co-input(s)" in missing.stderr


# ---------------------------------------------------------------- items 8, 9: reports


def test_report_shows_coefficients_kappa_coverage_per_sensor_and_daily_panels(
    campaign: Path, tmp_path: Path
) -> None:
    result = runner.invoke(app, [*fit_args(campaign), "--models", "koehler+linear",
                                 "--train-days", "30", "--out", str(tmp_path / "a.json"),
                                 "--report-dir", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "κ-Köhler: κ = " in result.output  # coefficients and κ printed
    html = (tmp_path / "r" / "index.html").read_text()
    assert "κ-Köhler: κ = " in html and "y = +" in html
    assert html.count("<td>sensor pa-0") == 6
    assert "mostly measures the extrapolation" in html  # thin coverage near the limit value
    assert "mostly measures the extrapolation" in result.stderr
    png = tmp_path / "r" / "timeseries.png"
    assert png.stat().st_size > 40_000  # six daily-mean panels, not one unreadable line


def test_migrate_command_writes_the_current_schema(tmp_path: Path) -> None:
    from tests.calibration.test_artefact import _legacy_koehler_file

    old = _legacy_koehler_file(tmp_path / "old.json")
    result = runner.invoke(app, ["migrate", str(old), "--out", str(tmp_path / "new.json")])
    assert result.exit_code == 0, result.output
    assert "migrated from duet-edge/calibration/1" in result.output
    new = json.loads((tmp_path / "new.json").read_text())
    assert new["schema"] == "duet-edge/calibration/2"
    assert new["model"]["steps"][0]["kappa"] == pytest.approx(0.2)
    save_artefact(load_artefact(tmp_path / "new.json"), tmp_path / "again.json")


def test_uci_still_aligns_with_its_own_timestamps() -> None:
    assert UCI.is_file()


def test_per_sensor_fits_beside_the_pooled_one(campaign: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, [*fit_args(campaign), "--train-days", "30", "--models",
                                 "koehler+linear", "--out", str(tmp_path / "a.json"),
                                 "--per-sensor-dir", str(tmp_path / "units"), "--json"])
    assert result.exit_code == 0, result.output
    fits = json.loads(result.stdout)["per_sensor_fits"]
    assert set(fits) == {f"pa-0{i}" for i in range(1, 7)}
    # a unit's own fit knows its gain: on its own hold-out it does at least as well as pooled
    assert sum(r["own_fit_rmse"] for r in fits.values()) < sum(r["pooled_rmse"] for r in
                                                             fits.values())
    unit = load_artefact(tmp_path / "units" / "pm2_5-sensor-2026-01-05.pa-06.json")
    assert unit.fit.validation["fitted_on_sensor"] == "pa-06"
    assert unit.inputs[0].quantity == "pm2_5_cf1" and unit.quantity == "pm2_5"
