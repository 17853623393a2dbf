"""Eviction: what goes when the outbox is over its size limit, the disk is full, or data expires.

Pure choices over the stored groups plus :class:`DiskGuard`, the free-space probe. The policy
(docs/architecture.md "Eviction, TTL and a full disk"):

* over ``max_bytes`` or under ``disk_reserve_bytes`` of free space on the outbox's filesystem,
  with ``eviction = "oldest"``: the oldest groups in the database go, a chunk at a time
  (at least ``commit_rows`` observations or 5 % of what is stored); freed pages are reused by
  later writes, so the file stops growing;
* with ``eviction = "newest"``: new groups are refused (counted) instead;
* ``ttl_s``: groups whose newest observation is older go.

Size and disk-full eviction take groups already in the database: groups still in memory are
the newest, and the journal holding them is small. TTL also takes expired groups at the head
of memory (a prefix, so "everything up to here is gone" stays one number).
"""

from __future__ import annotations

import os
from pathlib import Path

from edge.outbox.groups import Group


class DiskGuard:
    """Free space on the outbox's filesystem (``os.statvfs``) against a reserve."""

    def __init__(self, path: Path, reserve_bytes: int) -> None:
        self.dir = path.parent
        self.reserve_bytes = reserve_bytes

    def free_bytes(self) -> int:
        st = os.statvfs(self.dir)
        return st.f_bavail * st.f_frsize

    def low(self) -> bool:
        return self.free_bytes() < self.reserve_bytes


def oldest_chunk(groups: list[Group], commit_rows: int) -> list[Group]:
    """The oldest database groups making up at least ``commit_rows`` or 5 % of the stored ones."""
    stored = [g for g in groups if not g.in_memory]
    total = sum(g.n for g in stored)
    chunk: list[Group] = []
    count = 0
    for g in stored:
        chunk.append(g)
        count += g.n
        if count >= max(commit_rows, total // 20):
            break
    return chunk


def expired(stored: list[Group], memory: list[Group], cutoff_ms: int) -> list[Group]:
    """Groups whose newest observation is older than ``cutoff_ms``: from the database, and
    the oldest groups in memory up to the first one that has not expired."""
    old = [g for g in stored if g.t_max < cutoff_ms]
    for g in memory:
        if g.t_max >= cutoff_ms:
            break
        old.append(g)
    return old
