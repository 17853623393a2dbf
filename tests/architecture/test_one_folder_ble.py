"""Adding a BLE sensor touches one folder: an advertising sensor written into a temporary
directory, and added to nothing but ``edge.sensors.__path__``, is listed, selectable in
config, asked for by passive scanning, decoded and de-duplicated by the real scanner from
replayed advertisements, and run by the real gateway into a real outbox. No file of the
repository is edited; the scanner has never heard of it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge import plugins
from edge.ble import BleReading, BleScanner, BleSettings
from edge.ble.replay import AdvertRecord, ReplayRadio
from edge.config import ConfigError, parse_config
from edge.outbox import iter_unsent
from edge.runtime import Gateway
from tests.sensor_folders import run_gateway_until, sensor_folders

pytestmark = pytest.mark.timeout(60)

NAME = "beacon_demo"
COMPANY = 0xFFFF  # the Bluetooth SIG's company id for tests
ADDRESS = "C0:FF:EE:00:BE:AC"

# A whole BLE sensor: 4-byte manufacturer data B1 <sequence> <int16 LE centidegrees>.
FOLDER = {
    "__init__.py": '''
        """A demo BLE beacon that exists only in a test's temporary folder."""
        from edge.plugins import Sensor
        from edge.sensors.beacon_demo.codec import DESCRIPTOR

        SENSOR = Sensor(DESCRIPTOR)
    ''',
    "codec.py": '''
        import struct

        from edge.codec import (
            BadPayload, BleCodec, Frame, PayloadDecoder, Reading, SensorDescriptor,
        )


        def decode(payload: bytes, name: str | None = None) -> Frame:
            if len(payload) != 4 or payload[0] != 0xB1:
                raise BadPayload("layout")
            (centi,) = struct.unpack_from("<h", payload, 2)
            return Frame("data", (Reading("temperature", centi / 100),),
                         info={"sequence": payload[1]})


        def sequence(frame: Frame) -> object:
            return frame.info.get("sequence")


        class BeaconDecoder(PayloadDecoder):
            decode = staticmethod(decode)


        DESCRIPTOR = SensorDescriptor(
            name="beacon_demo", model="Beacon", manufacturer="Demo", interface="ble",
            quantities=("temperature",), decoder=BeaconDecoder,
            ble=BleCodec(decode=decode, manufacturer_ids=(0xFFFF,), measurement_key=sequence),
        )
    ''',
    "README.md": "# `beacon_demo` — a BLE sensor that lives in one folder\n",
}


def advert(sequence: int, centi: int, payload: bytes | None = None) -> AdvertRecord:
    data = payload if payload is not None else (
        bytes([0xB1, sequence]) + centi.to_bytes(2, "little", signed=True)
    )
    return AdvertRecord(0.0, ADDRESS, None, -66, {COMPANY: data})


@pytest.fixture
def ble_sensor(tmp_path: Path) -> Iterator[Path]:
    with sensor_folders(tmp_path / "sensors", {NAME: FOLDER}) as folders:
        yield folders[NAME]


def test_the_folder_is_listed_and_selectable(ble_sensor: Path, tmp_path: Path) -> None:
    from edge.commands.sensors_cmd import sensor_rows

    (row,) = [r for r in sensor_rows() if r.type == NAME]
    assert row.read_by == "ble" and Path(row.readme) == ble_sensor / "README.md"
    assert NAME in plugins.ble_codecs() and NAME in BleSettings().sensors
    config = parse_config(CONFIG.format(data=tmp_path, options=f'sensors = ["{NAME}"]'))
    assert config.sources[0].options == {"sensors": [NAME]}
    with pytest.raises(ConfigError, match=r"options\.sensors\.0: .*'beacon_dem' is not a sensor "
                                          r"type; BLE sensors: .*\bbeacon_demo\b"):
        parse_config(CONFIG.format(data=tmp_path, options='sensors = ["beacon_dem"]'))


async def test_the_scanner_decodes_it_from_replayed_adverts(ble_sensor: Path) -> None:
    del ble_sensor
    radio = ReplayRadio()
    settings = BleSettings(stall_timeout_s=30)  # passive: BlueZ is asked for 0xFFFF too
    async with BleScanner(settings, scanner_backend=radio.scanner_backend()) as scanner:
        await radio.wait_scanning()
        assert (0, 0xFF, b"\xff\xff") in [tuple(p) for p in radio.scanning[0].patterns]
        for record in (advert(1, 2150), advert(1, 2150), advert(2, -325),
                       advert(3, 0, payload=b"\xb1\x03")):
            radio.emit(record)
        got: list[BleReading] = []
        async with asyncio.timeout(5):
            async for reading in scanner.readings():
                got.append(reading)
                if len(got) == 2:
                    break
    assert [(r.sensor, r.address, r.frame.info["sequence"]) for r in got] == [
        (NAME, ADDRESS, 1), (NAME, ADDRESS, 2)
    ]
    assert [r.frame.readings[0].value for r in got] == [21.5, -3.25]
    assert scanner.stats.duplicates == 1  # the repeated sequence number
    assert scanner.stats.bad == {f"{NAME}:layout": 1}
    assert scanner.devices[ADDRESS].sensor == NAME


CONFIG = """
[gateway]
id = "gw-one-folder-ble"
data_dir = "{data}"
[buffer]
commit_interval_s = 0.1
[[sources]]
name = "ble"
type = "ble"
options = {{ {options} }}
"""


def test_the_gateway_runs_it_into_its_outbox(ble_sensor: Path, tmp_path: Path) -> None:
    del ble_sensor
    recording = tmp_path / "beacon.jsonl"
    lines = [{"t": i * 0.01, "address": ADDRESS, "rssi": -60,
              "manufacturer_data": {"0xFFFF": (bytes([0xB1, i]) + (2000 + i).to_bytes(2, "little")).hex()}}
             for i in range(5)]
    recording.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    config = parse_config(CONFIG.format(
        data=tmp_path / "data",
        options=f'replay = "{recording}", replay_speed = 0, stall_timeout_s = 30',
    ))
    run_gateway_until(Gateway(config, uplinks=[]), observations=5)
    stored = list(iter_unsent(config.outbox_path))
    sensor_id = f"{NAME}-{ADDRESS.replace(':', '').lower()}"
    assert [(o.stream.sensor_id, o.stream.quantity_code, o.result) for o in stored] == [
        (sensor_id, "temperature", (2000 + i) / 100) for i in range(5)
    ]
    assert all(o.provenance.sensor_model == "Beacon" for o in stored)
    assert all(o.provenance.sensor_serial == ADDRESS for o in stored)
