"""One BLE scanner for the whole gateway, as one source (there is one adapter and one scan).

Config::

    [[sources]]
    name = "ble"
    type = "ble"
    options = { scanning_mode = "passive", allow = ["CB:B8:33:4C:88:4F"],
                names = { "CB:B8:33:4C:88:4F" = "ruuvi-garden" } }

``options`` holds :class:`edge.ble.settings.BleSettings` plus ``names``: device id (the MAC a
Ruuvi puts in its payload, else the address) → sensor id. Devices without a name get
``<type>-<id without colons>``. Adapter loss is handled inside the scanner (backoff, forever).

For hardware-in-the-loop runs without a radio, ``options.replay = "<file.jsonl>"`` feeds a
recorded or scripted advert stream (edge/ble/replay.py) to the same scanner code.
"""

from __future__ import annotations

import asyncio

from bleak.backends.scanner import BaseBleakScanner

from edge.ble.scanner import BleReading, BleScanner
from edge.ble.settings import BleSettings, BleSourceOptions
from edge.config import SourceSettings
from edge.model import Datastream, Observation, Provenance
from edge.plugins import sensor as sensor_type
from edge.seams import SourceContext


class BleSource:
    def __init__(
        self,
        settings: SourceSettings,
        gateway_id: str,
        scanner_backend: type[BaseBleakScanner] | None = None,
    ) -> None:
        options = BleSourceOptions.model_validate(settings.options)
        self.names: dict[str, str] = {k.upper(): v for k, v in options.names.items()}
        # HIL: replay a recorded/scripted advert stream instead of a radio
        self.replay: str | None = str(options.replay) if options.replay else None
        self.replay_speed = options.replay_speed
        self.ble = BleSettings.model_validate(
            options.model_dump(exclude={"names", "replay", "replay_speed"})
        )
        self.name = settings.name
        self.gateway_id = gateway_id
        self.scanner_backend = scanner_backend
        self._streams: dict[tuple[str, str], Datastream] = {}
        self._provenance: dict[str, Provenance] = {}

    def sensor_id(self, reading: BleReading) -> str:
        device = reading.device_id.upper()
        named = self.names.get(device) or (self.names.get(reading.name) if reading.name else None)
        return named or f"{reading.sensor}-{device.replace(':', '').lower()}"

    async def run(self, ctx: SourceContext) -> None:
        backend, player = self.scanner_backend, None
        if self.replay is not None:
            from edge.ble.replay import ReplayRadio, load_recording

            radio = ReplayRadio()
            backend = radio.scanner_backend()
            records = load_recording(self.replay)

            async def play() -> None:
                await radio.wait_scanning(30)
                await radio.play(records, speed=self.replay_speed)

            player = asyncio.ensure_future(play())
        try:
            await self._scan(ctx, backend)
        finally:
            if player is not None:
                player.cancel()

    async def _scan(
        self, ctx: SourceContext, backend: type[BaseBleakScanner] | None
    ) -> None:
        async with BleScanner(self.ble, scanner_backend=backend) as scanner:
            ctx.health.set_state("connected", "scanning")
            async for reading in scanner.readings():
                observations = self.observations(reading)
                ctx.health.last_frame_ms = ctx.clock_ms()
                if not observations:
                    ctx.health.frames_skipped += 1
                    continue
                ctx.health.frames_ok += 1
                ctx.health.observations += len(observations)
                ctx.emit(observations)

    def observations(self, reading: BleReading) -> list[Observation]:
        sensor = self.sensor_id(reading)
        when = int(reading.measured_at * 1000)
        prov = self._provenance.get(sensor)
        if prov is None:
            prov = self._provenance[sensor] = Provenance(
                sensor_type(reading.sensor).descriptor.model, sensor_serial=reading.device_id
            )
        out = []
        for r in reading.frame.readings:
            stream = self._streams.get((sensor, r.quantity))
            if stream is None:
                stream = self._streams[(sensor, r.quantity)] = Datastream(
                    self.gateway_id, sensor, r.quantity
                )
            out.append(Observation(stream, r.value, when, prov))
        return out


def factory(settings: SourceSettings, gateway_id: str) -> BleSource:
    return BleSource(settings, gateway_id)
