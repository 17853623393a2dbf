"""Broadcast-only nodes over BLE: decode the node advertisement and the ``node_ble`` source.

A node advertisement is manufacturer-specific data under company id 0xFFFF, which the
Bluetooth SIG reserves for testing (docs/node-protocol.md explains the layout and why a
product must get its own id). The sequence byte removes the repeats a scanner hears while
a node re-advertises the same measurement.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner

from edge.model import Datastream, Observation, Provenance
from edge.node.settings import NodeBleOptions
from edge.quantities import QUANTITIES
from edge.seams import SourceContext
from firmware import nodeproto as P

log = logging.getLogger("duet.node.ble")


@dataclass(frozen=True, slots=True)
class NodeAdvert:
    node: str  # 8 hex digits: the low 32 bits of the node id
    seq: int
    version: int
    values: tuple[tuple[str, float | None], ...]


def decode_node_advert(manufacturer_data: dict[int, bytes]) -> NodeAdvert | None:
    """The node advert in bleak's ``manufacturer_data`` (id → payload), or None if absent.

    Raises :class:`firmware.nodeproto.ProtocolError` for a malformed node advert.
    """
    payload = manufacturer_data.get(P.COMPANY_ID)
    if payload is None:
        return None
    msg = P.decode_advert(struct.pack("<H", P.COMPANY_ID) + bytes(payload))
    return NodeAdvert(
        node=msg["node"], seq=msg["seq"], version=msg["version"],
        values=tuple((str(c), None if v is None else float(v)) for c, v in msg["values"]),
    )


class AdvertDeduper:
    """Drops a (node, seq) seen within ``window_ms``; bounded by the number of nodes heard."""

    def __init__(self, window_ms: int, max_nodes: int = 4096) -> None:
        self.window_ms = window_ms
        self.max_nodes = max_nodes
        self._seen: dict[str, dict[int, int]] = {}

    def fresh(self, node: str, seq: int, now_ms: int) -> bool:
        seen = self._seen.get(node)
        if seen is None:
            if len(self._seen) >= self.max_nodes:
                self._seen.pop(next(iter(self._seen)))
            seen = self._seen[node] = {}
        for s, t in list(seen.items()):
            if now_ms - t > self.window_ms:
                del seen[s]
        if seq in seen:
            return False
        seen[seq] = now_ms
        return True


class NodeBleSource:
    """Listens for node adverts and emits one observation per available value."""

    def __init__(self, name: str, gateway_id: str, options: NodeBleOptions | None = None,
                 scanner_backend: type[BaseBleakScanner] | None = None) -> None:
        self.name = name
        self.gateway_id = gateway_id
        self.options = options or NodeBleOptions.model_validate({})
        self.scanner_backend = scanner_backend
        self.dedupe = AdvertDeduper(int(self.options.dedupe_window_s * 1000))
        self.counts: Counter[str] = Counter()
        self._last_heard = 0.0

    def observations(self, ctx: SourceContext, address: str,
                     advert: NodeAdvert) -> list[Observation]:
        now = ctx.clock_ms()
        prov = Provenance(sensor_model="duet-edge node (BLE)", sensor_serial=address,
                          node_id=advert.node)
        out = []
        for code, value in advert.values:
            if value is None or code not in QUANTITIES:
                continue
            stream = Datastream(self.gateway_id, f"{self.name}.{advert.node}", code)
            out.append(Observation(stream, value, now, prov))
        return out

    def handle(self, ctx: SourceContext, device: BLEDevice, data: AdvertisementData) -> None:
        """Detection callback body: decode, de-duplicate, emit. Never raises."""
        self._last_heard = asyncio.get_running_loop().time()
        try:
            advert = decode_node_advert(data.manufacturer_data)
        except P.ProtocolError as exc:
            ctx.health.frames_bad[exc.reason] += 1
            ctx.health.frame_result(False)
            return
        if advert is None:
            return
        if not self.dedupe.fresh(advert.node, advert.seq, ctx.clock_ms()):
            self.counts["repeats"] += 1
            ctx.health.frames_skipped += 1
            return
        ctx.health.frames_ok += 1
        ctx.health.frame_result(True)
        ctx.health.last_frame_ms = ctx.clock_ms()
        observations = self.observations(ctx, device.address, advert)
        if observations:
            ctx.health.observations += len(observations)
            ctx.emit(observations)

    async def run(self, ctx: SourceContext) -> None:
        kwargs: dict[str, Any] = {"detection_callback": lambda d, a: self.handle(ctx, d, a)}
        if self.scanner_backend is not None:
            kwargs["backend"] = self.scanner_backend
        if self.options.adapter:
            kwargs["bluez"] = {"adapter": self.options.adapter}
        loop = asyncio.get_running_loop()
        stall = self.options.stall_timeout_s
        async with BleakScanner(**kwargs):
            ctx.health.set_state("connected", "scanning")
            self._last_heard = loop.time()
            while True:
                await asyncio.sleep(min(stall / 4, 5.0))
                if loop.time() - self._last_heard > stall:
                    # a removed adapter goes silent without an error: let the runtime restart us
                    raise TimeoutError(f"no BLE advertisement for {stall:.0f} s")


def build_node_ble(settings: Any, gateway_id: str) -> NodeBleSource:
    """Factory for ``SOURCE_FACTORIES["node_ble"]`` (settings: edge.config.SourceSettings)."""
    return NodeBleSource(settings.name, gateway_id,
                         NodeBleOptions.model_validate(settings.options or {}))
