"""Cubic PM1006 codec, beyond the generic vector and fuzz tests: properties of its frame
layout, 10^4 random inputs, config validation of its options and its place in `duet-edge
sensors`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.config import ConfigError, parse_config
from edge.sensors.pm1006 import codec

DUET = str(Path(sys.executable).with_name("duet-edge"))


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=512), chunks=st.lists(st.integers(1, 48), max_size=12))
def test_ten_thousand_random_inputs_never_raise(data: bytes, chunks: list[int]) -> None:
    dec = codec.Pm1006Decoder()
    frames = []
    pos = 0
    t0 = time.perf_counter()
    for size in chunks:
        frames += dec.feed(data[pos : pos + size])
        pos += size
    frames += dec.feed(data[pos:])
    assert time.perf_counter() - t0 < 1.0
    assert dec.stats.frames_ok == len(frames)
    assert dec.stats.bytes_discarded <= len(data)
    for frame in frames:  # anything returned is a well-formed reply
        assert frame.kind == "data" and [r.quantity for r in frame.readings] == ["pm2_5"]
        assert 0 <= frame.readings[0].value <= 0xFFFF


@settings(max_examples=2000, deadline=None)
@given(pm=st.integers(0, 0xFFFF), df=st.binary(min_size=16, max_size=16))
def test_any_reply_decodes_to_its_pm25_and_data_bytes(pm: int, df: bytes) -> None:
    frame = codec.reply_frame(pm, df)
    assert len(frame) == codec.FRAME_LEN and sum(frame) % 256 == 0
    (decoded,) = codec.Pm1006Decoder().feed(frame)
    assert decoded.readings[0].value == pm
    assert decoded.info["df"] == (df[:2] + pm.to_bytes(2, "big") + df[4:]).hex()


@settings(max_examples=500, deadline=None)
@given(values=st.lists(st.integers(0, 1000), min_size=1, max_size=8))
def test_replies_between_the_vindriktning_requests_all_decode(values: list[int]) -> None:
    """A tap on both wires sees the IKEA requests too: they never hide a reply."""
    line = b"".join(codec.cmd_read_pm() + codec.reply_frame(v) for v in values)
    dec = codec.Pm1006Decoder()
    assert [f.readings[0].value for f in dec.feed(line)] == values


@settings(max_examples=500, deadline=None)
@given(cmd=st.integers(0, 255), data=st.binary(max_size=codec.MAX_REQUEST_LEN - 1))
def test_requests_round_trip(cmd: int, data: bytes) -> None:
    raw = codec.request(cmd, data)
    assert sum(raw) % 256 == 0
    assert codec.parse_command(raw) == codec.Command(cmd, data)
    assert codec.parse_command(raw[:-1]) is None
    assert codec.parse_command(raw[:-1] + bytes([raw[-1] ^ 1])) is None


def test_builders_refuse_impossible_frames() -> None:
    with pytest.raises(ValueError, match="16 data bytes"):
        codec.reply_frame(1, b"\x00")
    with pytest.raises(ValueError, match="at most"):
        codec.request(0x0B, bytes(codec.MAX_REQUEST_LEN))
    assert codec.reply_frame(70_000)[5:7] == b"\xff\xff"  # clamped, never a wrong number


SOURCE = """
[gateway]
id = "gw-vindriktning"
[[sources]]
name = "living-room"
type = "pm1006"
port = "/dev/ttyUSB0"
{extra}
"""


def test_config_accepts_pm1006_and_its_options() -> None:
    config = parse_config(SOURCE.format(extra='options = { polled_by = "vindriktning" }'))
    (source,) = config.sources
    assert source.type == "pm1006" and source.options == {"polled_by": "vindriktning"}
    assert parse_config(SOURCE.format(extra="")).sources[0].type == "pm1006"


def test_config_refuses_a_bad_option_naming_key_and_choices() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(SOURCE.format(extra='options = { polled_by = "ikea", colour = 1 }'))
    text = str(err.value)
    assert "options.polled_by" in text and "'gateway' or 'vindriktning'" in text
    assert "options.colour" in text


def test_duet_edge_sensors_lists_pm1006() -> None:
    result = subprocess.run([DUET, "sensors", "--json"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    (row,) = [r for r in json.loads(result.stdout)["sensors"] if r["type"] == "pm1006"]
    assert row["manufacturer"] == "Cubic" and row["model"] == "PM1006"
    assert row["quantities"] == [{"code": "pm2_5", "unit": "ug/m3"}]
    assert row["probe"] == "11 02 0b 01 e1" and row["emulator"] is True
    assert row["options"]["polled_by"]["default"] == "gateway"
    assert row["options"]["polled_by"]["enum"] == ["gateway", "vindriktning"]
