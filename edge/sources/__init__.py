"""Sources: a transport + a codec + a lifecycle policy, run by the runtime as one task each.

``SOURCE_FACTORIES`` maps a config ``type`` to a factory ``(settings, gateway_id) -> Source``
for source kinds that are not a plain serial codec (firmware nodes, BLE scanners...). Plain
serial sensors need no entry: every serial codec in :mod:`edge.codecs` gets the generic
serial source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SOURCE_FACTORIES: dict[str, Callable[[Any, str], Any]] = {}

# Built-in source kinds beyond the generic serial source: (config type, module, factory name).
_BUILTIN: tuple[tuple[str, str, str], ...] = (
    ("ops243", "edge.sources.radar", "factory"),
    ("ble", "edge.sources.ble", "factory"),
)


def load_builtin_sources() -> None:
    """Register the built-in source kinds (imported lazily: BLE needs the ``ble`` extra)."""
    import importlib

    for type_name, module, attr in _BUILTIN:
        if type_name in SOURCE_FACTORIES:
            continue
        try:
            SOURCE_FACTORIES[type_name] = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError:
            continue  # an optional extra is not installed: that source kind is unavailable
    try:
        from edge.node import source_factories
    except ModuleNotFoundError:
        return
    for type_name, make in source_factories().items():
        SOURCE_FACTORIES.setdefault(type_name, make)
