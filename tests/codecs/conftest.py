"""Shared helpers for codec tests: reference vectors as data files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parent.parent / "vectors"


def load_vectors(sensor: str) -> dict[str, Any]:
    """Load ``tests/vectors/<sensor>.json``."""
    data: dict[str, Any] = json.loads((VECTORS / f"{sensor}.json").read_text())
    return data


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))
