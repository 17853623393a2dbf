"""A real browser (Debian's headless chromium via playwright-core) on the home page."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import emit_stuck_values, wait_until

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE.parent.parent / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.timeout(120)


def test_home_page_in_headless_chromium(live: dict[str, Any]) -> None:
    node = shutil.which("node")
    if node is None or not CHROMIUM.exists() or not (HERE / "node_modules" / "playwright-core").is_dir():
        pytest.fail("needs node, /usr/bin/chromium and tests/web/node_modules: bash scripts/setup.sh test")
    import httpx

    wait_until(
        lambda: "sds" in httpx.get(live["url"] + "/api/latest", timeout=5).text, 20, "first values"
    )
    emit_stuck_values(live["gw"])
    ARTIFACTS.mkdir(exist_ok=True)
    run = subprocess.run(
        [node, str(HERE / "browser_check.mjs"), live["url"], str(ARTIFACTS)],
        capture_output=True, text=True, timeout=100, cwd=HERE,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    en, nl = result["en"], result["nl"]
    assert en["changed"], f"values never changed: {en['first']}"
    assert en["status"] == "All good: measuring and uploading."
    assert nl["status"] == "Alles in orde: meet en verstuurt." and nl["lang"] == "nl"
    assert en["band"] in ("Good", "Fair", "Moderate", "Poor", "Very poor", "Extremely poor")
    assert en["chartPoints"] >= 2 and en["chartBox"]["width"] > 100 and en["chartBox"]["height"] > 10
    assert en["errors"] == [] and nl["errors"] == []
    assert en["stuck"] == "suspect: value stuck for 2 h"
    assert nl["stuck"] == "twijfelachtig: waarde staat stil al 2 h"
    assert (ARTIFACTS / "status-page-en.png").stat().st_size > 5000
    tech = result["tech"]
    assert tech["errors"] == []
    for shown in ("Frames ok", "Observations waiting", "Last confirmed upload", "Clock", "SDS011"):
        assert shown in tech["text"], shown
