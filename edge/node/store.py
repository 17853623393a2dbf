"""Per-node high-water marks: the highest batch sequence whose observations are committed.

On a gateway the marks live in the outbox's staged state (committed in the same journal
record as the batch's observations: the only copy, see ``edge.node.serial_source``).
:class:`HwmStore` is the stand-alone store for tools without an outbox (``provision node
add``, tests); :func:`read_legacy_marks` reads the marks file earlier versions kept, once.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Protocol

_SCHEMA = """
CREATE TABLE IF NOT EXISTS node_hwm (
    node_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    firmware TEXT NOT NULL DEFAULT '',
    updated_ms INTEGER NOT NULL
)
"""


class MarkStore(Protocol):
    """What a node session needs: the last committed batch of a node, and where to note one."""

    def get(self, node_id: str) -> int | None: ...

    def set(self, node_id: str, seq: int, firmware: str = "") -> None: ...


def read_legacy_marks(path: Path) -> dict[str, int]:
    """Marks from a nodes.db of earlier versions ({} if there is none or it is unreadable)."""
    if not path.is_file():
        return {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return {str(n): int(s) for n, s in db.execute("SELECT node_id, seq FROM node_hwm")}
        finally:
            db.close()
    except sqlite3.Error:
        return {}


class HwmStore:
    """``get(node)`` → last committed sequence or None; ``set(node, seq)`` persists it."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)

    def get(self, node_id: str) -> int | None:
        row = self._db.execute("SELECT seq FROM node_hwm WHERE node_id = ?", (node_id,)).fetchone()
        return int(row[0]) if row else None

    def set(self, node_id: str, seq: int, firmware: str = "") -> None:
        self._db.execute(
            "INSERT INTO node_hwm(node_id, seq, firmware, updated_ms) VALUES(?,?,?,?) "
            "ON CONFLICT(node_id) DO UPDATE SET seq=excluded.seq, firmware=excluded.firmware, "
            "updated_ms=excluded.updated_ms",
            (node_id, seq, firmware, time.time_ns() // 1_000_000),
        )

    def all(self) -> dict[str, int]:
        return {str(n): int(s) for n, s in self._db.execute("SELECT node_id, seq FROM node_hwm")}

    def close(self) -> None:
        self._db.close()
