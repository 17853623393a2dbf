"""Every reference vector in ``edge/sensors/*/vectors.json`` decodes (or encodes) as recorded."""

from __future__ import annotations

import importlib
import math
from typing import Any

import pytest

from edge import plugins
from edge.codec import Frame
from edge.quantities import QUANTITIES

from .conftest import hexbytes, load_vectors, sensor_folder, serial_sensors

# Every serial sensor in the registry: a new folder is tested without an edit here. (BLE
# payload vectors have their own format and are checked by tests/ble/test_codecs.py.)
SENSORS = serial_sensors()


def _cases(section: str) -> list[Any]:
    out = []
    for sensor in SENSORS:
        data = load_vectors(sensor)
        for case in data.get(section, []):
            out.append(pytest.param(data, case, id=f"{sensor}:{case['name']}"))
    return out


def _check_frame(frame: Frame, expect: dict[str, Any]) -> None:
    assert frame.kind == expect["kind"]
    assert frame.skip_reason == expect.get("skip_reason")
    got = {r.quantity: r.value for r in frame.readings}
    want = expect.get("readings", {})
    assert set(got) == set(want)
    for code, value in want.items():
        assert math.isclose(got[code], value, rel_tol=1e-4, abs_tol=1e-3), code
    for key, value in expect.get("info", {}).items():
        assert frame.info[key] == value, key


@pytest.mark.parametrize(("data", "case"), _cases("frames"))
def test_frame_vector(data: dict[str, Any], case: dict[str, Any]) -> None:
    mod = importlib.import_module(data["module"])
    raw = case["text"].encode() if "text" in case else hexbytes(case["hex"])
    if "text" in case and "hex" in case:
        assert hexbytes(case["hex"]) == raw
    for chunking in (len(raw), 1, 3):  # whole, byte by byte, odd chunks: same result
        dec = mod.DESCRIPTOR.decoder()
        frames: list[Frame] = []
        for i in range(0, len(raw), chunking):
            frames += dec.feed(raw[i : i + chunking])
        assert len(frames) == len(case["expect"]), frames
        for frame, expect in zip(frames, case["expect"], strict=True):
            _check_frame(frame, expect)
        for reason, count in case.get("bad", {}).items():
            assert dec.stats.bad[reason] == count, dec.stats
        if "bad" not in case:
            assert dec.stats.frames_bad == 0, dec.stats


@pytest.mark.parametrize(("data", "case"), _cases("commands"))
def test_command_vector(data: dict[str, Any], case: dict[str, Any]) -> None:
    mod = importlib.import_module(data["module"])
    built = getattr(mod, case["call"])(**case["args"])
    assert built.hex(" ") == hexbytes(case["hex"]).hex(" ")
    if hasattr(mod, "parse_command"):
        assert mod.parse_command(built.lstrip(b"\xff") if data["sensor"] == "sps30" else built)


@pytest.mark.parametrize("sensor", SENSORS)
def test_every_serial_sensor_has_vectors_with_a_data_frame(sensor: str) -> None:
    assert (sensor_folder(sensor) / "vectors.json").is_file(), f"{sensor}: no vectors.json"
    data = load_vectors(sensor)
    assert data["sensor"] == sensor
    assert importlib.import_module(data["module"]).DESCRIPTOR is plugins.sensor(sensor).descriptor
    assert set(data["sources"]) >= {case["source"] for case in data["frames"]}, "unattributed"
    assert any(
        len(case["expect"]) == 1 and case["expect"][0].get("readings") for case in data["frames"]
    ), f"{sensor}: no vector of a data frame with readings"


@pytest.mark.parametrize("sensor", SENSORS)
def test_descriptor(sensor: str) -> None:
    desc = plugins.sensor(sensor).descriptor
    assert desc.name == sensor
    for code in desc.quantities:
        assert code in QUANTITIES
    assert desc.decoder().stats.frames_ok == 0
    if desc.interface == "serial":
        assert desc.serial is not None


def test_scd30_expect_names_short_replies() -> None:
    from edge.sensors.scd30 import codec as scd30

    dec = scd30.Scd30Decoder()
    dec.expect(scd30.REG_FIRMWARE)
    (frame,) = dec.feed(scd30.read_reply(bytes([3, 0x42])))
    assert frame.kind == "version" and frame.info["firmware"] == "3.66"
    dec.expect(scd30.REG_DATA_READY)
    (frame,) = dec.feed(scd30.read_reply(b"\x00\x01"))
    assert frame.kind == "data_ready" and frame.info["ready"] is True
    (frame,) = dec.feed(scd30.read_reply(b"\x00\x01"))  # expectation is used once
    assert frame.kind == "register"


def test_fast_reading_constructor_builds_ordinary_frozen_readings() -> None:
    import dataclasses

    from edge.codec import Reading
    from edge.sensors.pms5003 import codec as pms5003
    from edge.sensors.sps30 import codec as sps30

    for make in (pms5003._new_reading, sps30._reading):
        r = make("pm2_5", 12.5)
        assert type(r) is Reading and r == Reading("pm2_5", 12.5)
        assert hash(r) == hash(Reading("pm2_5", 12.5)) and repr(r) == repr(Reading("pm2_5", 12.5))
        with pytest.raises(dataclasses.FrozenInstanceError):
            r.value = 1.0  # type: ignore[misc]
