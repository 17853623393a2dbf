"""`duet-edge demo` prints the status page URL, and the page serves the demo's live values."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.web.conftest import wait_until

pytestmark = pytest.mark.timeout(90)


def latest(url: str) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = httpx.get(url + "api/latest", timeout=2).json()
    except httpx.HTTPError:
        return None  # the URL is printed just before the gateway starts serving
    return doc if doc["sensors"] else None


def test_demo_prints_a_working_status_page_url(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from edge.cli import main; main()", "demo", "--duration", "7",
         "--workdir", str(tmp_path), "--rate", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        url = wait_until(
            lambda: next((m.group(0) for m in map(re.compile(r"http://127\.0\.0\.1:\d+/").search, lines) if m), None),
            20,
            "the status page URL in the demo's output",
        )
        doc = wait_until(lambda: latest(url), 20, "values")
        assert {s["name"] for s in doc["sensors"]} <= {"pm-sds011", "pm-pms5003"}
        assert httpx.get(url, timeout=2).status_code == 200
        assert proc.wait(40) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        reader.join(5)
    assert any("status page:" in line for line in lines)
