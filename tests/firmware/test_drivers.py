"""Sensor drivers of the firmware: BME280 compensation, PM frame parsers, radar lines.

Each check runs the firmware module under real MicroPython; the BME280 maths is also checked
under CPython against the datasheet's worked example and an independent float implementation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.micropython_vm import MicroPythonVM

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hil" / "mp"))
import emusensors  # noqa: E402

from firmware import bme280  # noqa: E402

CAL_A, CAL_B = emusensors.calib_blocks(emusensors.CAL)


def test_bme280_datasheet_worked_example() -> None:
    """BMP280 datasheet example (same T/P formulas as BME280): 25.08 °C, 100653.27 Pa."""
    cal = bme280.Calibration(CAL_A, CAL_B)
    tf = bme280.t_fine(cal, 519888)
    assert tf == 128422
    assert bme280.temperature_centi(tf) == 2508
    assert bme280.pressure_q24_8(cal, tf, 415148) / 256 == pytest.approx(100653.27, abs=0.05)


def test_calibration_block_parsing_incl_packed_h4_h5() -> None:
    cal = bme280.Calibration(CAL_A, CAL_B)
    c = emusensors.CAL
    assert (c["T1"], c["T2"], c["T3"], c["P9"]) == (cal.T1, cal.T2, cal.T3, cal.P9)
    assert (
        c["H1"], c["H2"], c["H3"], c["H4"], c["H5"], c["H6"]) == (cal.H1, cal.H2, cal.H3, cal.H4, cal.H5, cal.H6)
    neg = dict(c, H4=-100, H5=-7, H6=-3)
    a, b = emusensors.calib_blocks(neg)
    cal2 = bme280.Calibration(a, b)
    assert (cal2.H4, cal2.H5, cal2.H6) == (-100, -7, -3)


@settings(max_examples=150, deadline=None)
@given(t=st.floats(-40, 85), rh=st.floats(0, 100), p=st.floats(30000, 110000))
def test_integer_compensation_matches_float_formulas(t: float, rh: float, p: float) -> None:
    """Firmware (datasheet integer formulas) vs emulator (datasheet float formulas)."""
    c = emusensors.CAL
    cal = bme280.Calibration(CAL_A, CAL_B)
    adc_t, adc_h, adc_p = emusensors.raw_for(c, t, rh, p)
    tf = bme280.t_fine(cal, adc_t)
    assert bme280.temperature_centi(tf) / 100 == pytest.approx(t, abs=0.02)
    assert bme280.pressure_q24_8(cal, tf, adc_p) / 256 == pytest.approx(p, abs=1.5)
    assert bme280.humidity_q22_10(cal, tf, adc_h) / 1024 == pytest.approx(rh, abs=0.1)


def test_bme280_driver_under_micropython(vm: MicroPythonVM) -> None:
    got = vm.call_json(
        "[b.read() for b in [bme280.BME280(bus, 0x76)] if not b.start()][0]",
        "import bme280, fakehw, emusensors\n"
        "bus = fakehw.I2C()\n"
        "bus.devices[0x76] = emusensors.BME280(-12.25, 83.5, 98765.0)\n")
    t, rh, p = got
    assert t == pytest.approx(-12.25, abs=0.02)
    assert rh == pytest.approx(83.5, abs=0.1)
    assert p == pytest.approx(98765.0, abs=1.5)
    ex = vm.call_json("int(bme280.pressure_q24_8(bme280.Calibration(*emusensors.calib_blocks("
                      "emusensors.CAL)), 128422, 415148))")
    cal = bme280.Calibration(CAL_A, CAL_B)
    assert ex == bme280.pressure_q24_8(cal, 128422, 415148)  # same integer as under CPython


def test_bme280_missing_chip_raises(vm: MicroPythonVM) -> None:
    out = vm.call_json(
        "_probe()",
        "import bme280, fakehw, emusensors\n"
        "def _probe():\n"
        "    bus = fakehw.I2C()\n"
        "    try:\n"
        "        bme280.BME280(bus, 0x77)\n"
        "    except OSError as e:\n"
        "        return 'OSError'\n"
        "    return 'ok'\n")
    assert out == "OSError"


PM_SETUP = (
    "import pmsensor, binascii\n"
    "def _feed(name, h):\n"
    "    s = pmsensor.make(name)\n"
    "    got = []\n"
    "    for b in binascii.unhexlify(h):\n"
    "        if s.feed_byte(b):\n"
    "            got.append([v / s.divisor for v in s.values])\n"
    "    return [got, s.bad]\n"
)


def test_sds011_reference_frame_and_garbage(vm: MicroPythonVM) -> None:
    real = "aac00600060058d93dab"  # real capture: PM2.5 0.6, PM10 0.6
    bad_cs = "aac00600060058d93eab"
    warmup = "aac00000000058d931ab"
    got, bad = vm.call_json(f"_feed('sds011', {'ff00aa' + real + bad_cs + warmup + real!r})",
                            PM_SETUP)
    assert got == [[0.6, 0.6], [0.6, 0.6]]
    assert bad == 1


def test_pms5003_reference_frame(vm: MicroPythonVM) -> None:
    frame = ("424d001c0000000800080000000800080" "0d20046002d001e00000000970002c5")
    got, bad = vm.call_json(f"_feed('pms5003', {'4d42' + frame + frame[:-2] + '00'!r})", PM_SETUP)
    assert got == [[0, 8, 8]]
    assert bad == 1


def test_pm_command_bytes() -> None:
    sys.path.insert(0, str(ROOT / "firmware"))
    import pmsensor

    assert pmsensor.SDS_SLEEP.hex() == "aab406010000000000000000000000ffff05ab"
    assert pmsensor.SDS_WAKE.hex() == "aab406010100000000000000000000ffff06ab"
    assert pmsensor.PMS_SLEEP.hex() == "424de400000173"
    assert pmsensor.PMS_WAKE.hex() == "424de400010174"
    for cmd in (pmsensor.SDS_SLEEP, pmsensor.SDS_WAKE, pmsensor.SDS_ACTIVE):
        assert sum(cmd[2:17]) & 0xFF == cmd[17]


def test_radar_lines(vm: MicroPythonVM) -> None:
    text = '12.5\r\n-30.0\n{"Units":"km-h"}\r\nabc\r\n{"speed":88.0,"direction":"outbound"}\r\n\r\n'
    got = vm.call_json(
        "[sum(1 for b in " + repr(text.encode()) + " if c.feed_byte(b, 5000)), c.bad,"
        " c.records(0, 0, 60000, 1.0)]",
        "import traffic\nc = traffic.Counter('lft')")
    reports, bad, records = got
    values = {r[1]: r[2] for r in records}
    assert (reports, bad) == (3, 1)
    # same-side reports within 1 s are one object: 12.5 (lft); -30 and 88 outbound merge (rgt)
    assert values["traffic_count"] == 2
    assert (values["bike_lft"], values["car_rgt"]) == (1, 1)
    assert values["car_speed_hist_80"] == 100.0
    assert values["v85"] == 88.0
