"""Every BLE sensor of the registry, given for free to a new folder: its BleCodec's decoders
never raise anything but BadPayload on random bytes, yield only the quantities its descriptor
declares, and its measurement key is hashable."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import plugins
from edge.codec import BadPayload, Frame

BLE_SENSORS = sorted(plugins.ble_codecs())
NAMES = st.one_of(st.none(), st.text(max_size=20), st.sampled_from(["Aranet4 1B5A0",
                                                                    "Aranet2 278F8",
                                                                    "Ruuvi 884F"]))


def _check(name: str, frame: Frame) -> None:
    sensor = plugins.sensor(name)
    assert {r.quantity for r in frame.readings} <= set(sensor.descriptor.quantities)
    assert frame.readings or frame.skip_reason or frame.kind != "data"
    codec = plugins.ble_codecs()[name]
    hash(codec.measurement_key(frame))


def test_the_built_in_ble_sensors_are_found() -> None:
    assert {"aranet4", "ruuvi"} <= set(BLE_SENSORS)


@pytest.mark.parametrize("name", BLE_SENSORS)
@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=64), advertised=NAMES)
def test_advert_decoder_takes_any_bytes(name: str, payload: bytes, advertised: str | None) -> None:
    codec = plugins.ble_codecs()[name]
    try:
        frame = codec.decode(payload, advertised)
    except BadPayload as exc:
        assert exc.reason
        return
    _check(name, frame)


@pytest.mark.parametrize("name", [n for n in BLE_SENSORS if plugins.ble_codecs()[n].gatt])
@settings(max_examples=300, deadline=None)
@given(record=st.binary(max_size=32))
def test_gatt_decoder_takes_any_bytes(name: str, record: bytes) -> None:
    gatt = plugins.ble_codecs()[name].gatt
    assert gatt is not None and gatt.characteristics
    try:
        frame = gatt.decode(record)
    except BadPayload as exc:
        assert exc.reason
        return
    _check(name, frame)
