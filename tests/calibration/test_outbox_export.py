"""Fitting from the gateway's own buffer: outbox → CSV export → fit against a VMM-style file."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
from typer.testing import CliRunner

from calibration.artefact import load_artefact
from calibration.cli import app
from edge.config import BufferSettings
from edge.model import Datastream, Observation, Provenance
from edge.outbox import Outbox

runner = CliRunner()


def test_fit_from_outbox_export_against_hour_ending_local_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    hours = 24 * 12
    truth = 10 + 8 * np.abs(np.sin(np.arange(hours) / 9.0)) + rng.gamma(2, 2, hours)
    rh = 55 + 25 * np.sin(np.arange(hours) / 24 * 2 * np.pi)
    outbox = Outbox(tmp_path / "outbox.db", BufferSettings(), "gw-1", uplinks=["none"])
    pm = Datastream("gw-1", "sds-1", "pm2_5")
    hum = Datastream("gw-1", "bme-1", "humidity")
    prov = Provenance(sensor_model="SDS011")
    for h in range(hours):
        for minute in range(0, 60, 10):  # 10-minute sensor values
            t_ms = int((start + timedelta(hours=h, minutes=minute)).timestamp() * 1000)
            wet = truth[h] * (1 + 0.3 / (100 / rh[h] - 1))
            outbox.append([Observation(pm, 1.3 * wet + rng.normal(0, 0.2), t_ms, prov),
                           Observation(hum, rh[h], t_ms, Provenance(sensor_model="BME280"))])
        outbox.commit()
    outbox.close()

    # Exactly as docs/calibration.md tells a technician, in a fresh process: the real entry
    # point's import order is what broke before (issue 15 item 2, an import cycle).
    export = subprocess.run(
        [str(Path(sys.executable).with_name("duet-edge")), "calibrate", "export-outbox",
         str(tmp_path / "outbox.db"), "--out", str(tmp_path / "sensor.csv")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert export.returncode == 0, export.stderr
    assert export.stderr == ""
    assert f"wrote {hours * 12} observations" in export.stdout

    # VMM-style reference: Brussels local time, hour-ending labels, ';' and decimal comma.
    brussels = ZoneInfo("Europe/Brussels")
    lines = ["datum;tijd;PM25 (µg/m³)"]
    for h in range(hours):
        end_local = (start + timedelta(hours=h + 1)).astimezone(brussels)
        lines.append(f"{end_local:%d/%m/%Y};{end_local:%H:%M};{truth[h]:.2f}".replace(".", ","))
    (tmp_path / "vmm.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    fit = runner.invoke(app, [
        "fit", "--sensor", str(tmp_path / "sensor.csv"), "--reference", str(tmp_path / "vmm.csv"),
        "--sensor-time", "time_utc", "--signal", "sds-1/pm2_5", "--input", "humidity=bme-1/humidity",
        "--ref-time", "datum,tijd", "--ref-time-format", "%d/%m/%Y %H:%M",
        "--ref-tz", "Europe/Brussels", "--ref-convention", "end", "--ref-column", "PM25 (µg/m³)",
        "--quantity", "pm2_5", "--id", "pm25-sds-1", "--sensor-model", "SDS011",
        "--out", str(tmp_path / "a.json"),
    ])
    assert fit.exit_code == 0, fit.output
    assert f"{hours} sensor-intervals of 3600 s in common with the reference, 0 dropped" in fit.output
    artefact = load_artefact(tmp_path / "a.json")
    assert artefact.fit.validation["chosen"] in ("koehler+gain", "koehler+linear")
    assert artefact.fit.metrics["r2"] > 0.99  # hour-ending/time zone handled: no offset by 1–2 h
