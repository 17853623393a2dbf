"""The seam between the twin receiver and its database: the :class:`TwinStore` protocol.

Two implementations:

- :class:`edge.ingest.sqlite_store.SqliteStore` — one file, the embedded default for one machine;
- :class:`edge.ingest.pg_store.PgStore` — PostgreSQL (+ PostGIS), the production twin store,
  shared by any number of receivers.

:func:`open_store` picks one from ``--store``: a ``postgresql://`` URL or a file path.

Rules every store keeps:

- **Idempotent by (gateway, seq)**: a row the store already holds is counted as a duplicate
  and not written again, whichever receiver got it first.
- **One transaction for many messages**: :meth:`TwinStore.store_batches` commits all the
  batches it is given together (or none of them), with the v2 session dictionaries they came
  with; the receiver PUBACKs after it returns. A group of messages costs one commit (one
  ``fsync``), however many gateways, rows and dictionaries it holds.
- **Forward queue in the same transaction**: with forwarding on, the new rows of each batch are
  queued for the SensorThings forwarder in that same transaction, so a crash can neither
  forward what was not stored nor forget to forward what was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from edge.ingest.rows import Gap, IngestBatch

JsonValue = object  # parsed JSON (dict/list/str/int/float/bool/None)


class StoreUnavailable(Exception):
    """The database cannot work right now (down, restarting, locked, disk full): nothing was
    stored. The receiver stops acknowledging and reconnects with backoff; any other exception
    from ``store_batches`` is taken to be caused by the data of a batch."""


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """What storing one batch did: rows written, rows already held."""

    new: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class DictionaryRow:
    """A v2 session dictionary as its gateway sent it: ``ref`` (``sr``) and its CBOR body."""

    gateway: str
    ref: bytes
    body: bytes


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message the receiver refused (dead letter), with what could be read of it."""

    topic: str
    reason: str
    payload: bytes = b""
    gateway: str | None = None
    first_seq: int | None = None
    last_seq: int | None = None


@dataclass(frozen=True, slots=True)
class GatewayView:
    """One row of ``duet-edge fleet``: what the twin knows about a gateway."""

    gateway: str
    state: str  # "online" / "offline" (from its status topic) or "unknown"
    version: str
    last_data_ms: int | None  # when its last batch was stored
    last_status_ms: int | None  # when its last status/heartbeat arrived
    observations: int  # rows stored
    backlog: int | None  # rows waiting in its outbox (its last heartbeat)
    oldest_unsent_ms: int | None
    events_24h: int
    last_event: str
    forward_parked_until_ms: int | None = None
    forward_error: str = ""

    @property
    def last_seen_ms(self) -> int | None:
        seen = [t for t in (self.last_data_ms, self.last_status_ms) if t is not None]
        return max(seen) if seen else None


@dataclass(slots=True)
class ForwardItem:
    """Queued rows of one gateway waiting to go to SensorThings."""

    item_id: int
    gateway: str
    rows: IngestBatch
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class StoredObservation:
    """One stored row, names resolved (for exports)."""

    gateway: str
    seq: int
    sensor: str
    quantity: str
    unit: str
    provenance: Mapping[str, str]
    phenomenon_ms: int
    duration_ms: int | None
    result_offset_ms: int | None
    result: float
    raw_result: float | None
    quality_flag: int | None

    @property
    def phenomenon_end_ms(self) -> int | None:
        return None if self.duration_ms is None else self.phenomenon_ms + self.duration_ms

    @property
    def result_ms(self) -> int:
        end = self.phenomenon_ms + (self.duration_ms or 0)
        return end + (self.result_offset_ms or 0)


@dataclass(slots=True)
class StoreTotals:
    observations: int = 0
    gateways: int = 0
    dead_letters: int = 0
    forward_queued: int = 0
    forward_dead_letters: int = 0
    gaps: list[Gap] = field(default_factory=list)


class TwinStore(Protocol):
    """What the receiver, the forwarder and ``duet-edge fleet`` need from a twin database."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def store_batches(
        self, batches: Sequence[IngestBatch], received_ms: int, forward: bool = False,
        dictionaries: Sequence[DictionaryRow] = (),
    ) -> list[StoreOutcome]:
        """Store every batch, and keep every dictionary (once per gateway and ``ref``), in ONE
        transaction; per batch, (new, duplicates)."""
        ...

    async def reject(self, rejection: Rejection, received_ms: int) -> None:
        """Keep a refused message as a dead letter, with its reason."""
        ...

    async def get_dictionary(self, gateway: str, ref: bytes) -> bytes | None:
        """A session dictionary (contract v2 ``sr`` table, as sent) stored earlier, or None."""
        ...

    async def put_dictionary(self, gateway: str, ref: bytes, table: bytes) -> None:
        """Keep one dictionary on its own (its own commit: the receiver passes dictionaries to
        :meth:`store_batches` instead)."""
        ...

    async def put_status(self, gateway: str, status: Mapping[str, JsonValue],
                         received_ms: int) -> None:
        """Upsert a gateway's retained status/heartbeat (birth, last will, heartbeat)."""
        ...

    async def add_event(self, gateway: str, kind: str, payload: JsonValue,
                        received_ms: int) -> None: ...

    async def fleet(self, now_ms: int) -> list[GatewayView]: ...

    async def totals(self) -> StoreTotals: ...

    async def read_observations(self, gateway: str | None, since_ms: int | None,
                                until_ms: int | None, limit: int) -> list[StoredObservation]:
        """Rows by phenomenon time (``since`` inclusive, ``until`` exclusive), oldest first."""
        ...

    async def set_location(self, gateway: str, lon: float, lat: float,
                           alt: float | None = None) -> None:
        """Record a gateway's installed position (WGS84; PostGIS point in PostgreSQL)."""
        ...

    async def locations(self) -> dict[str, tuple[float, float, float | None]]:
        """Known gateway positions: gateway → (lon, lat, alt)."""
        ...

    # -- SensorThings forward queue (see edge.ingest.forwarding) --------------------------

    async def forward_claim(self, now_ms: int, limit: int) -> list[ForwardItem]:
        """Oldest queued items of gateways that are not parked (one claim per gateway)."""
        ...

    async def forward_settle(
        self, item: ForwardItem, rejected: Mapping[int, str], now_ms: int,
        remaining: IngestBatch | None = None,
    ) -> None:
        """Keep the item's refused rows as forward dead letters; delete the item, or keep only
        its ``remaining`` rows queued (a partial delivery)."""
        ...

    async def forward_park(self, gateway: str, until_ms: int, error: str) -> None:
        """Hold a gateway's queue until ``until_ms`` (its own backoff); others keep flowing."""
        ...


def is_postgres_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def open_store(target: str | Path) -> TwinStore:
    """``postgresql://…`` → :class:`PgStore`; anything else is an SQLite file path."""
    text = str(target)
    if is_postgres_url(text):
        from edge.ingest.pg_store import PgStore

        return PgStore(text)
    from edge.ingest.sqlite_store import SqliteStore

    return SqliteStore(Path(text))
