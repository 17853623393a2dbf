"""docs/calibration.md's walkthrough runs as written, and the numbers it quotes are what it prints.

The shell blocks between the walkthrough markers are run in order by bash in an empty directory,
with the venv's ``duet-edge`` first on PATH (as a technician's install would have it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "calibration.md"


def walkthrough() -> str:
    text = DOC.read_text(encoding="utf-8")
    return text[text.index("<!-- walkthrough:start -->"):text.index("<!-- walkthrough:end -->")]


def shell_blocks(section: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    work = tmp_path_factory.mktemp("walkthrough")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "COLUMNS": "200"}
    outputs = []
    for block in shell_blocks(walkthrough()):
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=work, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, f"block failed:\n{block}\n{done.stdout}\n{done.stderr}"
        outputs.append(done.stdout + done.stderr)
    return "\n".join(outputs), work


@pytest.mark.timeout(600)
def test_every_block_runs_and_the_quoted_numbers_are_printed(run: tuple[str, Path]) -> None:
    output, work = run
    section = walkthrough()
    for quoted in ("intervals detected: sensor 600 s, reference 3600 s; averaging period 3600 s",
                   "6 sensor(s), 17280 sensor-intervals", "maps pm2_5_cf1 → pm2_5",
                   "only 0.1 % of the samples", "missing_input 0", "recommendation: KEEP",
                   "refused, exit code 3"):
        assert quoted in output, quoted
    # the hold-out table: every row's R² and RMSE as printed by --show-candidates
    rows = re.findall(r"^\| \**([a-z+-]+)[^|]*\| \**([0-9.]+)\** \| \**([0-9.]+)\** \|$", section,
                      flags=re.M)
    assert len(rows) == 5
    for name, r2, rmse in rows:
        mark = r" \(chosen\)" if name == "rh-hinge" else ""
        assert re.search(rf"\| {re.escape(name)}{mark} \| {r2} \| {rmse} \|", output), name
    assert (work / "report" / "index.html").is_file()
    assert "6\n" in output  # grep -c "sensor pa-0" report/index.html: the six per-sensor rows
