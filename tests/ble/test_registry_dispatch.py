"""The scanner serves whatever BLE sensors the registry holds: two test-only sensor folders
(written to a temporary directory, added only to ``edge.sensors.__path__``) exercise what the
built-in ones do not — service data instead of manufacturer data, a company id shared with
another sensor, a second sensor readable over GATT."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge.ble import BleReading, BleScanner, BleSettings
from edge.ble.replay import AdvertRecord, ReplayRadio
from edge.ble.scanner import or_patterns, service_data_prefix
from edge.codec import BleCodec, Frame
from tests.ble.test_scanner import ARA, ARANET, fast, take
from tests.sensor_folders import sensor_folders

SVC = "0000fff0-0000-1000-8000-00805f9b34fb"  # service data under a 16-bit UUID
SVC_FULL, SVC_SHORT = (f"0000fff{i}-0000-1000-8000-00805f9b34fb" for i in (1, 2))
ARANET2 = bytes.fromhex("01210404010000000000990100000a02003b007800520064")  # Aranet4-Python

FOLDERS = {
    # A second SAF Tehnika model: same company id as the Aranet4, model byte 1 first.
    "aranet2_demo": {
        "__init__.py": '''
            from edge.codec import BadPayload, BleCodec, Frame, PayloadDecoder, Reading, SensorDescriptor
            from edge.plugins import Sensor


            def decode(payload: bytes, name: str | None = None) -> Frame:
                if len(payload) < 20:
                    raise BadPayload("short")
                if payload[0] != 1:
                    raise BadPayload("other-model")
                return Frame("data", (Reading("humidity", payload[19] / 1.0),))


            class Decoder(PayloadDecoder):
                decode = staticmethod(decode)


            SENSOR = Sensor(SensorDescriptor(
                name="aranet2_demo", model="Aranet2 (test)", manufacturer="Demo", interface="ble",
                quantities=("humidity",), decoder=Decoder,
                ble=BleCodec(decode=decode, manufacturer_ids=(0x0702,)),
            ))
        ''',
    },
    # Service data, a sequence byte, and a GATT read whose first characteristic may be absent.
    "svc_demo": {
        "__init__.py": f'''
            from edge.codec import (
                BadPayload, BleCodec, Frame, GattRead, PayloadDecoder, Reading, SensorDescriptor,
            )
            from edge.plugins import Sensor


            def decode(payload: bytes, name: str | None = None) -> Frame:
                if len(payload) != 2:
                    raise BadPayload("length")
                return Frame("data", (Reading("co2", payload[1] * 10.0),),
                             info={{"sequence": payload[0]}})


            def read(record: bytes) -> Frame:
                return Frame("data", (Reading("co2", float(record[0] * 10)),),
                             info={{"age_s": record[1], "interval_s": 60}})


            class Decoder(PayloadDecoder):
                decode = staticmethod(decode)


            SENSOR = Sensor(SensorDescriptor(
                name="svc_demo", model="ServiceData (test)", manufacturer="Demo",
                interface="ble", quantities=("co2",), decoder=Decoder,
                ble=BleCodec(
                    decode=decode, service_data_uuids=("{SVC}",),
                    measurement_key=lambda frame: frame.info.get("sequence"),
                    gatt=GattRead(("{SVC_FULL}", "{SVC_SHORT}"), read),
                ),
            ))
        ''',
    },
}


@pytest.fixture(scope="module")
def demo_sensors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with sensor_folders(tmp_path_factory.mktemp("ble") / "sensors", FOLDERS):
        yield


def svc(seq: int, ppm_10: int, address: str = "5E:00:00:00:00:01") -> AdvertRecord:
    return AdvertRecord(0.0, address, None, -70, service_data={SVC: bytes([seq, ppm_10])})


@pytest.mark.usefixtures("demo_sensors")
def test_selectable_sensors_and_gatt_defaults_follow_the_registry() -> None:
    assert {"aranet2_demo", "aranet4", "ruuvi", "svc_demo"} <= set(BleSettings().sensors)
    with pytest.raises(ValidationError, match=r"gatt_poll\.0\.sensor\n.*name the sensor type of "
                                              r"this device .*readable over GATT: .*svc_demo"):
        BleSettings.model_validate({"gatt_poll": [{"address": ARA}]})
    with pytest.raises(ValidationError, match=r"'aranet2_demo' cannot be read over GATT; "
                                              r"sensors that can: aranet4, .*svc_demo"):
        BleSettings.model_validate({"gatt_poll": [{"address": ARA, "sensor": "aranet2_demo"}]})
    chosen = BleSettings.model_validate({"gatt_poll": [{"address": ARA, "sensor": "svc_demo"}]})
    assert chosen.gatt_poll[0].sensor == "svc_demo"


@pytest.mark.usefixtures("demo_sensors")
@pytest.mark.parametrize("mode", ["passive", "active"])
async def test_service_data_is_matched_decoded_and_deduplicated(mode: str) -> None:
    radio = ReplayRadio()
    async with BleScanner(fast(scanning_mode=mode), scanner_backend=radio.scanner_backend()) as s:
        await radio.wait_scanning()
        foreign = AdvertRecord(0.0, "5E:00:00:00:00:02", None, -70,
                               service_data={"0000feaa-0000-1000-8000-00805f9b34fb": b"\x10\x00"})
        delivered = [radio.emit(r) for r in (svc(1, 42), svc(1, 42), foreign, svc(2, 43))]
        got = await take(s, 2)
    assert [(r.sensor, r.frame.readings[0].value) for r in got] == [("svc_demo", 420.0),
                                                                     ("svc_demo", 430.0)]
    assert s.stats.duplicates == 1
    if mode == "passive":  # BlueZ is asked for the service data only: the beacon never arrives
        assert delivered == [1, 1, 0, 1] and s.stats.unsupported == 0
    else:
        assert delivered == [1, 1, 1, 1] and s.stats.unsupported == 1


@pytest.mark.usefixtures("demo_sensors")
async def test_sensors_sharing_a_company_id_each_get_their_adverts() -> None:
    radio = ReplayRadio()
    async with BleScanner(fast(), scanner_backend=radio.scanner_backend()) as scanner:
        await radio.wait_scanning()
        radio.emit(AdvertRecord(0, "C1:00:00:00:00:02", None, -60, {0x0702: ARANET2}))
        radio.emit(AdvertRecord(0, ARA, "Aranet4 1B5A0", -60, {0x0702: bytes.fromhex(ARANET)}))
        radio.emit(AdvertRecord(0, "C1:00:00:00:00:03", None, -60, {0x0702: b"\x21\x00"}))
        got = await take(scanner, 2)
    assert [r.sensor for r in got] == ["aranet2_demo", "aranet4"]
    assert got[0].frame.readings[0].value == float(ARANET2[19])
    # refused by both: counted once, under the first sensor holding the id
    assert scanner.stats.bad == {"aranet2_demo:short": 1}
    assert scanner.devices["C1:00:00:00:00:03"].sensor == "aranet2_demo"


@pytest.mark.usefixtures("demo_sensors")
async def test_gatt_poll_reads_the_first_characteristic_the_device_has() -> None:
    address = "5E:00:00:00:00:09"
    radio = ReplayRadio(gatt={address: {SVC_SHORT: [bytes([55, 10]), bytes([55, 40]),
                                                    bytes([56, 2])]}})
    ticks = iter(range(1_000_000, 2_000_000, 30))
    settings_ = fast(sensors=[], gatt_poll=[{"address": address, "sensor": "svc_demo",
                                             "interval_s": 0.01}])
    async with BleScanner(settings_, client_backend=radio.client_backend(),
                          wall_clock=lambda: float(next(ticks))) as scanner:
        got: list[BleReading] = await take(scanner, 2)
    assert [(r.sensor, r.via, r.frame.readings[0].value) for r in got] == [
        ("svc_demo", "gatt", 550.0), ("svc_demo", "gatt", 560.0)
    ]
    assert scanner.stats.duplicates >= 1  # 30 s later, age 40 s: the same measurement
    assert scanner.stats.gatt_errors == 0


@pytest.mark.usefixtures("demo_sensors")
@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0x0702, 0x0499, SVC]), st.binary(max_size=30)),
                max_size=25))
def test_random_adverts_are_each_counted_once(adverts: list[tuple[int | str, bytes]]) -> None:
    async def run() -> BleScanner:
        radio = ReplayRadio()
        scanner = BleScanner(fast(scanning_mode="active"), scanner_backend=radio.scanner_backend())
        async with scanner:
            await radio.wait_scanning()
            for i, (key, payload) in enumerate(adverts):
                address = f"AA:BB:CC:DD:EE:{i % 4:02X}"
                radio.emit(AdvertRecord(0, address, None, -70, {key: payload})
                           if isinstance(key, int) else
                           AdvertRecord(0, address, None, -70, service_data={key: payload}))
        return scanner

    stats = asyncio.run(run()).stats
    assert stats.errors["callback"] == 0
    handled = stats.readings + stats.duplicates + stats.unsupported + sum(stats.bad.values())
    assert handled == stats.adverts == len(adverts)


def test_or_patterns_ask_bluez_for_manufacturer_and_service_data() -> None:
    def nothing(payload: bytes, name: str | None) -> Frame:
        return Frame("data")

    codec = BleCodec(decode=nothing, manufacturer_ids=(0x0499, 0x0702), service_data_uuids=(
        "0000fcd2-0000-1000-8000-00805f9b34fb",
        "1234abcd-0000-1000-8000-00805f9b34fb",
        "f0cd1400-95da-4f4b-9ac8-aa55d312af0c",
    ))
    assert [tuple(p) for p in or_patterns([codec])] == [
        (0, 0xFF, b"\x99\x04"), (0, 0xFF, b"\x02\x07"),
        (0, 0x16, b"\xd2\xfc"),
        (0, 0x20, b"\xcd\xab\x34\x12"),
        (0, 0x21, bytes.fromhex("f0cd140095da4f4b9ac8aa55d312af0c")[::-1]),
    ]
    assert service_data_prefix("0000fff0-0000-1000-8000-00805f9b34fb")[1] == b"\xf0\xff"


def test_a_ble_descriptor_without_its_ble_part_is_refused() -> None:
    from edge.codec import PayloadDecoder, SensorDescriptor

    with pytest.raises(ValueError, match="interface 'ble' needs ble=BleCodec"):
        SensorDescriptor(name="x", model="X", manufacturer="Y", interface="ble",
                         quantities=(), decoder=PayloadDecoder)
    with pytest.raises(ValueError, match="manufacturer_ids or service_data_uuids"):
        BleCodec(decode=lambda payload, name: Frame("data"))
    with pytest.raises(ValueError, match="full 128-bit UUIDs in lower case"):
        BleCodec(decode=lambda payload, name: Frame("data"), service_data_uuids=("FFF0",))
