"""The ``[uplinks.sensorthings_http]`` uplink: the gateway's outbox drained to a SensorThings
server through :class:`edge.sensorthings.client.SensorThingsSender` (what is sent, how answers
are read and how Datastreams are registered is described there)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import httpx

from edge.model import Batch, Datastream, Delivery
from edge.sensorthings import EntityId, GeoPoint
from edge.sensorthings.client import SensorThingsSender
from edge.sensorthings.settings import REGISTRY_FILE_NAME, SensorThingsHttpSettings


class SensorThingsHttpUplink:
    """Request uplink for :func:`edge.uplinks.drain_sequentially`."""

    name = "sensorthings_http"

    def __init__(
        self,
        settings: SensorThingsHttpSettings,
        gateway_id: str,
        data_dir: Path,
        location: GeoPoint | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.gateway_id = gateway_id
        self.sender = SensorThingsSender(
            settings,
            registry_path=Path(data_dir) / REGISTRY_FILE_NAME,
            locations={gateway_id: location} if location is not None else None,
            transport=transport,
        )

    @property
    def batch_size(self) -> int:
        """Rows per batch the runtime should hand over (one CreateObservations request)."""
        return self.sender.settings.batch_size

    async def __aenter__(self) -> SensorThingsHttpUplink:
        await self.sender.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.sender.close()

    async def ensure_datastreams(
        self, streams: Iterable[tuple[Datastream, str]]
    ) -> dict[Datastream, EntityId]:
        """Register ``(stream, sensor_model)`` pairs now instead of on first upload."""
        return await self.sender.ensure_datastreams(streams)

    async def send(self, batch: Batch) -> Delivery:
        return await self.sender.deliver(batch.gateway_id, batch.observations)
