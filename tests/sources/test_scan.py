"""`duet-edge scan` recognises emulated sensors on pseudo-terminals without changing them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge import plugins
from edge.cli import app
from edge.discovery import PortInfo, probe_port
from hil.emulators import EMULATORS
from tests.hil.registry import generic_serial

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("sensor", generic_serial())
def test_probe_recognises_the_sensor_read_only(tmp_path: Path, sensor: str) -> None:
    emu = EMULATORS[sensor](tmp_path / "tty", interval_s=0.2).start()
    try:
        info = probe_port(PortInfo(device=emu.port), listen_s=1.0)
    finally:
        emu.stop()
    assert info.sensor == sensor, info.error
    probe = plugins.sensor(sensor).descriptor.probe
    if probe:
        # the only command the sensor ever recognised is its own read-only probe
        assert set(emu.commands_seen) <= {probe}
    else:
        assert emu.commands_seen == []  # it talks unprompted: scan only listened


def test_scan_command_prints_a_snippet_that_validates(tmp_path: Path) -> None:
    emu = EMULATORS["sds011"](tmp_path / "tty", interval_s=0.2).start()
    try:
        result = CliRunner().invoke(
            app, ["scan", "--port", emu.port, "--no-ble", "--listen-s", "1"]
        )
    finally:
        emu.stop()
    assert result.exit_code == 0, result.output
    assert 'type = "sds011"' in result.output
    snippet = result.output[result.output.index("[[sources]]") :]
    from edge.config import parse_config

    cfg = parse_config('[gateway]\nid = "gw"\n' + snippet)
    assert cfg.sources[0].type == "sds011"
