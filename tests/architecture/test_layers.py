"""The architecture holds: layers point down (import-linter contracts in pyproject.toml), every
module imports on its own, and the seams type-check without explicit Any."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("edge", "calibration", "provisioning", "hil")
SKIP = ("hil/mp/",)  # MicroPython code (runs under MicroPython, not CPython)
# firmware/ is MicroPython code with flat imports (as on the node's flash); CPython imports
# only the shared node protocol codec from it
CPYTHON_FIRMWARE = ["firmware", "firmware.nodeproto"]


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(SKIP) or "node_modules" in rel or path.name == "__main__.py":
                continue
            names.append(rel.removesuffix(".py").removesuffix("/__init__").replace("/", "."))
    return names + CPYTHON_FIRMWARE


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_import_linter_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = _run(str(lint), "--no-cache")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout


def test_a_layer_violation_is_caught(tmp_path: Path) -> None:
    """The contracts are not vacuous: the core importing a capability breaks them."""
    config = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    probe = ROOT / "edge" / "_probe_violation.py"
    probe.write_text("import edge.quality.stage  # noqa: F401\n", encoding="utf-8")
    try:
        (tmp_path / "pyproject.toml").write_text(
            config.replace('source_modules = ["edge.config",', 'source_modules = ["edge._probe_violation", "edge.config",'),
            encoding="utf-8",
        )
        lint = Path(sys.executable).with_name("lint-imports")
        result = _run(str(lint), "--no-cache", "--config", str(tmp_path / "pyproject.toml"))
    finally:
        probe.unlink()
    assert result.returncode != 0 and "edge._probe_violation" in result.stdout


def test_every_module_imports_on_its_own() -> None:
    modules = _modules()
    assert "edge.outbox" in modules and "edge.sensors.sds011.codec" in modules
    result = _run(sys.executable, str(Path(__file__).with_name("import_each.py")), *modules)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]


def test_mypy_is_clean_with_no_explicit_any_on_the_seams() -> None:
    mypy = Path(sys.executable).with_name("mypy")
    result = _run(str(mypy), "edge", "calibration", "provisioning", "hil")
    assert result.returncode == 0, result.stdout[-4000:]
