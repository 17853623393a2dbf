"""Serial sensor emulators on real pseudo-terminals (one module per sensor).

``EMULATORS`` maps a sensor ``type`` (as in config) to its emulator class; modules for sensors
not written yet are skipped.
"""

from __future__ import annotations

import importlib

from hil.emulators.base import FaultEvent, SensorEmulator, Sent

_MODULES = {
    "sds011": "Sds011Emulator",
    "pms5003": "Pms5003Emulator",
    "sps30": "Sps30Emulator",
    "mhz19b": "Mhz19bEmulator",
    "scd30": "Scd30Emulator",
    "ops243": "Ops243Emulator",
}


def _load() -> dict[str, type[SensorEmulator]]:
    out: dict[str, type[SensorEmulator]] = {}
    for name, cls in _MODULES.items():
        try:
            mod = importlib.import_module(f"hil.emulators.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"hil.emulators.{name}":
                raise
            continue
        out[name] = getattr(mod, cls)
    return out


EMULATORS: dict[str, type[SensorEmulator]] = _load()

__all__ = ["EMULATORS", "FaultEvent", "SensorEmulator", "Sent"]
