"""CLI conventions every user meets: --version, -h, errors on stderr with documented exit
codes, --json for scripts, a missing extra named instead of a vanished command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DUET = str(Path(sys.executable).with_name("duet-edge"))
GOOD = """
[gateway]
id = "gw-cli"
data_dir = "{data}"
[[sources]]
name = "pm"
type = "sds011"
port = "/dev/ttyUSB0"
"""


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DUET, *args], capture_output=True, text=True, timeout=60, env=env)


def test_version_and_short_help() -> None:
    version = _run("--version")
    assert version.returncode == 0 and version.stdout.startswith("duet-edge ")
    for args in (["-h"], ["config", "-h"], ["config", "check", "-h"], ["calibrate", "-h"]):
        result = _run(*args)
        assert result.returncode == 0 and "Usage: duet-edge" in result.stdout, args


def test_a_command_whose_extra_is_missing_names_the_extra() -> None:
    code = ("import sys; sys.modules['numpy'] = None; from edge.cli import main; "
            "sys.argv = ['duet-edge', 'quality', 'score', 'x.csv']; main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 3, result.stderr
    assert result.stdout == ""
    assert result.stderr.strip() == ("duet-edge quality needs the Python package 'numpy'; "
                                     "install the 'ml' extra: pip install 'duet-edge[ml]'")


def test_config_check_problems_go_to_stderr_and_json_to_stdout(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.format(data=tmp_path) + "[uplinks.mqtt]\nport = 0\n[nonsense]\n")
    result = _run("config", "check", str(bad))
    assert result.returncode == 1 and result.stdout == ""
    assert "uplinks.mqtt.port = 0" in result.stderr and "nonsense: unknown table" in result.stderr
    as_json = _run("config", "check", "--json", str(bad))
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and report["ok"] is False and len(report["problems"]) == 2
    good = tmp_path / "good.toml"
    good.write_text(GOOD.format(data=tmp_path / "data"))
    ok = json.loads(_run("config", "check", "--json", str(good)).stdout)
    assert ok == {"file": str(good), "ok": True, "problems": [], "gateway": "gw-cli",
                  "sources": ["pm"], "uplinks": [], "tables": []}


def test_missing_tls_file_fails_config_check_with_the_file_name(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(GOOD.format(data=tmp_path / "data")
                   + f'[uplinks.mqtt]\ntls = {{ ca_file = "{tmp_path / "nope.pem"}" }}\n')
    result = _run("config", "check", str(cfg))
    assert result.returncode == 1
    assert f"uplinks.mqtt.tls.ca_file = '{tmp_path / 'nope.pem'}': the file does not exist" \
        in result.stderr
    assert _run("config", "check", "--offline", str(cfg)).returncode == 0


def test_run_with_an_unusable_data_dir_is_one_line_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cfg = tmp_path / "gw.toml"
    cfg.write_text(GOOD.format(data=blocker / "data"))
    result = _run("run", str(cfg))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"gateway.data_dir = '{blocker / 'data'}': '{blocker}' is not a directory" \
        in result.stderr


def test_scan_json_lists_an_emulated_sensor(tmp_path: Path) -> None:
    from edge.emulation import emulator

    with emulator("sds011")(tmp_path / "tty", interval_s=0.2) as emu:
        result = _run("scan", "--no-ble", "--listen-s", "1", "--port", str(emu.port), "--json")
    report = json.loads(result.stdout)
    found = [p for p in report["serial"] if p["device"] == str(emu.port)]
    assert result.returncode == 0 and found and found[0]["sensor"] == "sds011"
    assert 'type = "sds011"' in report["snippet"]
