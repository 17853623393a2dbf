"""Decoder inputs the fault campaign found (issue 12): each once crashed or stalled a decoder."""

from __future__ import annotations

from edge.sensors.ops243 import codec as ops243
from edge.sensors.scd30 import codec as scd30

SCD30_MEASUREMENT = bytes.fromhex("61 03 0c 43 db 8c 2e 41 d9 e7 ff 42 43 3a 1b 50 07")


def test_ops243_huge_json_integer_is_a_bad_line_not_an_overflow() -> None:
    decoder = ops243.Ops243Decoder()
    for key in ("speed", "DetectedObjectVelocity"):
        assert decoder.feed(b'{"%s":%s}\r\n' % (key.encode(), b"9" * 309)) == []
    assert decoder.stats.bad["speed"] == 2
    good = decoder.feed(b'{"speed":"12.5","direction":"inbound"}\r\n')
    assert len(good) == 1 and good[0].readings  # the stream goes on


def test_ops243_absurdly_nested_json_is_a_bad_line() -> None:
    decoder = ops243.Ops243Decoder()
    nested = b'{"speed":' + b"[" * 3000 + b"1" + b"]" * 3000 + b"}\r\n"
    assert decoder.feed(nested) == []
    assert decoder.stats.frames_bad == 1


def test_scd30_false_header_does_not_hold_good_frames_back() -> None:
    """0x61 0x03 with a large byte count in noise: the next valid frames come out at once."""
    decoder = scd30.Scd30Decoder()
    frames = decoder.feed(bytes([0x61, 0x03, 0xF0]))
    for _ in range(14):
        frames += decoder.feed(SCD30_MEASUREMENT)
        assert frames and frames[-1].readings, "a good frame was held back"
    assert len(frames) == 14
    assert decoder.stats.bad["header"] == 1


def test_the_decoder_fuzz_harness_finds_no_escape() -> None:
    """A short run of bench/fuzz_decoders.py (the full run feeds 10^5 inputs per decoder)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "fuzz_decoders.py"
    spec = importlib.util.spec_from_file_location("fuzz_decoders", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert all(module.seed_frames(name) for name in ("sds011", "ops243", "ruuvi", "aranet4"))
    assert module.main(["--n", "3000", "--seed", "7"]) == 0
