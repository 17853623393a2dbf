"""``duet-edge node flash`` and ``node decode``: the exact mpremote command, config checks."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.node_cli import FIRMWARE_DIR, FIRMWARE_FILES, flash_command
from firmware import nodeproto

runner = CliRunner()


def test_node_group_is_mounted() -> None:
    result = runner.invoke(app, ["node", "--help"])
    assert result.exit_code == 0
    assert "flash" in result.output and "decode" in result.output


def test_flash_dry_run_prints_the_exact_command() -> None:
    result = runner.invoke(app, ["node", "flash", "/dev/ttyUSB0", "--dry-run"])
    assert result.exit_code == 0, result.output
    expected = ["mpremote", "connect", "/dev/ttyUSB0"]
    for name in FIRMWARE_FILES:
        expected += ["fs", "cp", str(FIRMWARE_DIR / name), f":{name}", "+"]
    expected += ["reset"]
    assert result.output.split() == expected
    assert FIRMWARE_FILES[-1] == "main.py"  # main.py last: a half-flashed board does not boot it


def test_flash_runs_mpremote_with_firmware_and_config(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "calls.json"
    fake = tmp_path / "bin" / "mpremote"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n"
                    f"python3 -c 'import json,sys; json.dump(sys.argv[1:], open(\"{log}\",\"w\"))'"
                    ' "$@"\n'
                    "i=0; for a in \"$@\"; do i=$((i+1)); done\n"
                    f"cp \"$(echo \"$@\" | tr ' ' '\\n' | grep config.json | head -1)\" {tmp_path}/sent.json\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    cfg = tmp_path / "node.json"
    cfg.write_text(json.dumps({"kind": "traffic", "interval_s": 900, "enabled": ["radar"]}))
    result = runner.invoke(app, ["node", "flash", "/dev/ttyACM0", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    args = json.loads(log.read_text())
    assert args[:2] == ["connect", "/dev/ttyACM0"]
    copied = [args[i + 2] for i, a in enumerate(args) if a == "cp"]
    assert copied == [f":{n}" for n in FIRMWARE_FILES] + [":config.json"]
    assert args[-1] == "reset"
    assert json.loads((tmp_path / "sent.json").read_text()) == {
        "enabled": ["radar"], "interval_s": 900, "kind": "traffic"}


@pytest.mark.parametrize(("config", "message"), [
    ({"intervall_s": 60}, "unknown node config key 'intervall_s'; allowed: "),
    ({"interval_s": "60"}, "'interval_s': '60' is str, expected int"),
    ({"kind": "water"}, "'kind': 'water'; allowed: air, traffic"),
])
def test_flash_rejects_bad_config(tmp_path: Path, config: dict[str, object], message: str) -> None:
    cfg = tmp_path / "node.json"
    cfg.write_text(json.dumps(config))
    result = runner.invoke(app, ["node", "flash", "/dev/ttyUSB0", "--config", str(cfg), "--dry-run"])
    assert result.exit_code != 0
    assert message in " ".join(result.output.replace("│", " ").split())


def test_flash_command_without_config() -> None:
    cmd = flash_command("COM3", None)
    assert cmd.count("cp") == len(FIRMWARE_FILES) and ":config.json" not in cmd


def test_decode_command() -> None:
    frame = nodeproto.encode_message({"type": "ack", "seq": 9}).hex()
    result = runner.invoke(app, ["node", "decode", frame])
    assert result.exit_code == 0
    assert json.loads(result.output) == {"type": "ack", "seq": 9}
    bad = runner.invoke(app, ["node", "decode", "0511030000"])
    assert bad.exit_code == 1
    assert json.loads(bad.output)["error"] == "cobs"


def test_source_kinds_build_both_sources(tmp_path: Path) -> None:
    from edge.config import SourceSettings
    from edge.node.ble import NodeBleSource
    from edge.node.serial_source import NodeSerialSource
    from edge.sources import build_source

    serial = build_source(SourceSettings(
        name="n", type="node_serial", port="/dev/ttyUSB1",
        options={"state_path": str(tmp_path / "nodes.db")}), "gw")
    assert isinstance(serial, NodeSerialSource) and serial.baudrate == 115200
    ble = build_source(SourceSettings(name="b", type="node_ble"), "gw")
    assert isinstance(ble, NodeBleSource)
    with pytest.raises(ValueError, match="state_pth"):
        SourceSettings(name="n", type="node_serial", port="/dev/x", options={"state_pth": "x"})


def test_flash_without_mpremote_names_the_extra(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """No mpremote on PATH nor beside the interpreter: one line on stderr, exit code 3."""
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr("sys.executable", str(empty / "python"))
    result = CliRunner().invoke(app, ["node", "flash", "/dev/ttyUSB0"])
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: mpremote is not installed; install the firmware extra: "
        "pip install 'duet-edge[firmware]'"]
    assert result.exception is None or isinstance(result.exception, SystemExit)
