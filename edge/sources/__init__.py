"""Sources: a transport + a codec + a lifecycle policy, run by the runtime as one task each.

:func:`build_source` turns a ``[[sources]]`` table into a source: a source kind registered by
entry point (``ble``, ``node_serial``…), a sensor's own source (the OPS243 radar), or the
generic serial source for every other serial sensor (:mod:`edge.sources.serial`).
"""

from __future__ import annotations

from edge import plugins
from edge.config import SourceSettings
from edge.seams import Source


def build_source(settings: SourceSettings, gateway_id: str) -> Source:
    kind = plugins.source_kinds().get(settings.type)
    if isinstance(kind, plugins.SourceKind):
        return kind.factory(settings, gateway_id)
    if isinstance(kind, str):
        raise ValueError(f"source {settings.name!r}: type {settings.type!r} {kind}")
    sensor = plugins.sensor(settings.type)
    if sensor.source is not None:
        return sensor.source(settings, gateway_id)
    from edge.sources.serial import SerialSource

    return SerialSource(settings, gateway_id)
