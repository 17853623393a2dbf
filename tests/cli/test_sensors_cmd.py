"""`duet-edge sensors` shows what the registry holds: every sensor and source kind, nothing
hand-kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from edge import plugins
from edge.emulation import emulators
from edge.quantities import QUANTITIES

DUET = str(Path(sys.executable).with_name("duet-edge"))


def _run(*args: str, columns: int = 100) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1"}
    return subprocess.run([DUET, *args], capture_output=True, text=True, timeout=60, env=env)


def test_json_lists_every_registered_sensor_with_units_and_emulator() -> None:
    result = _run("sensors", "--json")
    assert result.returncode == 0 and result.stderr == ""
    report = json.loads(result.stdout)
    shown = {row["type"]: row for row in report["sensors"]}
    assert set(shown) == set(plugins.sensors())
    for name, sensor in plugins.sensors().items():
        row = shown[name]
        desc = sensor.descriptor
        assert [q["code"] for q in row["quantities"]] == list(desc.quantities)
        assert [q["unit"] for q in row["quantities"]] == [
            QUANTITIES[q].unit for q in desc.quantities]
        assert row["default_interval_s"] == desc.default_interval_s
        assert row["warmup_s"] == desc.warmup_s
        assert row["emulator"] is (name in emulators())
        assert Path(row["readme"]).name == "README.md" and Path(row["readme"]).is_file(), name
        if desc.interface == "serial":
            assert row["probe"] == (desc.probe.hex(" ") if desc.probe else "listen")
            assert set(row["options"]) == set(sensor.options.model_fields)
            assert row["options_model"].endswith(sensor.options.__qualname__)
    sps30 = shown["sps30"]["options"]["fan_cleaning_interval_s"]
    assert "description" in sps30 and sps30["default"] is None
    assert {k["type"] for k in report["source_kinds"]} == set(plugins.source_kinds())


def test_table_names_every_type_at_80_columns() -> None:
    result = _run("sensors", columns=80)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for name in [*plugins.sensors(), *plugins.source_kinds()]:
        assert f"│ {name}" in result.stdout, name
    assert "sps30: Sps30Options: fan_cleaning_interval_s" in result.stdout
    assert "[ppm]" in result.stdout  # UCUM units printed as they are, not eaten as markup
