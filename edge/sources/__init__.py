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
