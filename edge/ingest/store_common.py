"""Helpers both twin stores share: reading a gateway's status JSON, day partitions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from edge.ingest.store import JsonValue

DAY_MS = 86_400_000
SILENT_AFTER_MS = 15 * 60 * 1000  # `duet-edge fleet` flags a gateway silent after this
DEAD_LETTER_PAYLOAD_MAX = 256 * 1024


@dataclass(frozen=True, slots=True)
class StatusFields:
    """The fields of a gateway's status/heartbeat JSON the fleet view shows as columns."""

    state: str
    version: str
    backlog: int | None
    oldest_unsent_ms: int | None


def _int_or_none(value: JsonValue) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def status_fields(status: Mapping[str, JsonValue]) -> StatusFields:
    """Lenient read of a status message (docs/upload-contract.md, "status").

    Accepts ``version`` or ``software_version``; ``backlog`` or ``backlog_depth``;
    ``oldest_unsent_ms`` or ``oldest_unsent`` (ms since epoch). Unknown keys are kept in the
    stored JSON but not shown as columns.
    """
    state = status.get("state")
    version = status.get("version", status.get("software_version"))
    backlog = status.get("backlog", status.get("backlog_depth"))
    oldest = status.get("oldest_unsent_ms", status.get("oldest_unsent"))
    return StatusFields(
        state=state if isinstance(state, str) else "unknown",
        version=version if isinstance(version, str) else "",
        backlog=_int_or_none(backlog),
        oldest_unsent_ms=_int_or_none(oldest),
    )


def compact_json(value: JsonValue) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def day_of(ms: int) -> int:
    """Day number since the epoch (UTC) of a time in ms."""
    return ms // DAY_MS


_NONFINITE_NOTES = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def nonfinite_note(value: float) -> str | None:
    """How a store notes a non-finite result (docs/upload-contract.md): the result column
    holds NULL, so averages and sums over it never turn into NaN or infinity, and the kind is
    kept in the ``nonfinite`` column. None for a finite value."""
    if value - value == 0.0:  # finite (NaN and ±inf give NaN)
        return None
    if value != value:
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def finite_or_none(value: float | None) -> float | None:
    return None if value is None or value - value != 0.0 else value


def result_from_store(result: float | None, note: str | None) -> float:
    """The result a stored row was sent with (NULL + note back to NaN/±Infinity)."""
    if result is not None:
        return result
    return _NONFINITE_NOTES.get(note or "NaN", float("nan"))
