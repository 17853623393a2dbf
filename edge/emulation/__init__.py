"""Serial sensors emulated on real pseudo-terminals, for the demo, `scan` checks and tests.

The machinery (:mod:`edge.emulation.base`, :mod:`edge.emulation.pty_link`) is shared; each
sensor's wire behaviour lives in its own folder as ``edge/sensors/<name>/emulator.py``
(exporting ``EMULATOR``), found by :func:`emulators`.
"""

from __future__ import annotations

import importlib
from functools import cache

from edge import plugins
from edge.emulation.base import FaultEvent, SensorEmulator, Sent

__all__ = ["FaultEvent", "SensorEmulator", "Sent", "emulator", "emulators"]


@cache
def emulators() -> dict[str, type[SensorEmulator]]:
    """Sensor type → emulator class, for every sensor whose folder has an ``emulator.py``."""
    found: dict[str, type[SensorEmulator]] = {}
    for name, sensor in plugins.sensors().items():
        package = sensor.descriptor.decoder.__module__.rpartition(".")[0]
        try:
            module = importlib.import_module(f"{package}.emulator")
        except ModuleNotFoundError as exc:
            if exc.name != f"{package}.emulator":
                raise
            continue
        cls = vars(module).get("EMULATOR")
        if isinstance(cls, type) and issubclass(cls, SensorEmulator):
            found[name] = cls
    return found


def emulator(name: str) -> type[SensorEmulator]:
    """The emulator class of sensor type ``name``; KeyError lists the emulated ones."""
    known = emulators()
    try:
        return known[name]
    except KeyError:
        raise KeyError(f"no emulator for {name!r}; emulated: {', '.join(sorted(known))}") from None
