"""Every file that goes onto a board compiles with mpy-cross (catches CPython-only syntax)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.node_cli import FIRMWARE_DIR, FIRMWARE_FILES

HIL_MP = Path(__file__).resolve().parents[2] / "hil" / "mp"
MPY_CROSS = Path(sys.executable).parent / "mpy-cross"


def test_flash_set_is_every_firmware_module() -> None:
    on_disk = sorted(p.name for p in FIRMWARE_DIR.glob("*.py") if p.name != "__init__.py")
    assert sorted(FIRMWARE_FILES) == on_disk


@pytest.mark.parametrize("path", [*(FIRMWARE_DIR / f for f in FIRMWARE_FILES),
                                  *sorted(HIL_MP.glob("*.py"))], ids=lambda p: p.name)
def test_compiles_with_mpy_cross(path: Path, tmp_path: Path) -> None:
    out = tmp_path / (path.stem + ".mpy")
    proc = subprocess.run([str(MPY_CROSS), "-march=xtensawin", "-o", str(out), str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0
