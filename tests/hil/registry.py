"""Which registered sensors a generic hardware-in-the-loop test applies to, from the registry.

A sensor folder with an ``emulator.py`` is picked up here without an edit: these helpers sort
the emulated sensors by how the generic serial source meets them.
"""

from __future__ import annotations

from edge import plugins
from edge.config import SourceSettings
from edge.emulation import emulators
from edge.sources import build_source
from edge.sources.serial import SerialSource


def generic_serial() -> list[str]:
    """Emulated serial sensors that the generic serial source reads, configured by default
    (a sensor whose own source aggregates, like the traffic radar, is left out)."""
    out = []
    for name in sorted(emulators()):
        settings = SourceSettings(name="probe", type=name, port="/dev/null")
        if type(build_source(settings, "gw")) is SerialSource:
            out.append(name)
    return out


def streams(name: str) -> bool:
    """True if the emulated sensor talks unprompted from power-on (active mode)."""
    return emulators()[name]().streaming


def streaming() -> list[str]:
    return [n for n in generic_serial() if streams(n)]


def polled() -> list[str]:
    """Sensors that answer only requests: the source polls them."""
    return [n for n in generic_serial()
            if not streams(n) and plugins.sensor(n).descriptor.commands.poll is not None]


def sleepers() -> list[str]:
    """Sensors with sleep and wake commands (duty cycling)."""
    return [n for n in generic_serial() if plugins.sensor(n).descriptor.commands.sleep]
