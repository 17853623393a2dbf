"""docs/twin.md: every shell block either runs here as written or says what it needs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rdflib import Graph

from edge.ingest.store import open_store
from tests.sta.helpers import T0_MS
from tests.twin.helpers import batch

DOC = Path(__file__).resolve().parents[2] / "docs" / "twin.md"
BLOCK = re.compile(r"(?:<!-- doc-test: (\w+) -->\n)?```bash\n(.*?)```", re.S)


def blocks() -> list[tuple[str | None, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(DOC.read_text(encoding="utf-8"))]


def test_every_block_is_tested_or_says_what_it_needs() -> None:
    for tag, body in blocks():
        assert tag is not None or body.startswith("# needs:"), body


async def fill(path: Path) -> None:
    store = open_store(path)
    await store.open()
    try:
        await store.store_batches([batch("gw-doc", range(1, 6))], T0_MS)
        await store.put_status("gw-doc", {"state": "online", "version": "0.4.0"}, T0_MS)
    finally:
        await store.close()


@pytest.mark.parametrize("tag", ["fleet", "oslo"])
def test_documented_commands_run(tag: str, tmp_path: Path) -> None:
    asyncio.run(fill(tmp_path / "twin.db"))
    body = next(b for t, b in blocks() if t == tag)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               COLUMNS="200")
    outputs = []
    for line in body.strip().splitlines():
        res = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, f"{line}\n{res.stdout}\n{res.stderr}"
        outputs.append(res.stdout)
    if tag == "fleet":
        assert "gw-doc" in outputs[0] and "0.4.0" in outputs[0]
        assert [g["gateway"] for g in json.loads(outputs[1])["gateways"]] == ["gw-doc"]
    else:
        g = Graph()
        g.parse(tmp_path / "twin.jsonld", format="json-ld")
        assert len(g) > 50
