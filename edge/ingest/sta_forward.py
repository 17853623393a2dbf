"""The twin receiver's option to forward decoded observations to a SensorThings server.

It reuses the gateway's uplink code (:class:`edge.sensorthings.client.SensorThingsSender`):
same JSON mapping, same CreateObservations/retry rules, same Datastream registry (one Thing
per gateway, ids cached in ``<data_dir>/sensorthings-ids.json``).

The receiver calls :meth:`StaForwarder.forward` before it stores and acknowledges a message
(see :mod:`edge.ingest.receiver`), so:

- confirmed observations are remembered (bounded memory of recent observation ids): when the
  broker redelivers a message after a partial failure, they are not sent twice;
- rejected observations (the server refused them: 4xx) are logged, counted and kept in
  :attr:`StaForwarder.rejections`; they never block the stream;
- anything still pending after a transient failure raises
  :class:`~edge.sensorthings.client.SensorThingsUnavailable`, so the message is not
  acknowledged and comes back.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

import httpx

from edge.model import Delivery, Observation, observation_id
from edge.sensorthings import GeoPoint
from edge.sensorthings.client import (
    SensorThingsConfigError,
    SensorThingsSender,
    SensorThingsUnavailable,
)
from edge.sensorthings.settings import REGISTRY_FILE_NAME, SensorThingsHttpSettings

__all__ = ["SensorThingsConfigError", "SensorThingsUnavailable", "StaForwarder",
           "load_locations"]

log = logging.getLogger("duet.ingest.sta")


class ForwardableBatch(Protocol):
    """What the receiver hands over (``edge.contract.DecodedBatch`` fits)."""

    @property
    def gateway_id(self) -> str: ...

    @property
    def observations(self) -> Sequence[Observation]: ...


@dataclass(slots=True)
class ForwardCounters:
    batches: int = 0
    forwarded: int = 0
    rejected: int = 0
    skipped_already_forwarded: int = 0
    failures: int = 0


class StaForwarder:
    """Forward received batches to a SensorThings API v1.1 server."""

    def __init__(
        self,
        settings: SensorThingsHttpSettings,
        data_dir: Path,
        locations: Mapping[str, GeoPoint] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        remember: int = 100_000,
    ) -> None:
        self.sender = SensorThingsSender(
            settings,
            registry_path=Path(data_dir) / REGISTRY_FILE_NAME,
            locations=locations,
            transport=transport,
        )
        self.counters = ForwardCounters()
        self.rejections: deque[tuple[str, int, str]] = deque(maxlen=1000)
        self._remember = remember
        self._forwarded: OrderedDict[str, None] = OrderedDict()
        self._open = False

    @classmethod
    def from_url(
        cls, base_url: str, data_dir: Path, locations_file: Path | None = None
    ) -> StaForwarder:
        """A forwarder with default settings (no auth) for ``duet-edge ingest --forward-sta``.

        ``locations_file`` is JSON ``{"<gateway id>": [lon, lat]}``: servers derive each
        Observation's FeatureOfInterest from the gateway Thing's Location.
        """
        return cls(SensorThingsHttpSettings(base_url=base_url), data_dir,
                   load_locations(locations_file) if locations_file else None)

    async def __aenter__(self) -> StaForwarder:
        await self._ensure_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.sender.close()
        self._open = False

    async def _ensure_open(self) -> None:
        if not self._open:
            await self.sender.open()
            self._open = True

    def missing_location(self, gateway_id: str) -> bool:
        """True when no position is known for the gateway (its Thing has no Location)."""
        return gateway_id not in self.sender.locations

    async def forward(self, batch: ForwardableBatch) -> Delivery:
        """Send a batch's observations; raise SensorThingsUnavailable if any stay pending."""
        delivery = await self.forward_observations(batch.gateway_id, batch.observations)
        pending = len(batch.observations) - len(delivery.confirmed) - len(delivery.rejected)
        if pending:
            self.counters.failures += 1
            raise SensorThingsUnavailable(
                f"{pending} of {len(batch.observations)} observations from {batch.gateway_id} "
                f"not forwarded yet")
        return delivery

    async def forward_observations(
        self, gateway_id: str, observations: Sequence[Observation]
    ) -> Delivery:
        """Send what was not confirmed before; the Delivery settles part or all of it.

        Raises SensorThingsUnavailable only when nothing could be settled.
        """
        await self._ensure_open()
        gw = gateway_id
        self.counters.batches += 1
        todo = [o for o in observations
                if o.sequence is not None and _obs_key(gw, o.sequence) not in self._forwarded]
        self.counters.skipped_already_forwarded += len(observations) - len(todo)
        already = [o.sequence for o in observations
                   if o.sequence is not None and _obs_key(gw, o.sequence) in self._forwarded]
        if not todo:
            return Delivery(confirmed=already)
        try:
            delivery = await self.sender.deliver(gw, todo)
        except SensorThingsUnavailable:
            self.counters.failures += 1
            raise
        for seq in delivery.confirmed:
            self._remember_sent(_obs_key(gw, seq))
        for seq, reason in delivery.rejected.items():
            self._remember_sent(_obs_key(gw, seq))  # a redelivery would be refused again
            self.rejections.append((gw, seq, reason))
            log.warning("SensorThings server rejected an observation", extra={
                "event": "sta_forward_rejected", "gateway": gw, "seq": seq, "reason": reason})
        self.counters.forwarded += len(delivery.confirmed)
        self.counters.rejected += len(delivery.rejected)
        return Delivery(confirmed=[*delivery.confirmed, *already], rejected=delivery.rejected)

    def _remember_sent(self, key: str) -> None:
        self._forwarded[key] = None
        while len(self._forwarded) > self._remember:
            self._forwarded.popitem(last=False)


def _obs_key(gateway_id: str, sequence: int) -> str:
    return str(observation_id(gateway_id, sequence))


def load_locations(path: Path) -> dict[str, GeoPoint]:
    """Read ``{"<gateway id>": [lon, lat] or [lon, lat, alt]}``; errors name the entry."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object mapping gateway ids to [lon, lat]")
    out: dict[str, GeoPoint] = {}
    for gw, coords in data.items():
        if (not isinstance(coords, list) or len(coords) not in (2, 3)
                or not all(isinstance(c, int | float) for c in coords)):
            raise ValueError(f"{path}: {gw!r} = {coords!r}: expected [lon, lat] or [lon, lat, alt]")
        out[str(gw)] = GeoPoint(*(float(c) for c in coords))
    return out
