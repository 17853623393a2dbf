"""The seam between the twin receiver's message path and its database.

The receiver (edge/ingest/receiver.py) validates every message before it calls a store, then
stores a group of batches in ONE transaction, publishes the acks, and only then acknowledges
the messages to the broker. Any store that implements :class:`TwinStore` plugs in — the
SQLite one in edge/ingest/store.py, or a PostgreSQL one.

Contract a store must keep:

* ``store_batches`` is all or nothing: on any error it rolls back and raises (the receiver then
  retries the batches one by one, and dead-letters one that still fails alone);
* storing is idempotent: an observation already held (same gateway and sequence number) is
  counted as a duplicate and left as it is;
* a non-finite result (NaN, ±Infinity: "the sensor gave no usable number") is stored as such
  or as NULL with a note, never dropped and never counted as a duplicate;
* the session dictionaries a batch carried in full are kept (same transaction), so any
  receiver sharing the store can decode later batches that carry only their reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from edge.contract import DecodedBatch, Range, SessionDictionary
from edge.model import Delivery


class StoreUnavailable(Exception):
    """The store cannot work right now (database down, disk full, locked): nothing was stored.

    The receiver then stops acknowledging and reconnects with backoff, so the broker keeps the
    messages. Any other exception from a store is taken to be caused by the data of the batch.
    """


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """What storing one batch did: observations new to the store, and ones it already held."""

    new: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message (or some of its rows) the receiver refuses for good: kept with its reason.

    ``gateway_id`` and ``ranges`` are what the message could be read to carry (empty when it
    could not); ``payload`` is the message as received, for an operator to inspect or replay.
    """

    topic: str
    reason: str
    payload: bytes
    gateway_id: str | None = None
    ranges: tuple[Range, ...] = ()


class TwinStore(Protocol):
    """What the receiver needs from its database."""

    def store_batches(self, batches: Sequence[DecodedBatch]) -> list[StoredBatch]:
        """Store observations, gaps and carried dictionaries of every batch in one
        transaction; one result per batch, in order. Rolls back and raises on any error."""
        ...

    def reject(self, rejections: Sequence[Rejection]) -> None:
        """Record refused messages (the receiver's dead letters)."""
        ...

    def dictionary(self, gateway_id: str, ref: bytes) -> SessionDictionary | None:
        """A session dictionary stored earlier by any receiver of this store, or None."""
        ...

    def unknown(self, batch: DecodedBatch) -> DecodedBatch:
        """The part of ``batch`` not stored yet (what a forwarder still has to send)."""
        ...

    def close(self) -> None: ...


class Forwarder(Protocol):
    """An optional onward delivery (e.g. a SensorThings server), before the store commits.

    ``forward`` raises when it could not deliver everything (the message then stays
    unacknowledged and comes back); rows the server refuses for good are its own business.
    """

    async def __aenter__(self) -> object: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def forward(self, batch: DecodedBatch) -> Delivery: ...
