"""Property tests for every stream decoder: never raise, never hang, always resync."""

from __future__ import annotations

import importlib
import struct
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge import plugins
from edge.codec import Frame, StreamDecoder
from edge.sensors.mhz19b import codec as mhz19b
from edge.sensors.ops243 import codec as ops243
from edge.sensors.pms5003 import codec as pms5003
from edge.sensors.scd30 import codec as scd30
from edge.sensors.sds011 import codec as sds011
from edge.sensors.sps30 import codec as sps30

from .conftest import hexbytes, load_vectors, serial_sensors


@st.composite
def _sds011(draw: st.DrawFn) -> tuple[bytes, dict[str, float]]:
    pm25 = draw(st.integers(1, 0xFFFF))
    pm10 = draw(st.integers(0, 0xFFFF))
    dev = draw(st.integers(0, 0xFFFF))
    return sds011.data_frame(pm25 / 10, pm10 / 10, dev), {"pm2_5": pm25 / 10, "pm10": pm10 / 10}


@st.composite
def _pms5003(draw: st.DrawFn) -> tuple[bytes, dict[str, float]]:
    codes = pms5003.DESCRIPTOR.quantities
    values = {q: float(draw(st.integers(0, 0xFFFF))) for q in codes}
    values["nc0_3"] = float(draw(st.integers(1, 0xFFFF)))  # keep the frame consistent
    return pms5003.data_frame(values), values


def _f32(x: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", x))[0])


_FLOAT = st.floats(0.0, 1e6, allow_nan=False, width=32)


@st.composite
def _sps30(draw: st.DrawFn) -> tuple[bytes, dict[str, float]]:
    values = {q: _f32(draw(_FLOAT)) for q in sps30.DESCRIPTOR.quantities}
    values["pm1"] = _f32(draw(st.floats(0.5, 1000.0, width=32)))  # not the all-zero warm-up
    return sps30.data_frame(values), values


@st.composite
def _mhz19b(draw: st.DrawFn) -> tuple[bytes, dict[str, float]]:
    co2 = draw(st.integers(1, 0xFFFF))
    return mhz19b.data_frame(co2, draw(st.integers(-40, 215)), draw(st.integers(0, 255))), {
        "co2": float(co2)
    }


@st.composite
def _scd30(draw: st.DrawFn) -> tuple[bytes, dict[str, float]]:
    values = {
        "co2": _f32(draw(st.floats(1.0, 40000.0, width=32))),
        "temperature": _f32(draw(st.floats(-40.0, 70.0, width=32))),
        "humidity": _f32(draw(st.floats(0.0, 100.0, width=32))),
    }
    return scd30.data_frame(values), values


@st.composite
def _ops243(draw: st.DrawFn) -> tuple[bytes, dict[str, float]]:
    """An object report preceded by the previous line's terminator (what resync relies on)."""
    speed = draw(st.floats(0.1, 250.0))
    direction = draw(st.sampled_from(["inbound", "outbound"]))
    line = ops243.object_report(speed, direction, draw(st.none() | st.floats(0, 2e9)))
    return b"\r\n" + line, {"speed": float(f"{speed:.1f}")}


Maker = st.SearchStrategy[tuple[bytes, dict[str, float]]]

# Value-range strategies written for some sensors; every other serial sensor in the registry is
# fuzzed with the data frames of its own vectors.json, so a new folder needs no edit here.
STRATEGIES: dict[str, Maker] = {
    "sds011": _sds011(),
    "pms5003": _pms5003(),
    "sps30": _sps30(),
    "mhz19b": _mhz19b(),
    "scd30": _scd30(),
    "ops243": _ops243(),
}
# Decoders that need an argument for the strategy above (the descriptor's factory otherwise).
DECODERS: dict[str, Callable[[], StreamDecoder]] = {
    "ops243": lambda: ops243.Ops243Decoder("kmh"),
}


def _vector_frames(sensor: str) -> list[tuple[bytes, dict[str, float]]]:
    """The vectors of one clean data frame with readings: bytes and the expected readings."""
    out = []
    for case in load_vectors(sensor)["frames"]:
        expect = case["expect"]
        if "bad" in case or len(expect) != 1 or expect[0]["kind"] != "data":
            continue
        if readings := expect[0].get("readings"):
            raw = case["text"].encode() if "text" in case else hexbytes(case["hex"])
            out.append((raw, {k: float(v) for k, v in readings.items()}))
    return out


def _decoder(sensor: str) -> StreamDecoder:
    factory = DECODERS.get(sensor, plugins.sensor(sensor).descriptor.decoder)
    return factory()


def _maker(sensor: str) -> Maker:
    if sensor in STRATEGIES:
        return STRATEGIES[sensor]
    frames = _vector_frames(sensor)
    assert frames, f"{sensor}: vectors.json has no clean data frame to fuzz with"
    return st.sampled_from(frames)


def _approx(sensor: str, expected: dict[str, float]) -> object:
    """Exact for the strategies; vectors record readings to 3 decimals (as test_vectors)."""
    if sensor in STRATEGIES:
        return pytest.approx(expected)
    return pytest.approx(expected, rel=1e-4, abs=1e-3)


SENSORS = serial_sensors()
_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _feed_chunked(dec: StreamDecoder, data: bytes, chunks: list[int]) -> list[Frame]:
    frames: list[Frame] = []
    pos = 0
    for size in chunks:
        frames += dec.feed(data[pos : pos + size])
        pos += size
    frames += dec.feed(data[pos:])
    return frames


def _readings(frame: Frame) -> dict[str, float]:
    return {r.quantity: r.value for r in frame.readings}


@pytest.mark.parametrize("sensor", SENSORS)
@_FUZZ
@given(data=st.binary(max_size=2048), chunks=st.lists(st.integers(1, 64), max_size=20))
def test_random_bytes_never_raise(sensor: str, data: bytes, chunks: list[int]) -> None:
    dec = _decoder(sensor)
    t0 = time.perf_counter()
    frames = _feed_chunked(dec, data, chunks)
    assert time.perf_counter() - t0 < 1.0
    assert dec.stats.frames_ok == len(frames)
    assert dec.stats.bytes_discarded <= len(data)


@pytest.mark.parametrize("sensor", SENSORS)
@_FUZZ
@given(
    data=st.data(),
    garbage=st.binary(max_size=300),
    chunks=st.lists(st.integers(1, 40), max_size=12),
)
def test_resync_after_garbage(
    sensor: str, data: st.DataObject, garbage: bytes, chunks: list[int]
) -> None:
    """A valid frame after arbitrary garbage is found.

    The frame is sent twice: garbage ending in a start marker plus bytes can, by a 1-in-65536
    chance, pair with the first copy's bytes into a checksum-valid false frame (true of any
    sync-word protocol); the decoder never skips past a start marker, so the second copy is
    always found.
    """
    frame, expected = data.draw(_maker(sensor))
    dec = _decoder(sensor)
    frames = _feed_chunked(dec, garbage + frame + frame, chunks)
    data_frames = [f for f in frames if f.kind == "data" and f.readings]
    assert data_frames, dec.stats
    got = _readings(data_frames[-1])
    assert got == _approx(sensor, expected)


@pytest.mark.parametrize("sensor", SENSORS)
@_FUZZ
@given(data=st.data(), cut=st.integers(1, 200))
def test_truncated_frame_then_valid_frame(sensor: str, data: st.DataObject, cut: int) -> None:
    """A truncated frame waits for bytes; the next real frame still decodes.

    (Sent twice for the same 1-in-65536 reason as in the resync test.)"""
    maker = _maker(sensor)
    first, _ = data.draw(maker)
    second, expected = data.draw(maker)
    cut = cut % (len(first) - 1) + 1
    dec = _decoder(sensor)
    assert dec.feed(first[:cut]) == []
    frames = dec.feed(second + second)
    assert frames and _readings(frames[-1]) == _approx(sensor, expected)


@pytest.mark.parametrize("sensor", SENSORS)
@_FUZZ
@given(data=st.data(), n=st.integers(1, 8))
def test_clean_stream_decodes_every_frame(sensor: str, data: st.DataObject, n: int) -> None:
    maker = _maker(sensor)
    pairs = [data.draw(maker) for _ in range(n)]
    dec = _decoder(sensor)
    frames = dec.feed(b"".join(p[0] for p in pairs))
    assert [_readings(f) for f in frames] == [_approx(sensor, p[1]) for p in pairs]
    assert dec.stats.frames_bad == 0


def _codec_with_parser(sensor: str) -> bool:
    module = importlib.import_module(plugins.sensor(sensor).descriptor.decoder.__module__)
    return "parse_command" in vars(module)


@pytest.mark.parametrize("sensor", [s for s in SENSORS if _codec_with_parser(s)])
@_FUZZ
@given(data=st.binary(max_size=64))
def test_command_parsers_never_raise(sensor: str, data: bytes) -> None:
    """What an emulator (or a sniffer) does with random host bytes: reject, never crash."""
    mod = importlib.import_module(plugins.sensor(sensor).descriptor.decoder.__module__)
    parsed = mod.parse_command(data)
    assert parsed is None or isinstance(parsed, mod.Command)


@_FUZZ
@given(data=st.binary(max_size=300), header=st.binary(min_size=1, max_size=3),
       length=st.integers(3, 20))
def test_split_fixed_is_bounded_and_lossless_for_commands(
    data: bytes, header: bytes, length: int
) -> None:
    from edge.emulation.base import split_fixed

    buf = bytearray(data)
    out = split_fixed(buf, header, max(length, len(header)))
    assert all(c.startswith(header) and len(c) == max(length, len(header)) for c in out)
    assert len(buf) <= len(data)
