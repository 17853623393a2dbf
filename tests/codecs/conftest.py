"""Shared helpers for codec tests: reference vectors as data files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SENSORS = Path(__file__).resolve().parents[2] / "edge" / "sensors"


def load_vectors(sensor: str) -> dict[str, Any]:
    """Load ``edge/sensors/<sensor>/vectors.json``."""
    data: dict[str, Any] = json.loads((SENSORS / sensor / "vectors.json").read_text())
    return data


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))
