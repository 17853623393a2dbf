"""Hardware-in-the-loop front end for the sensor emulators (``python -m hil.emulators``).

The emulators themselves live with their sensors (``edge/sensors/<name>/emulator.py``);
``EMULATORS`` maps a sensor ``type`` to its emulator class.
"""

from __future__ import annotations

from edge.emulation import FaultEvent, SensorEmulator, Sent, emulators

EMULATORS: dict[str, type[SensorEmulator]] = emulators()

__all__ = ["EMULATORS", "FaultEvent", "SensorEmulator", "Sent"]
