"""What the docs point at exists: linked files and anchors, cited source files and tests."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    "README.md",
    "docs/architecture.md",
    "docs/deployment.md",
    "docs/configuration.md",
    "docs/upload-contract.md",
    "docs/sensors.md",
    "docs/ble.md",
    "docs/adding-a-sensor.md",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "edge" / "sensors").glob("*/README.md")),
]


def _slug(heading: str) -> str:
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("doc", DOCS)
def test_links_resolve(doc: str) -> None:
    path = ROOT / doc
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
        if "://" in target:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.exists(), f"{doc}: {target}"
        if anchor:
            assert anchor in _anchors(linked), f"{doc}: anchor #{anchor} not in {file_part}"


@pytest.mark.parametrize("doc", DOCS)
def test_cited_files_exist(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    cited = set(re.findall(r"`((?:edge|calibration|provisioning|firmware|tests|bench|scripts|hil)"
                           r"/[\w/.\-]+\.(?:py|toml|sh|service|md|conf))", text))
    for rel in sorted(cited):
        assert (ROOT / rel).exists(), f"{doc} cites {rel}"


@pytest.mark.parametrize("doc", DOCS)
def test_cited_tests_exist(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    all_tests = "\n".join(
        p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("test_*.py")
    )
    for name in sorted(set(re.findall(r"`(?:[\w/.]+::)?(test_\w+)`", text))):
        assert re.search(rf"def {name}\(", all_tests), f"{doc} cites missing test {name}"
    for path, name in re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", text):
        assert f"def {name}(" in (ROOT / path).read_text(encoding="utf-8"), f"{path}::{name}"
