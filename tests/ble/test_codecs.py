"""Ruuvi and Aranet4 decoders against every vector in edge/sensors/<name>/vectors.json, plus property tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.codec import Frame
from edge.plugins import sensor
from edge.quantities import QUANTITIES
from edge.sensors.aranet4 import codec as aranet4
from edge.sensors.ruuvi import codec as ruuvi

SENSORS = Path(__file__).resolve().parents[2] / "edge" / "sensors"
RUUVI = json.loads((SENSORS / "ruuvi" / "vectors.json").read_text())
ARANET = json.loads((SENSORS / "aranet4" / "vectors.json").read_text())


def _check(frame: Frame, case: dict[str, Any]) -> None:
    got = {r.quantity: r.value for r in frame.readings}
    assert got == pytest.approx({k: float(v) for k, v in case["readings"].items()}, abs=1e-9)
    assert len(got) == len(frame.readings), "a quantity reported twice"
    info = json.loads(json.dumps(frame.info))  # tuples -> lists, as in the JSON file
    for key, value in case["info"].items():
        assert info[key] == value, key
    for key in case.get("absent_info", []):
        assert key not in info, key
    assert frame.skip_reason == case["skip_reason"]
    assert frame.kind == "data"
    assert all(q in QUANTITIES for q in got)


@pytest.mark.parametrize("case", RUUVI["cases"], ids=lambda c: c["name"])
def test_ruuvi_vectors(case: dict[str, Any]) -> None:
    _check(ruuvi.decode(bytes.fromhex(case["hex"])), case)


@pytest.mark.parametrize("case", RUUVI["bad"], ids=lambda c: c["name"])
def test_ruuvi_bad_payloads_are_counted(case: dict[str, Any]) -> None:
    decoder = ruuvi.RuuviDecoder()
    assert decoder.feed(bytes.fromhex(case["hex"])) == []
    assert decoder.stats.bad == {case["reason"]: 1}


@pytest.mark.parametrize("case", ARANET["advertisements"], ids=lambda c: c["name"])
def test_aranet4_advert_vectors(case: dict[str, Any]) -> None:
    _check(aranet4.decode_advertisement(bytes.fromhex(case["hex"]), case.get("name")), case)


@pytest.mark.parametrize("case", ARANET["gatt"], ids=lambda c: c["name"])
def test_aranet4_gatt_vectors(case: dict[str, Any]) -> None:
    _check(aranet4.decode_readings(bytes.fromhex(case["hex"])), case)


@pytest.mark.parametrize("case", ARANET["bad"], ids=lambda c: c["name"])
def test_aranet4_bad_payloads(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["hex"])
    if case["kind"] == "advertisement":
        if "name" not in case:  # the stream decoder sees bytes only
            decoder = aranet4.Aranet4Decoder()
            assert decoder.feed(data) == []
            assert decoder.stats.bad == {case["reason"]: 1}
        with pytest.raises(aranet4.BadPayload) as err:
            aranet4.decode_advertisement(data, case.get("name"))
        assert err.value.reason == case["reason"]
    else:
        with pytest.raises(aranet4.BadPayload) as err:
            aranet4.decode_readings(data)
        assert err.value.reason == case["reason"]


def test_decoder_stats_count_ok_and_skipped() -> None:
    decoder = ruuvi.RuuviDecoder()
    for case in RUUVI["cases"]:
        decoder.feed(bytes.fromhex(case["hex"]))
    skipped = sum(1 for c in RUUVI["cases"] if c["skip_reason"])
    assert decoder.stats.frames_skipped == skipped
    assert decoder.stats.frames_ok == len(RUUVI["cases"]) - skipped


def test_descriptors_registered() -> None:
    for name, module in (("ruuvi", ruuvi), ("aranet4", aranet4)):
        desc = sensor(name).descriptor
        assert desc is module.DESCRIPTOR
        assert desc.interface == "ble"
        assert all(q in QUANTITIES for q in desc.quantities)
        assert desc.decoder().feed(b"") == []


_formats = st.sampled_from([0x03, 0x05, 0x06, 0xE1])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_ruuvi_random_bytes_never_raise(data: bytes) -> None:
    frames = ruuvi.RuuviDecoder().feed(data)
    assert len(frames) <= 1


@settings(max_examples=400, deadline=None)
@given(_formats, st.binary(min_size=12, max_size=45))
def test_ruuvi_random_payloads_decode_within_ranges(fmt: int, body: bytes) -> None:
    try:
        frame = ruuvi.decode(bytes([fmt]) + body)
    except ruuvi.BadPayload as exc:
        assert exc.reason == "short"
        return
    desc = ruuvi.DESCRIPTOR
    for r in frame.readings:
        assert r.quantity in desc.quantities
        assert r.value == r.value  # no NaN
    got = {r.quantity: r.value for r in frame.readings}
    assert -163.84 <= got.get("temperature", 0) <= 163.84
    assert 50000 <= got.get("pressure", 50000) <= 115535
    assert 0 <= got.get("voc_index", 0) <= 510


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=40))
def test_aranet4_random_bytes_never_raise(data: bytes) -> None:
    assert len(aranet4.Aranet4Decoder().feed(data)) <= 1
    try:
        frame = aranet4.decode_readings(data)
    except aranet4.BadPayload:
        return
    assert {r.quantity for r in frame.readings} <= set(aranet4.DESCRIPTOR.quantities)
