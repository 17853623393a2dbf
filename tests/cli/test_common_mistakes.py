"""The common mistakes of every command (a missing file, a bad option value, an unreadable
config) give a short error on stderr and a documented exit code, never a traceback
(docs/cli.md, "Exit codes")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [str(Path(sys.executable).with_name("duet-edge"))]
MISSING = "missing.toml"
NOT_TOML = "garbage.toml"

# (arguments, expected exit code); files are relative to a scratch directory
MISTAKES: list[tuple[list[str], int]] = [
    (["run", MISSING], 2),
    (["run", NOT_TOML], 2),
    (["config", "check", MISSING], 1),
    (["config", "check", NOT_TOML], 1),
    (["outbox", "stats", MISSING], 2),
    (["outbox", "stats", NOT_TOML], 2),
    (["outbox", "dead-letters", MISSING], 2),
    (["outbox", "requeue", MISSING], 2),
    (["outbox", "dead-letters", NOT_TOML, "--limit", "many"], 2),
    (["demo", "--duration", "soon"], 2),
    (["ingest", "--port", "http"], 2),
    (["scan", "--bogus-option"], 2),
    (["calibrate", "replay", MISSING, "--data", "missing.csv"], 2),
    (["calibrate", "check", "missing.json", "--data", "missing.csv"], 2),
    (["quality", "score", "missing.csv"], 2),
    (["provision", "expiry", "missing.crt"], 1),
    (["provision", "install-cert", "missing.crt", "--identity-dir", "nowhere"], 1),
]


@pytest.mark.parametrize(("args", "code"), MISTAKES, ids=lambda v: " ".join(v) if isinstance(v, list) else str(v))
def test_a_common_mistake_is_a_short_error_with_its_exit_code(
        args: list[str], code: int, tmp_path: Path) -> None:
    (tmp_path / NOT_TOML).write_text("[gateway\nid = \n", encoding="utf-8")
    done = subprocess.run([*CLI, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "100", "NO_COLOR": "1"})
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.strip(), "the error goes to stderr"
    assert len(done.stderr.strip().splitlines()) <= 8, done.stderr


def test_outbox_stats_json_for_scripts(tmp_path: Path) -> None:
    from edge.config import load_config
    from edge.outbox import Outbox

    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nid = "gw-json"\ndata_dir = "{tmp_path}"\n[[sources]]\n'
                      'name = "pm"\ntype = "sds011"\nport = "/dev/ttyUSB0"\n', encoding="utf-8")
    cfg = load_config(config)
    Outbox(cfg.outbox_path, cfg.buffer, cfg.gateway.id, uplinks=["none"]).close()
    done = subprocess.run([*CLI, "outbox", "stats", str(config), "--json"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["unsent"] == 0 and summary["dead_letters"] == 0
    assert set(summary) >= {"oldest_unsent_ms", "last_seq", "evicted", "gaps"}
