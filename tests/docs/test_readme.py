"""The README's two set-up commands are real: CI runs the test command, the CLI has what it lists."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DEMO_COMMAND = "bash scripts/setup.sh runtime && .venv/bin/duet-edge demo"
TEST_COMMAND = "bash scripts/setup.sh test && .venv/bin/python -m pytest"


def _cli() -> list[str]:
    """The installed ``duet-edge`` script (what the README runs), else the same entry point."""
    script = Path(sys.executable).with_name("duet-edge")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from edge.cli import main; main()"]


def _bash_lines(text: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_readme_has_exactly_the_two_setup_commands() -> None:
    assert _bash_lines(README) == [DEMO_COMMAND, TEST_COMMAND]


def test_ci_runs_the_readme_test_command() -> None:
    ci = ROOT / ".ci" / "run"
    text = ci.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    commands = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert TEST_COMMAND in commands
    assert os.access(ci, os.X_OK)


def test_setup_script_accepts_both_modes() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    assert '"$what" = "test"' in setup
    assert "setup.sh runtime" in setup


def test_cli_lists_the_documented_subcommands() -> None:
    out = subprocess.run(
        [*_cli(), "--help"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    assert out.returncode == 0, out.stderr
    documented = re.findall(r"^\| `([a-z-]+)[ `]", README, re.M)
    assert documented, "README command table not found"
    for command in documented:
        assert re.search(rf"^  {command}\s", out.stdout, re.M), f"{command} missing from --help"


def test_readme_links_point_to_files() -> None:
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if "://" not in target:
            assert (ROOT / target).exists(), target


def test_demo_command_shows_the_twin_receiving(tmp_path: Path) -> None:
    """The README's first command, bounded: emulated sensors reach the twin within seconds."""
    out = subprocess.run(
        [*_cli(), "demo", "--duration", "8", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=90, cwd=ROOT,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    found = re.search(r"The twin received (\d+) observations \((\d+) duplicates", out.stdout)
    assert found, out.stdout
    assert int(found.group(1)) > 0 and int(found.group(2)) == 0
    assert "SDS011" in out.stdout and "PMS5003" in out.stdout
