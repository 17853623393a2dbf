"""bleak's real BlueZ backend, over a real (private) D-Bus daemon, against a stand-in bluetoothd.

Only the daemon owning ``org.bluez`` is fake (tests/ble/fake_bluez.py); bleak's D-Bus client,
BlueZ manager and scanner are the production code, and so is the gateway's BleScanner.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edge.ble import BleReading, BleScanner, BleSettings
from edge.sensors.aranet4 import codec as aranet4

from .fake_bluez import FakeBlueZ, PrivateBus, dbus_daemon_available

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="BlueZ backend is Linux-only"),
    pytest.mark.skipif(not dbus_daemon_available(), reason="dbus-daemon not installed"),
]

R5 = "0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F"
TAG = "CB:B8:33:4C:88:4F"
ARA = "D0:1B:5A:00:11:22"


def ruuvi5(seq: int) -> dict[int, bytes]:
    return {0x0499: bytes.fromhex(R5[:32] + f"{seq:04X}" + R5[36:])}


@pytest.fixture
def private_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateBus]:
    bus = PrivateBus(tmp_path)
    bus.start()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)  # where bleak looks for BlueZ
    yield bus
    bus.stop()


@pytest.fixture
async def bluez(private_bus: PrivateBus) -> AsyncIterator[FakeBlueZ]:
    fake = FakeBlueZ(private_bus.address)
    await fake.start()
    yield fake
    await fake.stop()


def fast(**overrides: object) -> BleSettings:
    base: dict[str, object] = {"backoff_initial_s": 0.05, "backoff_max_s": 0.2}
    base.update(overrides)
    return BleSettings.model_validate(base)


async def take(scanner: BleScanner, n: int, timeout: float = 10.0) -> list[BleReading]:
    out: list[BleReading] = []
    async with asyncio.timeout(timeout):
        async for reading in scanner.readings():
            out.append(reading)
            if len(out) == n:
                break
    return out


async def test_passive_refused_by_bluez_falls_back_and_decodes(
    bluez: FakeBlueZ, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge.ble.scanner")
    async with BleScanner(fast()) as scanner:  # passive by default; this BlueZ can't
        await bluez.wait_discovering()
        for seq, rssi in ((1, -60), (1, -65), (2, -61)):  # the repeat only changes RSSI
            assert bluez.advertise(TAG, "Ruuvi 884F", rssi, ruuvi5(seq))
            await asyncio.sleep(0.05)
        got = await take(scanner, 2)
    assert [r.frame.info["sequence"] for r in got] == [1, 2]
    assert got[0].address == TAG and got[0].sensor == "ruuvi"
    assert {q.quantity for q in got[0].frame.readings} >= {"temperature", "humidity"}
    assert scanner.scanning_mode == "active"
    assert scanner.stats.duplicates == 1
    assert bluez.discovery_filters and bluez.discovery_filters[0]["Transport"].value == "le"
    assert any("falling back to active" in r.message for r in caplog.records)
    assert bluez.discovering == 0  # the scan was stopped on exit


async def test_adapter_unplugged_and_replugged(bluez: FakeBlueZ) -> None:
    settings = fast(scanning_mode="active", stall_timeout_s=0.3)
    async with BleScanner(settings) as scanner:
        await bluez.wait_discovering()
        bluez.advertise(TAG, "Ruuvi 884F", -60, ruuvi5(1))
        assert len(await take(scanner, 1)) == 1
        bluez.remove_adapter()
        async with asyncio.timeout(10):
            while scanner.stats.errors["BleakBluetoothNotAvailableError"] < 2:
                await asyncio.sleep(0.02)
        bluez.add_adapter()
        await bluez.wait_discovering()
        bluez.advertise(TAG, "Ruuvi 884F", -60, ruuvi5(2))
        got = await take(scanner, 1)
    assert got[0].frame.info["sequence"] == 2
    assert scanner.stats.stalls >= 1 and scanner.stats.restarts >= 2


async def test_bluetoothd_not_running(private_bus: PrivateBus) -> None:
    """D-Bus is up but nobody owns org.bluez: keep retrying, never crash."""
    async with BleScanner(fast(scanning_mode="active")) as scanner:
        async with asyncio.timeout(10):
            while sum(scanner.stats.errors.values()) < 2:
                await asyncio.sleep(0.02)
        fake = FakeBlueZ(private_bus.address)
        await fake.start()  # bluetoothd comes up: scanning starts without a gateway restart
        try:
            await fake.wait_discovering()
            fake.advertise(TAG, "Ruuvi 884F", -60, ruuvi5(5))
            got = await take(scanner, 1)
        finally:
            await fake.stop()
    assert got[0].frame.info["sequence"] == 5
    assert "BleakDBusError" in scanner.stats.errors


async def test_no_dbus_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    async with BleScanner(fast(scanning_mode="active")) as scanner:
        async with asyncio.timeout(10):
            while scanner.stats.restarts < 2:
                await asyncio.sleep(0.02)
    assert scanner.stats.errors["FileNotFoundError"] >= 2
    assert scanner.stats.state == "stopped"


async def test_passive_scan_registers_or_patterns(private_bus: PrivateBus) -> None:
    fake = FakeBlueZ(private_bus.address, passive_supported=True)
    await fake.start()
    try:
        async with BleScanner(fast()) as scanner:
            await fake.wait_monitoring()
            assert fake.discovering == 0  # no active discovery: nothing is sent on air
            assert sorted(p[2] for p in fake.patterns[fake.monitor_paths[0]]) == [
                b"\x02\x07", b"\x99\x04"
            ]
            assert not fake.advertise("5A:11:22:33:44:55", None, -80, {0x004C: b"\x02\x15"})
            assert fake.advertise(TAG, "Ruuvi 884F", -60, ruuvi5(3))
            got = await take(scanner, 1)
        assert scanner.scanning_mode == "passive"
        assert got[0].frame.info["sequence"] == 3
        assert fake.monitor_paths == []  # UnregisterMonitor on exit
    finally:
        await fake.stop()


async def test_aranet4_gatt_poll_over_dbus(bluez: FakeBlueZ) -> None:
    """Integrations off: the advert has no readings, the poll reads f0cd3001 over GATT."""
    record = bytes.fromhex("43049f018b27350c023c001000")  # official vector, bytes 8-20
    bluez.gatt[ARA] = {aranet4.CURRENT_READINGS_UUID: [record]}
    settings = fast(scanning_mode="active", gatt_timeout_s=5,
                    gatt_poll=[{"address": ARA, "interval_s": 0.2}])

    async def advertise_forever() -> None:
        while True:
            bluez.advertise(ARA, "Aranet4 1B5A0", -70, {0x0702: bytes.fromhex("01000201000000")})
            await asyncio.sleep(0.1)

    async with BleScanner(settings) as scanner:
        advertiser = asyncio.create_task(advertise_forever())
        try:
            got = await take(scanner, 2, timeout=15)
            async with asyncio.timeout(10):
                while bluez.connects < 2:
                    await asyncio.sleep(0.02)
        finally:
            advertiser.cancel()
    by_via = {r.via: r for r in got}
    assert by_via["advertisement"].frame.skip_reason == "integrations-off"
    gatt = by_via["gatt"].frame
    assert {r.quantity: r.value for r in gatt.readings} == {
        "co2": 1091.0, "temperature": 20.75, "pressure": 101230.0, "humidity": 53.0
    }
    assert scanner.stats.gatt_errors == 0
