"""Numbers and phrases a page quotes are what its blocks print, in the run of
tests/docs/test_shell_blocks.py (the same run: no block is run twice)."""

from __future__ import annotations

import re

import pytest

from tests.docs.blocks import ROOT
from tests.docs.conftest import DocRuns


def _walkthrough() -> str:
    text = (ROOT / "docs" / "calibration.md").read_text(encoding="utf-8")
    return text[text.index("<!-- walkthrough:start -->"):text.index("<!-- walkthrough:end -->")]


@pytest.mark.timeout(900)
def test_calibration_walkthrough_prints_the_quoted_numbers(doc_runs: DocRuns) -> None:
    """docs/calibration.md's walkthrough: every block ran, and what the page quotes from the
    output (intervals, sensors, hold-out table, warning, replay, refusal) is what it printed."""
    text = (ROOT / "docs" / "calibration.md").read_text(encoding="utf-8")
    end_line = text[:text.index("<!-- walkthrough:end -->")].count("\n") + 1
    runs = [r for r in doc_runs.outputs("docs/calibration.md") if r.block.line < end_line]
    assert len(runs) >= 6 and all(r.ran and r.ok for r in runs), [r.problems for r in runs]
    output = "\n".join(r.output for r in runs)
    for quoted in ("intervals detected: sensor 600 s, reference 3600 s; averaging period 3600 s",
                   "6 sensor(s), 17280 sensor-intervals", "maps pm2_5_cf1 → pm2_5",
                   "only 0.1 % of the samples", "missing_input 0", "recommendation: KEEP",
                   "refused, exit code 3", "index.html"):
        assert quoted in output, quoted
    rows = re.findall(r"^\| \**([a-z+-]+)[^|]*\| \**([0-9.]+)\** \| \**([0-9.]+)\** \|$",
                      _walkthrough(), flags=re.M)
    assert len(rows) == 5
    for name, r2, rmse in rows:
        mark = r" \(chosen\)" if name == "rh-hinge" else ""
        assert re.search(rf"\| {re.escape(name)}{mark} \| {r2} \| {rmse} \|", output), name
    assert re.search(r"^6$", output, re.M)  # the six per-sensor rows of report/index.html
