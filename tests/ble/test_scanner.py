"""The real BleScanner (and real bleak BleakScanner/BleakClient) over a replayed radio.

Only the radio is fake: edge.ble.replay.ReplayRadio plugs into bleak's ``backend=`` seam and
delivers recorded advertisement bytes through bleak's own callback machinery.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from bleak.backends.device import BLEDevice
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.ble import BleReading, BleScanner, BleSettings, discover
from edge.ble.replay import AdvertRecord, ReplayRadio, load_recording, main
from edge.ble.scanner import passive_unsupported
from edge.sensors.aranet4 import codec as aranet4
from edge.sensors.ruuvi import codec as ruuvi

RECORDINGS = Path(__file__).resolve().parents[2] / "hil" / "recordings"

R5 = "0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F"
R6 = "06170C5668C79E007000C90501D9FFCD004C884F"
E1 = "E1170C5668C79E0065007004BD11CA00C9050113E0AC3D4A9CDECDEE00FFFFFFFFFFCBB8334C884F"
ARANET = "210503010005000143049f018b27350c023c00100055"
TAG = "CB:B8:33:4C:88:4F"
AIR = "F1:2B:3C:4C:88:4F"
ARA = "D0:1B:5A:00:11:22"


def ruuvi5(seq: int, address: str = TAG, rssi: int = -60, name: str = "Ruuvi 884F") -> AdvertRecord:
    payload = bytes.fromhex(R5[:32] + f"{seq:04X}" + R5[36:])
    return AdvertRecord(0.0, address, name, rssi, {0x0499: payload})


def air(hex_payload: str, extended: bool = False) -> AdvertRecord:
    payload = {0x0499: bytes.fromhex(hex_payload)}
    return AdvertRecord(0.0, AIR, "Ruuvi Air", -70, payload, extended=extended)


def fast(**overrides: object) -> BleSettings:
    base: dict[str, object] = {
        "stall_timeout_s": 5.0,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
    }
    base.update(overrides)
    return BleSettings.model_validate(base)


async def take(scanner: BleScanner, n: int, timeout: float = 5.0) -> list[BleReading]:
    out: list[BleReading] = []
    async with asyncio.timeout(timeout):
        async for reading in scanner.readings():
            out.append(reading)
            if len(out) == n:
                break
    return out


async def test_recording_decodes_through_scanner() -> None:
    radio = ReplayRadio()
    records = load_recording(RECORDINGS / "ble-vectors.jsonl")
    async with BleScanner(fast(), scanner_backend=radio.scanner_backend()) as scanner:
        await radio.wait_scanning()
        await radio.play(records, speed=0)
        got = await take(scanner, 8)
        assert scanner.pending == 0
    by_sensor = {(r.address, r.frame.info.get("format")) for r in got}
    assert (TAG, 5) in by_sensor and (AIR, 6) in by_sensor and (AIR, 0xE1) in by_sensor
    aranet = [r for r in got if r.sensor == "aranet4"]
    assert len(aranet) == 1  # the second advert repeats the same measurement
    assert {q.quantity: q.value for q in aranet[0].frame.readings}["co2"] == 1091
    stats = scanner.stats
    assert stats.mode == "passive"
    assert stats.adverts == 11  # the Apple beacon never passes the passive or-patterns
    assert stats.duplicates == 3  # same Ruuvi sequence, E1-superseded format 6, same Aranet
    assert stats.skipped == {"ruuvi:no-valid-fields": 1}
    snapshot = json.loads(json.dumps(stats.as_dict()))
    assert snapshot["readings"] == 8 and snapshot["state"] == "stopped"
    tag = scanner.devices[TAG]
    assert tag.rssi == -62 and tag.readings == 3 and tag.adverts == 4 and tag.duplicates == 1
    assert all(isinstance(r.received_at, float) and r.via == "advertisement" for r in got)


async def test_active_mode_counts_unsupported_devices() -> None:
    radio = ReplayRadio()
    records = load_recording(RECORDINGS / "ble-vectors.jsonl")
    settings = fast(scanning_mode="active")
    async with BleScanner(settings, scanner_backend=radio.scanner_backend()) as scanner:
        await radio.wait_scanning()
        await radio.play(records, speed=0)
        await take(scanner, 8)
    assert scanner.stats.adverts == 12 and scanner.stats.unsupported == 1
    assert scanner.stats.mode == "active"


async def test_duplicates_dropped_per_device_by_sequence() -> None:
    radio = ReplayRadio()
    async with BleScanner(fast(), scanner_backend=radio.scanner_backend()) as scanner:
        await radio.wait_scanning()
        for seq in (1, 1, 1, 2, 2, 3):
            radio.emit(ruuvi5(seq))
        radio.emit(ruuvi5(3, address="AA:AA:AA:AA:AA:AA"))  # another device, same sequence
        got = await take(scanner, 4)
    assert [(r.address, r.frame.info["sequence"]) for r in got] == [
        (TAG, 1), (TAG, 2), (TAG, 3), ("AA:AA:AA:AA:AA:AA", 3)
    ]
    assert scanner.stats.duplicates == 3


async def test_deduplicate_off_passes_everything() -> None:
    radio = ReplayRadio()
    async with BleScanner(fast(deduplicate=False), scanner_backend=radio.scanner_backend()) as s:
        await radio.wait_scanning()
        for _ in range(3):
            radio.emit(ruuvi5(7))
        assert len(await take(s, 3)) == 3


@pytest.mark.parametrize("allow", [[TAG.lower().replace(":", "")], ["Ruuvi 884F"]])
async def test_allow_list_by_address_or_name(allow: list[str]) -> None:
    radio = ReplayRadio()
    settings = fast(allow=allow)
    async with BleScanner(settings, scanner_backend=radio.scanner_backend()) as scanner:
        await radio.wait_scanning()
        radio.emit(ruuvi5(1, address="11:22:33:44:55:66", name="Ruuvi 5566"))
        radio.emit(ruuvi5(1))
        got = await take(scanner, 1)
    assert got[0].address == TAG
    assert scanner.stats.filtered == 1
    assert "11:22:33:44:55:66" not in scanner.devices


async def test_passive_unsupported_falls_back_to_active(caplog: pytest.LogCaptureFixture) -> None:
    radio = ReplayRadio(passive_supported=False)
    caplog.set_level(logging.WARNING, logger="edge.ble.scanner")
    async with BleScanner(fast(), scanner_backend=radio.scanner_backend()) as scanner:
        await radio.wait_scanning()
        radio.emit(ruuvi5(1))
        await take(scanner, 1)
    assert scanner.scanning_mode == "active" and scanner.stats.mode == "active"
    assert scanner.stats.restarts == 0
    assert any("falling back to active" in r.message for r in caplog.records)


async def test_adapter_lost_mid_stream_and_recovered() -> None:
    radio = ReplayRadio()
    settings = fast(stall_timeout_s=0.2)
    async with BleScanner(settings, scanner_backend=radio.scanner_backend()) as scanner:
        await radio.wait_scanning()
        radio.emit(ruuvi5(1))
        assert len(await take(scanner, 1)) == 1
        radio.remove_adapter()  # BlueZ: the scan goes silent, stop() will fail
        radio.emit(ruuvi5(2))  # nobody hears this one
        async with asyncio.timeout(5):
            while radio.start_failures < 2:
                await asyncio.sleep(0.01)
        radio.restore_adapter()
        await radio.wait_scanning()
        radio.emit(ruuvi5(3))
        got = await take(scanner, 1)
    assert got[0].frame.info["sequence"] == 3
    stats = scanner.stats
    assert stats.stalls >= 1 and stats.restarts >= 3
    assert stats.errors["ScanStalled"] >= 1
    assert stats.errors["BleakBluetoothNotAvailableError"] >= 2
    assert radio.stop_failures == 1  # stopping the orphaned scan raised, and was survived
    assert stats.state in ("scanning", "stopped")


async def test_no_adapter_at_startup_retries_until_it_appears(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="edge.ble.scanner")
    radio = ReplayRadio(adapter_present=False)
    async with BleScanner(fast(), scanner_backend=radio.scanner_backend()) as scanner:
        async with asyncio.timeout(5):
            while radio.start_failures < 3:
                await asyncio.sleep(0.01)
        assert scanner.stats.state in ("backoff", "starting")
        radio.restore_adapter()
        await radio.wait_scanning()
        radio.emit(ruuvi5(9))
        assert (await take(scanner, 1))[0].frame.info["sequence"] == 9
    warnings = [r for r in caplog.records if "interrupted" in r.message]
    assert len(warnings) == 1  # one warning, not one per retry


async def test_queue_overflow_drops_oldest() -> None:
    radio = ReplayRadio()
    async with BleScanner(fast(queue_size=2), scanner_backend=radio.scanner_backend()) as s:
        await radio.wait_scanning()
        for seq in range(5):
            radio.emit(ruuvi5(seq))
        got = await take(s, 2)
    assert [r.frame.info["sequence"] for r in got] == [3, 4]
    assert s.stats.dropped == 3


async def test_ruuvi_air_e1_preferred_over_format6() -> None:
    radio = ReplayRadio()
    async with BleScanner(fast(), scanner_backend=radio.scanner_backend()) as scanner:
        await radio.wait_scanning()
        radio.emit(air(E1, extended=True))
        radio.emit(air(R6))
        radio.emit(ruuvi5(1))
        got = await take(scanner, 2)
    assert [r.frame.info["format"] for r in got] == [0xE1, 5]


async def test_extended_adverts_need_extended_scanning() -> None:
    radio = ReplayRadio(extended_scan=False)
    async with BleScanner(fast(), scanner_backend=radio.scanner_backend()) as scanner:
        await radio.wait_scanning()
        radio.emit(air(E1, extended=True))
        radio.emit(air(R6))
        got = await take(scanner, 1)
    assert got[0].frame.info["format"] == 6


async def test_bad_payloads_counted_not_raised() -> None:
    radio = ReplayRadio()
    async with BleScanner(fast(), scanner_backend=radio.scanner_backend()) as scanner:
        await radio.wait_scanning()
        radio.emit(AdvertRecord(0, TAG, None, -60, {0x0499: b"\x05\x01"}))
        radio.emit(AdvertRecord(0, ARA, None, -60, {0x0702: b""}))
        aranet2 = bytes.fromhex("01210404010000000000990100000a02003b007800520064")
        radio.emit(AdvertRecord(0, "C1:00:00:00:00:02", None, -60, {0x0702: aranet2}))
        radio.emit(AdvertRecord(0, "C1:00:00:00:00:03", "Aranet2 278F8", -60,
                                {0x0702: bytes.fromhex(ARANET)}))
        radio.emit(ruuvi5(1))
        await take(scanner, 1)
    assert scanner.stats.bad == {"ruuvi:short": 1, "aranet4:short": 1, "aranet4:other-model": 2}


def _clock(step: float) -> Iterator[float]:
    t = 1_000_000.0
    while True:
        yield t
        t += step


async def test_gatt_polling_reads_recorded_bytes() -> None:
    record = bytes.fromhex(ARANET)[8:21]  # age 16 s
    same = record[:11] + (46).to_bytes(2, "little")  # 30 s later: same measurement
    newer = record[:11] + (6).to_bytes(2, "little")  # 60 s later: next measurement
    calibrating = bytes.fromhex("43849f418ba7350c023c000500")
    radio = ReplayRadio(gatt={ARA: {aranet4.CURRENT_READINGS_UUID: [record, same, newer,
                                                                    calibrating]}})
    ticks = _clock(30.0)
    settings = fast(sensors=[], gatt_poll=[{"address": ARA.lower(), "interval_s": 0.01}])
    async with BleScanner(
        settings, client_backend=radio.client_backend(), wall_clock=lambda: next(ticks)
    ) as scanner:
        got = await take(scanner, 3)
    assert [r.via for r in got] == ["gatt"] * 3
    assert got[0].frame.readings == aranet4.decode_readings(record).readings
    assert got[1].frame.info["age_s"] == 6
    assert got[2].frame.skip_reason == "calibration" and got[2].frame.readings == ()
    assert scanner.stats.duplicates >= 1 and radio.connects >= 4
    assert scanner.devices[ARA].sensor == "aranet4"


async def test_gatt_polling_survives_missing_device() -> None:
    radio = ReplayRadio()
    settings = fast(sensors=[], gatt_poll=[{"address": ARA, "interval_s": 0.01}])
    async with BleScanner(settings, client_backend=radio.client_backend()) as scanner:
        async with asyncio.timeout(5):
            while scanner.stats.gatt_errors < 2:
                await asyncio.sleep(0.01)
        radio.gatt[ARA] = {aranet4.CURRENT_READINGS_UUID: [bytes.fromhex(ARANET)[8:21]]}
        got = await take(scanner, 1)
    assert got[0].via == "gatt"
    assert scanner.stats.errors["gatt:BleakDeviceNotFoundError"] >= 2


async def test_closing_ends_a_consumer_in_another_task() -> None:
    radio = ReplayRadio()
    scanner = BleScanner(fast(), scanner_backend=radio.scanner_backend())
    async with scanner:
        await radio.wait_scanning()
        radio.emit(ruuvi5(1))

        async def consume() -> list[BleReading]:
            return [r async for r in scanner.readings()]

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        assert not consumer.done()
    got = await asyncio.wait_for(consumer, 2)
    assert [r.frame.info["sequence"] for r in got] == [1]


async def test_gatt_poll_connects_with_the_advertised_device() -> None:
    record = bytes.fromhex(ARANET)[8:21]
    radio = ReplayRadio(gatt={ARA: {aranet4.CURRENT_READINGS_UUID: [record]}})
    off = AdvertRecord(0, ARA, "Aranet4 1B5A0", -70, {0x0702: bytes.fromhex("01000201000000")})
    settings = fast(gatt_poll=[{"address": ARA, "interval_s": 0.01}])
    async with BleScanner(
        settings, scanner_backend=radio.scanner_backend(), client_backend=radio.client_backend()
    ) as scanner:
        await radio.wait_scanning()
        radio.emit(off)  # integrations off: an advert with no readings; GATT has them
        got = await take(scanner, 2)
        async with asyncio.timeout(5):
            while radio.connects < 3:
                await asyncio.sleep(0.01)
    by_via = {r.via: r for r in got}
    assert by_via["advertisement"].frame.skip_reason == "integrations-off"
    assert by_via["gatt"].frame.readings
    # once advertised, the device object is reused: no extra discovery scan to connect
    assert isinstance(radio.connect_targets[-1], BLEDevice)
    assert scanner.devices[ARA].gatt_reads >= 3


async def test_readings_requires_context() -> None:
    scanner = BleScanner(fast())
    with pytest.raises(RuntimeError, match="async with"):
        await anext(scanner.readings())


def test_scanner_backoff_is_exponential_capped_and_jittered() -> None:
    scanner = BleScanner(fast(backoff_initial_s=1.0, backoff_max_s=8.0), rng=random.Random(7))
    backoff = scanner._backoff()
    delays = [backoff.next_delay() for _ in range(7)]
    for delay, ceiling in zip(delays, [1, 2, 4, 8, 8, 8, 8], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jittered


def test_passive_unsupported_classification() -> None:
    from bleak.exc import (
        BleakBluetoothNotAvailableError,
        BleakBluetoothNotAvailableReason,
        BleakDBusError,
        BleakError,
    )

    assert passive_unsupported(BleakError("passive scanning on Linux requires BlueZ >= 5.56"))
    assert passive_unsupported(BleakDBusError("org.freedesktop.DBus.Error.UnknownInterface", []))
    assert not passive_unsupported(BleakDBusError("org.freedesktop.DBus.Error.UnknownMethod", []))
    assert not passive_unsupported(
        BleakBluetoothNotAvailableError("No Bluetooth adapters found.",
                                        BleakBluetoothNotAvailableReason.NO_BLUETOOTH)
    )
    not_ready = BleakDBusError("org.bluez.Error.NotReady", ["Resource Not Ready"])
    assert not passive_unsupported(not_ready)


def test_replay_cli_on_shipped_recording(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(RECORDINGS / "ble-vectors.jsonl")]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 8
    assert json.loads(err)["summary"]["duplicates"] == 3


def test_replay_rejects_bad_lines(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 0, "address": "AA:BB:CC:DD:EE:FF"}\n{"t": 1, "event": "explode"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        load_recording(bad)
    assert main([str(bad)]) == 2


def test_replay_cli_scripted_adapter_loss(capsys: pytest.CaptureFixture[str]) -> None:
    path = RECORDINGS / "ble-adapter-loss.jsonl"
    assert main([str(path), "--stall-timeout", "0.2"]) == 0
    out, err = capsys.readouterr()
    sequences = [json.loads(line)["info"]["sequence"] for line in out.splitlines()]
    assert sequences == [205, 206, 208]  # 207 was sent while the adapter was gone
    summary = json.loads(err.splitlines()[-1])["summary"]
    assert summary["restarts"] >= 1 and summary["errors"]["ScanStalled"] >= 1


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0x0499, 0x0702, 0x004C]), st.binary(max_size=48)),
                max_size=30))
def test_random_adverts_never_break_the_scanner(adverts: list[tuple[int, bytes]]) -> None:
    async def run() -> BleScanner:
        radio = ReplayRadio()
        scanner = BleScanner(fast(scanning_mode="active"), scanner_backend=radio.scanner_backend())
        async with scanner:
            await radio.wait_scanning()
            for i, (company, payload) in enumerate(adverts):
                radio.emit(AdvertRecord(0, f"AA:BB:CC:DD:EE:{i % 4:02X}", None, -70,
                                        {company: payload}))
        return scanner

    scanner = asyncio.run(run())
    stats = scanner.stats
    assert stats.errors["callback"] == 0
    assert stats.adverts == len(adverts)
    handled = stats.readings + stats.duplicates + stats.unsupported + sum(stats.bad.values())
    assert handled == len(adverts)


async def test_discover_lists_devices_strongest_first() -> None:
    radio = ReplayRadio()
    records = load_recording(RECORDINGS / "ble-vectors.jsonl")

    async def feed() -> None:
        await radio.wait_scanning()
        await radio.play(records, speed=0)

    feeder = asyncio.create_task(feed())
    devices = await discover(fast(), 0.3, scanner_backend=radio.scanner_backend())
    await feeder
    assert [d.address for d in devices] == [TAG, AIR, ARA, "C0:FF:EE:00:00:01"]
    assert [d.sensor for d in devices] == ["ruuvi", "ruuvi", "aranet4", "ruuvi"]


def test_reading_measured_at_and_device_id() -> None:
    aranet = aranet4.decode_advertisement(bytes.fromhex(ARANET))
    reading = BleReading(ARA, None, -70, "aranet4", aranet, 1000.0)
    assert reading.measured_at == 1000.0 - 16 and reading.device_id == ARA
    tag = BleReading("11:22:33:44:55:66", None, -70, "ruuvi",
                     ruuvi.decode(bytes.fromhex(R5)), 1000.0)
    assert tag.measured_at == 1000.0 and tag.device_id == TAG


async def test_gatt_poll_falls_back_to_f0cd1503() -> None:
    short = bytes.fromhex(ARANET)[8:17]
    radio = ReplayRadio(gatt={ARA: {aranet4.CURRENT_READINGS_SHORT_UUID: [short]}})
    settings = fast(sensors=[], gatt_poll=[{"address": ARA, "interval_s": 30}])
    async with BleScanner(settings, client_backend=radio.client_backend()) as scanner:
        got = await take(scanner, 1)
    assert got[0].frame.readings == aranet4.decode_readings(short).readings
    assert "age_s" not in got[0].frame.info and scanner.stats.gatt_errors == 0


def test_docs_config_example_is_valid() -> None:
    import re
    import tomllib

    text = (Path(__file__).resolve().parents[2] / "docs" / "ble.md").read_text()
    block = re.search(r"```toml\n(\[ble\].*?)```", text, re.S)
    assert block is not None
    settings = BleSettings.model_validate(tomllib.loads(block.group(1))["ble"])
    assert settings.gatt_poll[0].address == "D0:1B:5A:00:11:22"
    assert settings.allow == ["CB:B8:33:4C:88:4F", "Aranet4 1B5A0"]


def test_settings_errors_name_key_value_and_choices() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        BleSettings.model_validate(
            {"scanning_mode": "sniff", "gatt_poll": [{"address": "nope"}], "colour": 1}
        )
    text = str(err.value)
    assert "scanning_mode" in text and "'sniff'" in text and "'passive' or 'active'" in text
    assert "gatt_poll.0.address" in text and "AA:BB:CC:DD:EE:FF" in text
    assert "colour" in text and "Extra inputs are not permitted" in text
