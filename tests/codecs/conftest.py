"""Shared helpers for codec tests: the registry's serial sensors and their reference vectors."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from edge import plugins


def sensor_folder(name: str) -> Path:
    """The folder of a registered sensor (its codec module's package)."""
    package = plugins.sensor(name).descriptor.decoder.__module__.rpartition(".")[0]
    init = importlib.import_module(package).__file__
    assert init is not None
    return Path(init).parent


def serial_sensors() -> list[str]:
    """Every registered sensor with a serial stream protocol, sorted."""
    return sorted(n for n, s in plugins.sensors().items() if s.descriptor.interface == "serial")


def load_vectors(sensor: str) -> dict[str, Any]:
    """Load ``vectors.json`` from the sensor's folder."""
    data: dict[str, Any] = json.loads((sensor_folder(sensor) / "vectors.json").read_text())
    return data


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))
