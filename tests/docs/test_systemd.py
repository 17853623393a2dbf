"""The systemd units parse, keep the settings docs/deployment.md promises, and are shown verbatim."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import RuntimeSettings

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "provisioning" / "systemd"
DEPLOYMENT = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")


def _directives(path: Path) -> dict[str, list[str]]:
    """Key → values (systemd allows repeated keys); continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", path.read_text(encoding="utf-8"))
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|min|)?", value)
    assert match, value
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


def test_gateway_unit_has_the_documented_settings() -> None:
    d = _directives(UNITS / "duet-edge.service")
    assert d["User"] == ["duet"]
    assert d["SupplementaryGroups"] == ["dialout bluetooth"]
    assert d["Restart"] == ["on-failure"]
    assert d["RestartSec"] and d["StateDirectory"] == ["duet-edge"]
    assert d["ExecStart"] == ["/opt/duet-edge/venv/bin/duet-edge run /etc/duet-edge/gateway.toml"]
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert d[key] == ["yes"], key
    assert d["ProtectSystem"] == ["strict"]
    assert d["ReadWritePaths"] == ["/var/lib/duet-edge"]
    # serial ports stay reachable; BLE goes over D-Bus (AF_UNIX), never blocked
    assert "PrivateDevices" not in d
    assert d["DevicePolicy"] == ["closed"]
    assert {v.split()[0] for v in d["DeviceAllow"]} >= {"char-ttyUSB", "char-ttyACM", "char-ttyAMA"}
    assert "AF_UNIX" in d["RestrictAddressFamilies"][0].split()
    assert "ProtectClock" not in d  # its implied DeviceAllow and @clock ban are handled explicitly


def test_stop_timeout_covers_the_graceful_drain() -> None:
    d = _directives(UNITS / "duet-edge.service")
    assert d["KillSignal"] == ["SIGTERM"]
    assert _seconds(d["TimeoutStopSec"][0]) >= RuntimeSettings().drain_timeout_s + 10


def test_invalid_config_exit_status_is_not_restarted() -> None:
    d = _directives(UNITS / "duet-edge.service")
    assert d["RestartPreventExitStatus"] == ["2"]
    run_cmd = (ROOT / "edge" / "commands" / "run_cmd.py").read_text(encoding="utf-8")
    assert "CONFIG_EXIT_CODE = 2" in run_cmd


def test_ingest_unit_uses_distinct_client_ids_and_shared_group() -> None:
    d = _directives(UNITS / "duet-edge-ingest.service")
    cmd = d["ExecStart"][0]
    assert "duet-edge ingest" in cmd
    assert "--client-id duet-ingest-%H" in cmd and "--group duet-ingest" in cmd
    assert d["Restart"] == ["on-failure"]


@pytest.mark.parametrize("unit", ["duet-edge.service"])
def test_deployment_doc_shows_the_unit_verbatim(unit: str) -> None:
    block = re.search(rf"<!-- unit:{re.escape(unit)} -->\n```ini\n(.*?)```", DEPLOYMENT, re.S)
    assert block, unit
    assert block.group(1) == (UNITS / unit).read_text(encoding="utf-8")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", ["duet-edge.service", "duet-edge-ingest.service"])
def test_systemd_analyze_verify_accepts_the_unit(unit: str, tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's interpreter environment
    venv = Path(sys.executable).parent.parent
    text = (UNITS / unit).read_text(encoding="utf-8").replace("/opt/duet-edge/venv", str(venv))
    copy = tmp_path / unit
    copy.write_text(text, encoding="utf-8")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    problems = [
        line for line in (result.stdout + result.stderr).splitlines()
        if str(copy) in line or "Unknown" in line or "ignoring" in line.lower()
    ]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_bundle_restart_exit_status_is_restarted() -> None:
    from edge.commands.run_cmd import RESTART_EXIT_CODE

    d = _directives(UNITS / "duet-edge.service")
    assert d["Restart"] == ["on-failure"]  # restarts every non-zero exit status...
    assert str(RESTART_EXIT_CODE) not in d["RestartPreventExitStatus"][0].split()  # ...incl. 75
    assert f"status {RESTART_EXIT_CODE}" in DEPLOYMENT
