"""The pipeline-stage seam: what the runtime asks of a stage (calibration, quality, ...).

A stage transforms the observations a source emitted, in arrival order, before they are
queued for the outbox. It may keep learned state; :class:`StateStore` lets it persist that
state **atomically with the next group commit** of the outbox, so after a restart the stage
resumes exactly where the committed data ends (never ahead of it, never behind it).
"""

from __future__ import annotations

from typing import Protocol

from edge.model import Observation


class StateStore(Protocol):
    """A stage's small durable state, kept by the outbox (the only owner of durable state)."""

    def stage(self, key: str, value: bytes) -> None:
        """Write ``key = value`` in the same transaction as the next committed group."""

    def recall(self, key: str) -> bytes | None:
        """The last committed value of ``key`` (None if never written)."""


class Stage(Protocol):
    """One pipeline stage. ``process`` never raises on bad data; it flags instead."""

    name: str

    def open(self, state: StateStore) -> None:
        """Called once before the first ``process``: restore learned state from ``state``."""

    def process(self, observations: list[Observation]) -> list[Observation]:
        """Transform observations (in place or new objects) and return them, in order."""

    def close(self) -> None:
        """Clean shutdown, before the final commit: stage a last checkpoint if it has one."""


class NoState:
    """A :class:`StateStore` that forgets everything (tools and tests without an outbox)."""

    def stage(self, key: str, value: bytes) -> None:
        del key, value

    def recall(self, key: str) -> bytes | None:
        del key
        return None
