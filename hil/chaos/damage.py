"""Storage damage between two runs of a gateway, as a power cut or an SD-card error leaves it.

Applied to a stopped gateway's outbox (after a ``kill -9``). Each function says whether it
found something to damage: a WAL that was checkpointed and truncated just before the kill
cannot be truncated again.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

WAL_HEADER = 32  # bytes of the WAL file header; frames follow
PAGE = 4096


def _wal(outbox: Path) -> Path:
    return Path(str(outbox) + "-wal")


def wal_truncate(outbox: Path, rng: random.Random) -> bool:
    """The WAL cut at a random length: frames the kernel had not written back are gone."""
    wal = _wal(outbox)
    size = wal.stat().st_size if wal.exists() else 0
    if size <= WAL_HEADER:
        return False
    os.truncate(wal, rng.randrange(0, size))
    return True


def wal_scribble(outbox: Path, rng: random.Random) -> bool:
    """Random bytes over a random stretch of the WAL's frames (a half-written sector run)."""
    wal = _wal(outbox)
    size = wal.stat().st_size if wal.exists() else 0
    if size <= WAL_HEADER:
        return False
    start = rng.randrange(WAL_HEADER, size)
    length = rng.randint(1, max(1, min(size - start, 64 * 1024)))
    with open(wal, "r+b") as fh:
        fh.seek(start)
        fh.write(rng.randbytes(length))
    return True


def wal_delete(outbox: Path, rng: random.Random) -> bool:
    """The WAL file gone (its directory entry never reached the card)."""
    wal = _wal(outbox)
    if not wal.exists():
        return False
    wal.unlink()
    return True


def db_zero(outbox: Path, rng: random.Random) -> bool:
    """A zero-length database file (an interrupted copy, a file system repair)."""
    if not outbox.exists():
        return False
    os.truncate(outbox, 0)
    return True


def db_scribble(outbox: Path, rng: random.Random) -> bool:
    """One to three whole pages of the database overwritten with garbage (bad flash blocks)."""
    size = outbox.stat().st_size if outbox.exists() else 0
    pages = size // PAGE
    if pages < 1:
        return False
    with open(outbox, "r+b") as fh:
        for _ in range(rng.randint(1, 3)):
            fh.seek(rng.randrange(pages) * PAGE)
            fh.write(rng.randbytes(PAGE))
    return True


DAMAGE: dict[str, Callable[[Path, random.Random], bool]] = {
    "wal-truncate": wal_truncate,
    "wal-scribble": wal_scribble,
    "wal-delete": wal_delete,
    "db-zero": db_zero,
    "db-scribble": db_scribble,
}
