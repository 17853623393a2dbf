"""BLE node adverts: made by the firmware under MicroPython, heard through bleak's real
scanner (only the radio is replayed, edge.ble.replay), decoded and de-duplicated."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from edge.ble.replay import AdvertRecord, ReplayRadio
from edge.model import Observation
from edge.node.ble import AdvertDeduper, NodeBleSource, build_node_ble, decode_node_advert
from edge.node.settings import NodeBleOptions
from edge.seams import SourceContext, SourceHealth
from hil.micropython_vm import MicroPythonVM, available


@pytest.fixture(scope="module")
def firmware_adverts() -> Iterator[list[bytes]]:
    if available():
        pytest.fail(str(available()))
    with MicroPythonVM() as vm:
        vm.exec("import harness as h\n"
                "h.setup(kind='air', cfg={'interval_s': 10, 'pm_on_s': 10, 'pm_warmup_s': 0,"
                " 'ble_advertise': True})\n"
                "h.run(31000)")
        hexes = vm.call_json("[binascii.hexlify(a).decode() for a in h.state['board'].adverts]",
                             "import binascii")
    yield [bytes.fromhex(h) for h in hexes]


def test_firmware_advert_layout(firmware_adverts: list[bytes]) -> None:
    assert len(firmware_adverts) == 3
    first = firmware_adverts[0]
    assert first[:2] == b"\xff\xff"  # company id 0xFFFF (testing), little-endian
    advert = decode_node_advert({0xFFFF: first[2:]})
    assert advert is not None
    assert advert.node == "c4123456"  # low 32 bits of the node id 240ac4123456
    assert [a_seq for a_seq in (decode_node_advert({0xFFFF: a[2:]}).seq  # type: ignore[union-attr]
                                for a in firmware_adverts)] == [1, 2, 3]
    values = dict(advert.values)
    assert values["pm2_5"] == pytest.approx(12.5)
    assert values["temperature"] == pytest.approx(21.5, abs=0.02)
    assert values["pressure"] == pytest.approx(101325, abs=2)


async def test_source_hears_decodes_and_drops_repeats(firmware_adverts: list[bytes]) -> None:
    radio = ReplayRadio()
    emitted: list[Observation] = []
    health = SourceHealth("ble-nodes")
    ctx = SourceContext("gw", emitted.extend, health)
    source = NodeBleSource("ble-nodes", "gw", NodeBleOptions.model_validate({}),
                           scanner_backend=radio.scanner_backend())
    task = asyncio.create_task(source.run(ctx))
    try:
        await radio.wait_scanning(5)
        for payload in firmware_adverts:
            for _ in range(3):  # a node re-advertises the same measurement several times
                radio.emit(AdvertRecord(0, "24:0A:C4:12:34:56",
                                        manufacturer_data={0xFFFF: payload[2:]}))
        radio.emit(AdvertRecord(0, "AA:BB:CC:DD:EE:FF", manufacturer_data={0xFFFF: b"\x20\x01"}))
        radio.emit(AdvertRecord(0, "AA:BB:CC:DD:EE:FF", manufacturer_data={0x0499: b"\x05"}))
        await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert health.frames_ok == 3
    assert source.counts["repeats"] == 6
    assert health.frames_bad["short"] == 1  # the malformed node advert; Ruuvi data ignored
    pm = [o for o in emitted if o.stream.quantity_code == "pm2_5"]
    assert len(pm) == 3
    assert pm[0].stream.sensor_id == "ble-nodes.c4123456"
    assert pm[0].provenance.node_id == "c4123456"
    assert pm[0].provenance.sensor_serial == "24:0A:C4:12:34:56"


def test_deduper_window() -> None:
    d = AdvertDeduper(window_ms=1000)
    assert d.fresh("a", 1, 0)
    assert not d.fresh("a", 1, 500)
    assert d.fresh("b", 1, 500)
    assert d.fresh("a", 1, 1600)  # sequence byte wrapped around after the window


def test_factory_reads_options() -> None:
    source = build_node_ble(SimpleNamespace(name="ble-nodes", options={"dedupe_window_s": 30}),
                            "gw")
    assert source.dedupe.window_ms == 30_000
    with pytest.raises(ValueError, match="dedupe_window_s"):
        build_node_ble(SimpleNamespace(name="ble-nodes", options={"dedupe_window_s": -1}), "gw")


async def test_silent_radio_ends_the_scan_for_a_restart() -> None:
    radio = ReplayRadio()
    health = SourceHealth("ble-nodes")
    source = NodeBleSource("ble-nodes", "gw",
                           NodeBleOptions.model_validate({"stall_timeout_s": 0.2}),
                           scanner_backend=radio.scanner_backend())
    with pytest.raises(TimeoutError, match="no BLE advertisement"):
        await asyncio.wait_for(source.run(SourceContext("gw", lambda _o: None, health)), 5)
