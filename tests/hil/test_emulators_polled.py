"""Emulators of polled sensors (every one in the registry for the generic tests; SPS30,
MH-Z19B, SCD30 and OPS243 specifics) through a real pseudo-terminal and pyserial."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
import serial
import serial_asyncio_fast

from edge.codec import Frame, StreamDecoder
from edge.emulation.base import SensorEmulator
from edge.sensors.mhz19b import codec as mhz19b
from edge.sensors.ops243 import codec as ops243
from edge.sensors.ops243.traffic import TrafficSettings, aggregate, detection_from_frame
from edge.sensors.scd30 import codec as scd30
from edge.sensors.sps30 import codec as sps30

from .conftest import open_port, read_frames, values
from .registry import polled, sleepers

Factory = Callable[..., SensorEmulator]


def _ask(port: serial.Serial, dec: StreamDecoder, request: bytes,
         kind: str | None = None) -> list[Frame]:
    """Send a request and return the decoded reply frames (first reply, or first of ``kind``)."""
    port.write(request)
    return read_frames(port, dec, lambda f: any(kind is None or x.kind == kind for x in f),
                       timeout=2.0)


@pytest.mark.parametrize("sensor", polled())
def test_polled_values_arrive_exactly_as_sent(emulator: Factory, sensor: str) -> None:
    emu = emulator(sensor, interval_s=0.01)
    commands = emu.descriptor.commands
    assert commands.poll is not None
    with open_port(emu) as port:
        dec = emu.descriptor.decoder()
        for cmd in commands.start:
            port.write(cmd)
        time.sleep(0.05)
        got: list[dict[str, float]] = []
        deadline = time.monotonic() + 5
        while len(got) < 5 and time.monotonic() < deadline:
            time.sleep(0.012)
            frames = _ask(port, dec, commands.poll, "data")
            got += [v for v in values(frames) if v]
    sent = [s.values for s in emu.sent_values if s.values]
    assert len(got) >= 5
    assert got == sent[: len(got)]
    assert dec.stats.frames_bad == 0


def test_sps30_states_and_replies(emulator: Factory) -> None:
    emu = emulator("sps30", interval_s=0.1)
    with open_port(emu) as port:
        dec = sps30.Sps30Decoder()
        (err,) = _ask(port, dec, sps30.cmd_read_measured_values())
        assert err.kind == "error" and err.info["state"] == 0x43  # idle: not allowed
        (sn,) = _ask(port, dec, sps30.cmd_serial_number())
        assert sn.info["serial"] == "8A4C2F1E0D3B5A69"
        (ver,) = _ask(port, dec, sps30.cmd_version())
        assert ver.info["firmware"] == "2.2"
        assert _ask(port, dec, sps30.cmd_start_measurement())[0].kind == "start"
        (nodata,) = _ask(port, dec, sps30.cmd_read_measured_values())
        assert nodata.skip_reason == "no-new-data"
        time.sleep(0.12)
        (data,) = _ask(port, dec, sps30.cmd_read_measured_values())
        assert data.readings and values([data]) == [emu.sent_values[-1].values]
        assert _ask(port, dec, sps30.cmd_fan_cleaning())[0].kind == "fan_cleaning"
        assert _ask(port, dec, sps30.cmd_sleep())[0].kind == "error"  # not while measuring
        assert _ask(port, dec, sps30.cmd_stop_measurement())[0].kind == "stop"
        assert _ask(port, dec, sps30.cmd_sleep())[0].kind == "sleep"
        port.write(sps30.cmd_version())  # asleep: UART off, no answer
        time.sleep(0.1)
        assert dec.feed(port.read(256)) == []
        assert _ask(port, dec, sps30.cmd_wake())[0].kind == "wake"
        (status,) = _ask(port, dec, sps30.cmd_device_status())
        assert status.info["status"] == 0 and status.info["fan_error"] is False
    assert emu.fan_cleanings == 1


def test_mhz19b_preheat_abc_and_technician_commands(emulator: Factory) -> None:
    emu = emulator("mhz19b", warmup_frames=2)
    with open_port(emu) as port:
        dec = mhz19b.Mhz19bDecoder()
        first = [_ask(port, dec, mhz19b.cmd_read())[0] for _ in range(3)]
        assert [f.skip_reason for f in first] == ["warm-up", "warm-up", None]
        assert 300 < first[2].readings[0].value < 1000
        port.write(mhz19b.cmd_abc(on=False))
        (status,) = _ask(port, dec, mhz19b.cmd_abc_status())
        assert status.info["abc"] is False
        port.write(mhz19b.technician_zero_calibration())
        port.write(mhz19b.technician_span_calibration(2000))
        _ask(port, dec, mhz19b.cmd_read())
    assert emu.calibrations == ["zero", "span 2000"]


def test_scd30_modbus_session(emulator: Factory) -> None:
    emu = emulator("scd30", interval_s=0.5)
    with open_port(emu) as port:
        dec = scd30.Scd30Decoder()
        dec.expect(scd30.REG_FIRMWARE)
        (fw,) = _ask(port, dec, scd30.cmd_read_firmware())
        assert fw.kind == "version" and fw.info["firmware"] == "3.66"
        (before,) = _ask(port, dec, scd30.cmd_read_measurement())
        assert before.skip_reason == "warm-up"
        (echo,) = _ask(port, dec, scd30.cmd_start_continuous(1013))
        assert echo.kind == "start" and echo.info["value"] == 1013
        assert emu.pressure_mbar == 1013
        time.sleep(0.52)
        dec.expect(scd30.REG_DATA_READY)
        (ready,) = _ask(port, dec, scd30.cmd_data_ready())
        assert ready.info["ready"] is True
        (meas,) = _ask(port, dec, scd30.cmd_read_measurement())
        v = values([meas])[0]
        assert v == emu.sent_values[-1].values
        assert 380 < v["co2"] < 1000 and -10 < v["temperature"] < 40 and 0 < v["humidity"] <= 100
        (again,) = _ask(port, dec, scd30.cmd_read_measurement())  # not ready: same value
        assert values([again])[0] == v
        (exc,) = _ask(port, dec, scd30.read_registers(0x0100, 1))
        assert exc.kind == "error" and exc.info["code"] == 2


def test_ops243_objects_commands_and_traffic(emulator: Factory) -> None:
    emu = emulator("ops243", interval_s=0.01, seed=3)
    with open_port(emu) as port:
        dec = ops243.Ops243Decoder()
        frames = read_frames(port, dec, lambda f: len(f) >= 150, timeout=8)
        (units,) = [f for f in _ask(port, dec, ops243.cmd_units("mph"), "units")
                    if f.kind == "units"]
        assert units.info["units"] == "mph" and emu.units == "mph"
        port.write(ops243.cmd_object_reports(False))
        time.sleep(0.05)
        n = len(emu.sent_values)
        count = [f for f in _ask(port, dec, ops243.cmd_object_count(), "count")
                 if f.kind == "count"]
        assert count and count[0].info["count"] == emu.object_count
        time.sleep(0.1)
        assert len(emu.sent_values) == n  # object reports off
    objects = [f for f in frames if f.kind == "data"]
    assert values(objects) == [s.values for s in emu.sent_values[: len(objects)]]
    dets = [d for f in objects if (d := detection_from_frame(f, 1.0)) is not None]
    iv = aggregate(dets, 0.0, TrafficSettings(interval_s=60, merge_gap_s=0))
    truth = [cls for cls, _, _ in emu.truth[: len(objects)]]
    assert iv.counts["traffic_count"] == len(objects)
    # speed bands mostly separate walkers (a jogger is a "bike"), never by construction
    assert abs(iv.counts["pedestrian"] - truth.count("pedestrian")) <= 2
    # lorries are indistinguishable from cars without a length: counted as cars
    assert iv.counts["heavy"] == 0
    assert iv.counts["car"] >= truth.count("car")


@pytest.mark.parametrize("sensor", polled())
def test_polled_faults_counted_and_survived(emulator: Factory, sensor: str) -> None:
    emu = emulator(sensor, interval_s=0.005)
    commands = emu.descriptor.commands
    assert commands.poll is not None
    with open_port(emu) as port:
        dec = emu.descriptor.decoder()
        for cmd in commands.start:
            port.write(cmd)
        time.sleep(0.05)
        read_frames(port, dec, lambda f: False, timeout=0.1)
        emu.inject_bad_checksum()
        port.write(commands.poll)
        time.sleep(0.05)
        emu.inject_garbage(b"\x00\x13garbage\x11")
        time.sleep(0.05)
        emu.inject_truncated()
        port.write(commands.poll)
        time.sleep(0.05)
        good = []
        for _ in range(3):
            time.sleep(0.01)
            good += [f for f in _ask(port, dec, commands.poll, "data") if f.readings]
        assert good
        assert dec.stats.frames_bad >= 2
        assert [f.kind for f in emu.faults] == ["checksum", "garbage", "truncated"]


async def test_asyncio_polling_sps30(emulator: Factory) -> None:
    emu = emulator("sps30", interval_s=0.01)
    reader, writer = await serial_asyncio_fast.open_serial_connection(url=emu.port,
                                                                      baudrate=115200)
    try:
        dec = sps30.Sps30Decoder()
        for cmd in sps30.DESCRIPTOR.commands.start:
            writer.write(cmd)
        got: list[dict[str, float]] = []
        async with asyncio.timeout(5):
            while len(got) < 3:
                await asyncio.sleep(0.015)
                writer.write(sps30.DESCRIPTOR.commands.poll)
                frames: list[Frame] = []
                while not any(f.kind == "data" for f in frames):
                    frames += dec.feed(await reader.read(256))
                got += [v for v in values(frames) if v]
        assert got == [s.values for s in emu.sent_values if s.values][:3]
    finally:
        writer.close()


@pytest.mark.parametrize("sensor", sleepers())
def test_duty_cycle_commands_stop_and_resume_data(emulator: Factory, sensor: str) -> None:
    emu = emulator(sensor, interval_s=0.01)
    commands = emu.descriptor.commands

    def data_within(port: serial.Serial, dec: StreamDecoder, seconds: float) -> int:
        n = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if commands.poll:
                port.write(commands.poll)
            time.sleep(0.015)
            n += sum(1 for f in dec.feed(port.read(4096)) if f.kind == "data" and f.readings)
        return n

    with open_port(emu, timeout=0) as port:
        dec = emu.descriptor.decoder()
        for cmd in commands.start:
            port.write(cmd)
        assert data_within(port, dec, 0.3) > 0
        for cmd in commands.sleep:
            port.write(cmd)
            time.sleep(0.02)
        time.sleep(0.05)
        port.reset_input_buffer()
        asleep_from = len(emu.sent_values)
        last = emu.sent_values[-1].values
        data_within(port, dec, 0.3)
        # no new measurement: silence, or a stopped sensor (SCD30) repeating its last value
        assert all(s.values == last for s in emu.sent_values[asleep_from:])
        for cmd in commands.wake:
            port.write(cmd)
            time.sleep(0.02)
        assert data_within(port, dec, 0.5) > 0
        assert any(s.values != last for s in emu.sent_values[asleep_from:])
