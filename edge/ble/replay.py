"""Replay recorded or scripted BLE advertisements through the real scanner, without a radio.

The seam is bleak's own backend argument: :meth:`ReplayRadio.scanner_backend` returns a
:class:`bleak.backends.scanner.BaseBleakScanner` subclass that delivers advertisements by
calling bleak's registered detection callbacks with real :class:`BLEDevice` /
:class:`AdvertisementData` objects, and :meth:`ReplayRadio.client_backend` returns a
:class:`bleak.backends.client.BaseBleakClient` subclass serving GATT reads from recorded bytes.
Everything above the radio (``BleakScanner``, ``BleakClient``, the gateway's scanner) is real.

The radio misbehaves the way BlueZ does: with no adapter, ``start`` raises
``BleakBluetoothNotAvailableError("No Bluetooth adapters found.")``; when the adapter is
removed mid-scan the scan goes silent and a later ``stop`` raises a D-Bus ``UnknownObject``
error; passive scanning without BlueZ experimental support raises at ``start``; extended
advertisements are only heard when ``extended_scan`` is on.

Recording format (JSON Lines, one object per line; ``#`` lines are comments)::

    {"t": 0.0, "address": "CB:B8:33:4C:88:4F", "name": "Ruuvi 884F", "rssi": -61,
     "manufacturer_data": {"0x0499": "0512FC53..."}, "service_data": {}, "extended": false}
    {"t": 5.0, "event": "adapter_removed"}
    {"t": 9.0, "event": "adapter_restored"}

``t`` is seconds from the start of the stream. Command line::

    python -m edge.ble.replay hil/recordings/ble-vectors.jsonl [--speed 0] [--active]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bleak.args.bluez import OrPatternLike
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
)

Event = Literal["adapter_removed", "adapter_restored"]


@dataclass(frozen=True, slots=True)
class AdvertRecord:
    """One advertisement as received (manufacturer ids as ints, payloads without the id)."""

    t: float
    address: str
    name: str | None = None
    rssi: int = -70
    manufacturer_data: dict[int, bytes] = field(default_factory=dict)
    service_data: dict[str, bytes] = field(default_factory=dict)
    service_uuids: tuple[str, ...] = ()
    tx_power: int | None = None
    extended: bool = False

    def advertisement_data(self) -> AdvertisementData:
        return AdvertisementData(
            local_name=self.name,
            manufacturer_data=dict(self.manufacturer_data),
            service_data=dict(self.service_data),
            service_uuids=list(self.service_uuids),
            tx_power=self.tx_power,
            rssi=self.rssi,
            platform_data=("replay",),
        )


@dataclass(frozen=True, slots=True)
class RadioEvent:
    t: float
    event: Event


Record = AdvertRecord | RadioEvent


def parse_record(obj: dict[str, Any]) -> Record:
    """Build a record from one decoded JSON line; ValueError names the bad key."""
    t = float(obj.get("t", 0.0))
    if "event" in obj:
        if obj["event"] not in ("adapter_removed", "adapter_restored"):
            raise ValueError(f"event {obj['event']!r}: expected adapter_removed/adapter_restored")
        return RadioEvent(t, obj["event"])
    if "address" not in obj:
        raise ValueError("record without 'address' or 'event'")
    manufacturer = {
        int(k, 0): bytes.fromhex(v) for k, v in obj.get("manufacturer_data", {}).items()
    }
    service = {k: bytes.fromhex(v) for k, v in obj.get("service_data", {}).items()}
    return AdvertRecord(
        t=t,
        address=str(obj["address"]).upper(),
        name=obj.get("name"),
        rssi=int(obj.get("rssi", -70)),
        manufacturer_data=manufacturer,
        service_data=service,
        service_uuids=tuple(obj.get("service_uuids", ())),
        tx_power=obj.get("tx_power"),
        extended=bool(obj.get("extended", False)),
    )


def load_recording(path: str | Path) -> list[Record]:
    """Read a JSONL recording; errors name the file and line."""
    records: list[Record] = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            records.append(parse_record(json.loads(text)))
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{path}:{number}: {exc}") from exc
    return records


def _matches(patterns: Sequence[OrPatternLike], record: AdvertRecord) -> bool:
    """BlueZ advertisement-monitor matching, for the manufacturer-data patterns we use."""
    for start, ad_type, content in patterns:
        if ad_type != AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA:
            continue
        for company, data in record.manufacturer_data.items():
            if (company.to_bytes(2, "little") + data)[start : start + len(content)] == content:
                return True
    return False


class ReplayRadio:
    """A scripted Bluetooth adapter shared by the replay scanner and client backends."""

    def __init__(
        self,
        *,
        adapter_present: bool = True,
        passive_supported: bool = True,
        extended_scan: bool = True,
        gatt: dict[str, dict[str, list[bytes]]] | None = None,
    ) -> None:
        self.adapter_present = adapter_present
        self.passive_supported = passive_supported
        self.extended_scan = extended_scan
        # address -> characteristic uuid -> successive read values (the last one repeats)
        self.gatt = gatt or {}
        self.scanning: list[_ReplayScanner] = []
        self.start_calls = 0
        self.start_failures = 0
        self.stop_failures = 0
        self.connects = 0
        self.connect_targets: list[BLEDevice | str] = []  # what BleakClient was given
        self.delivered = 0

    # -- scripting --------------------------------------------------------------------------

    def remove_adapter(self) -> None:
        """The adapter vanishes: running scans go silent, and their ``stop`` will fail."""
        self.adapter_present = False
        for scanner in self.scanning:
            scanner.orphaned = True
        self.scanning.clear()

    def restore_adapter(self) -> None:
        self.adapter_present = True

    def emit(self, record: AdvertRecord) -> int:
        """Deliver one advertisement to every running scan that would hear it."""
        if record.extended and not self.extended_scan:
            return 0
        count = 0
        for scanner in list(self.scanning):
            count += scanner.deliver(record)
        self.delivered += count
        return count

    async def play(
        self, records: Iterable[Record], speed: float = 1.0, resume_timeout: float = 30.0
    ) -> None:
        """Emit records at their time offsets divided by ``speed`` (0 = no waiting).

        After an ``adapter_restored`` event, playback waits (up to ``resume_timeout`` s) for a
        scan to be running again, so that a scripted stream does not depend on how fast the
        scanner notices the loss; the wait is skipped when nothing had been scanning.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        scanned_before = False
        for record in records:
            if speed > 0:
                await asyncio.sleep(max(0.0, start + record.t / speed - loop.time()))
            else:
                await asyncio.sleep(0)
            if isinstance(record, RadioEvent):
                if record.event == "adapter_removed":
                    scanned_before = bool(self.scanning)
                    self.remove_adapter()
                else:
                    self.restore_adapter()
                    if scanned_before:
                        with contextlib.suppress(TimeoutError):
                            await self.wait_scanning(resume_timeout)
            else:
                self.emit(record)

    async def wait_scanning(self, timeout: float = 5.0) -> None:
        """Wait until at least one scan is running (test helper)."""
        async with asyncio.timeout(timeout):
            while not self.scanning:
                await asyncio.sleep(0.005)

    # -- bleak backends ---------------------------------------------------------------------

    def scanner_backend(self) -> type[BaseBleakScanner]:
        radio = self

        class ReplayScannerBackend(_ReplayScanner):
            _radio = radio

        return ReplayScannerBackend

    def client_backend(self) -> type[BaseBleakClient]:
        radio = self

        class ReplayClientBackend(_ReplayClient):
            _radio = radio

        return ReplayClientBackend


class _ReplayScanner(BaseBleakScanner):
    _radio: ReplayRadio

    def __init__(
        self,
        detection_callback: Any,
        service_uuids: list[str] | None,
        scanning_mode: str,
        *,
        bluez: dict[str, Any],
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self.mode = scanning_mode
        self.patterns: list[OrPatternLike] = list(bluez.get("or_patterns") or [])
        self.orphaned = False
        if scanning_mode == "passive" and not self.patterns:
            raise BleakError("passive scanning mode requires bluez or_patterns")

    async def start(self) -> None:
        radio = self._radio
        radio.start_calls += 1
        await asyncio.sleep(0)
        if not radio.adapter_present:
            radio.start_failures += 1
            raise BleakBluetoothNotAvailableError(
                "No Bluetooth adapters found.", BleakBluetoothNotAvailableReason.NO_BLUETOOTH
            )
        if self.mode == "passive" and not radio.passive_supported:
            radio.start_failures += 1
            raise BleakError(
                "passive scanning on Linux requires BlueZ >= 5.56 with --experimental enabled "
                "and Linux kernel >= 5.10"
            )
        self.seen_devices = {}
        self.orphaned = False
        radio.scanning.append(self)

    async def stop(self) -> None:
        await asyncio.sleep(0)
        if self in self._radio.scanning:
            self._radio.scanning.remove(self)
        if self.orphaned:
            self.orphaned = False
            self._radio.stop_failures += 1
            raise BleakDBusError(
                "org.freedesktop.DBus.Error.UnknownObject",
                ["Method \"StopDiscovery\" with signature \"\" on interface "
                 "\"org.bluez.Adapter1\" doesn't exist"],
            )

    def deliver(self, record: AdvertRecord) -> int:
        if self.mode == "passive" and not _matches(self.patterns, record):
            return 0
        adv = record.advertisement_data()
        if not self.is_allowed_uuid(adv.service_uuids):
            return 0
        device = self.create_or_update_device(
            record.address, record.address, record.name, ("replay", record.address), adv
        )
        self.call_detection_callbacks(device, adv)
        return 1


class _ReplayClient(BaseBleakClient):
    _radio: ReplayRadio

    def __init__(self, address_or_ble_device: BLEDevice | str, **kwargs: Any) -> None:
        super().__init__(
            address_or_ble_device,
            disconnected_callback=kwargs.get("disconnected_callback"),
            timeout=kwargs.get("timeout", 10.0),
        )
        self._connected = False
        self._radio.connect_targets.append(address_or_ble_device)

    @property
    def name(self) -> str:
        return self.address

    @property
    def mtu_size(self) -> int:
        return 23

    @property
    def is_connected(self) -> bool:
        return self._connected

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        radio = self._radio
        await asyncio.sleep(0)
        if not radio.adapter_present:
            raise BleakBluetoothNotAvailableError(
                "No Bluetooth adapters found.", BleakBluetoothNotAvailableReason.NO_BLUETOOTH
            )
        table = radio.gatt.get(self.address.upper())
        if table is None:
            raise BleakDeviceNotFoundError(
                self.address, f"Device with address {self.address} was not found."
            )
        radio.connects += 1
        services = BleakGATTServiceCollection()
        service = BleakGATTService(None, 1, "0000fce0-0000-1000-8000-00805f9b34fb")
        services.add_service(service)
        for handle, uuid in enumerate(table, start=2):
            services.add_characteristic(
                BleakGATTCharacteristic(None, handle, uuid, ["read"], lambda: 20, service)
            )
        self.services = services
        self._connected = True

    async def disconnect(self) -> None:
        self._connected = False
        self.services = None

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        if not self._connected:
            raise BleakError("Not connected")
        values = self._radio.gatt[self.address.upper()][characteristic.uuid]
        value = values.pop(0) if len(values) > 1 else values[0]
        return bytearray(value)

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise BleakError("replay radio: pairing not supported")

    async def unpair(self) -> None:
        raise BleakError("replay radio: pairing not supported")

    async def read_gatt_descriptor(self, *args: Any, **kwargs: Any) -> bytearray:
        raise BleakError("replay radio: descriptors not recorded")

    async def write_gatt_char(self, *args: Any, **kwargs: Any) -> None:
        raise BleakError("replay radio is read-only")

    async def write_gatt_descriptor(self, *args: Any, **kwargs: Any) -> None:
        raise BleakError("replay radio is read-only")

    async def start_notify(self, *args: Any, **kwargs: Any) -> None:
        raise BleakError("replay radio: notifications not recorded")

    async def stop_notify(self, *args: Any, **kwargs: Any) -> None:
        raise BleakError("replay radio: notifications not recorded")


# -- command line ---------------------------------------------------------------------------


async def replay(
    records: list[Record],
    *,
    speed: float,
    mode: Literal["passive", "active"],
    out: Any,
    stall_timeout_s: float = 1.0,
) -> dict[str, Any]:
    """Run the real :class:`edge.ble.scanner.BleScanner` over ``records``; print JSON lines."""
    from edge.ble.scanner import BleScanner
    from edge.ble.settings import BleSettings

    radio = ReplayRadio()
    settings = BleSettings(
        scanning_mode=mode,
        stall_timeout_s=stall_timeout_s,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
    )
    async with BleScanner(settings, scanner_backend=radio.scanner_backend()) as scanner:

        async def consume() -> None:
            async for reading in scanner.readings():
                line = {
                    "address": reading.address,
                    "name": reading.name,
                    "rssi": reading.rssi,
                    "sensor": reading.sensor,
                    "readings": {r.quantity: r.value for r in reading.frame.readings},
                    "skip_reason": reading.frame.skip_reason,
                    "info": reading.frame.info,
                }
                print(json.dumps(line, default=list), file=out)

        consumer = asyncio.create_task(consume())
        await radio.wait_scanning()
        await radio.play(records, speed=speed)
        for _ in range(100):  # let the consumer drain what was delivered
            await asyncio.sleep(0)
            if scanner.pending == 0:
                break
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        stats = scanner.stats
    return {
        "adverts": stats.adverts,
        "readings": stats.readings,
        "duplicates": stats.duplicates,
        "unsupported": stats.unsupported,
        "bad": dict(stats.bad),
        "skipped": dict(stats.skipped),
        "mode": stats.mode,
        "restarts": stats.restarts,
        "errors": dict(stats.errors),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge.ble.replay",
        description="Replay a JSONL advertisement recording through the gateway's BLE scanner.",
    )
    parser.add_argument("file", type=Path, help="JSONL recording (see hil/recordings/)")
    parser.add_argument("--speed", type=float, default=0.0,
                        help="time factor: 1 = real time, 0 = as fast as possible (default)")
    parser.add_argument("--active", action="store_true", help="scan actively instead of passively")
    parser.add_argument("--stall-timeout", type=float, default=1.0, metavar="S",
                        help="restart the scan after S seconds of silence (default 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        records = load_recording(args.file)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mode: Literal["passive", "active"] = "active" if args.active else "passive"
    summary = asyncio.run(
        replay(records, speed=args.speed, mode=mode, out=sys.stdout,
               stall_timeout_s=args.stall_timeout)
    )
    print(json.dumps({"summary": summary}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
