"""Emulators of sensors that talk unprompted (every one in the registry for the generic tests;
SDS011 and PMS5003 specifics) through a real pseudo-terminal and pyserial."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import pytest
import serial
import serial_asyncio_fast

from edge.emulation.base import SensorEmulator
from edge.sensors.pms5003 import codec as pms5003
from edge.sensors.sds011 import codec as sds011

from .conftest import open_port, read_frames, values
from .registry import streaming

Factory = Callable[..., SensorEmulator]


def _data(frames: list) -> list:
    return [f for f in frames if f.kind == "data"]


@pytest.mark.parametrize("sensor", streaming())
def test_stream_arrives_exactly_as_sent(emulator: Factory, sensor: str) -> None:
    emu = emulator(sensor)
    with open_port(emu) as port:
        dec = emu.descriptor.decoder()
        frames = read_frames(port, dec, lambda f: len(_data(f)) >= 10)
    got = values(frames)
    sent = [s.values for s in emu.sent_values]
    assert len(got) >= 10
    assert got == sent[: len(got)]
    assert dec.stats.frames_bad == 0


def test_series_is_plausible(emulator: Factory) -> None:
    emu = emulator("pms5003", interval_s=0.005)
    sent = emu.wait_sent(0)  # nothing is sent before a client opens the port
    assert sent == []
    with open_port(emu):
        sent = emu.wait_sent(40)
    assert len(sent) >= 40
    for s in sent:
        v = s.values
        assert 0 <= v["pm1"] <= v["pm2_5"] <= v["pm10"]
        assert v["nc0_3"] >= v["nc0_5"] >= v["nc1"]
    assert len({s.values["pm2_5"] for s in sent}) > 3  # noisy, not constant


def test_sds011_sleep_wake_and_replies(emulator: Factory) -> None:
    emu = emulator("sds011", warmup_frames=2)
    with open_port(emu) as port:
        dec = sds011.Sds011Decoder()
        frames = read_frames(port, dec, lambda f: len(_data(f)) >= 4)
        assert [f.skip_reason for f in _data(frames)[:2]] == ["warm-up", "warm-up"]
        assert _data(frames)[2].readings
        port.write(sds011.cmd_sleep())
        replies = read_frames(port, dec, lambda f: any(x.kind == "sleep_work" for x in f))
        assert [x.info["working"] for x in replies if x.kind == "sleep_work"] == [False]
        port.reset_input_buffer()
        time.sleep(0.15)
        assert emu.sleeping and dec.feed(port.read(512)) == []  # asleep: silence
        port.write(sds011.cmd_firmware_version())  # ignored while asleep
        time.sleep(0.05)
        assert dec.feed(port.read(512)) == []
        port.write(sds011.cmd_wake())
        frames = read_frames(port, dec, lambda f: len(_data(f)) >= 3)
        assert frames[0].kind == "sleep_work" and frames[0].info["working"] is True
        assert [f.skip_reason for f in _data(frames)[:2]] == ["warm-up", "warm-up"]
        port.write(sds011.cmd_firmware_version())
        version = read_frames(port, dec, lambda f: any(x.kind == "version" for x in f))
        assert [x.info["firmware"] for x in version if x.kind == "version"] == ["2018-11-16"]


def test_sds011_query_mode_period_and_device_id(emulator: Factory) -> None:
    emu = emulator("sds011", minute_s=0.1)
    with open_port(emu) as port:
        dec = sds011.Sds011Decoder()
        port.write(sds011.cmd_report_mode(query=True))
        r = read_frames(port, dec, lambda f: any(x.kind == "report_mode" for x in f))
        assert [x.info["mode"] for x in r if x.kind == "report_mode"] == ["query"]
        time.sleep(0.1)
        port.reset_input_buffer()
        time.sleep(0.1)
        assert dec.feed(port.read(512)) == []  # query mode: nothing unprompted
        n0 = len(emu.sent_values)
        port.write(sds011.cmd_query_data())
        got = values(read_frames(port, dec, lambda f: bool(_data(f))))
        assert got == [emu.sent_values[n0].values]
        # a command for another device id is ignored; one for ours is answered
        port.write(sds011.cmd_set_device_id(0x1234, device_id=0x0001))
        port.write(sds011.cmd_set_device_id(0x1234, device_id=0x58D9))
        r = read_frames(port, dec, lambda f: any(x.kind == "device_id" for x in f))
        assert [x.info["device_id"] for x in r if x.kind == "device_id"] == ["1234"]
        # working period 1 "minute" (0.1 s here) in active mode
        port.write(sds011.cmd_report_mode(query=False))
        port.write(sds011.cmd_working_period(1, device_id=0x1234))
        r = read_frames(port, dec, lambda f: any(x.kind == "working_period" for x in f))
        assert [x.info["period_min"] for x in r if x.kind == "working_period"] == [1]
        n1 = len(emu.sent_values)
        time.sleep(0.55)
        assert 3 <= len(emu.sent_values) - n1 <= 7


def test_pms_passive_read_sleep_wake(emulator: Factory) -> None:
    emu = emulator("pms5003")
    with open_port(emu) as port:
        dec = pms5003.Pms5003Decoder()
        port.write(pms5003.cmd_passive_mode())
        acks = read_frames(port, dec, lambda f: any(x.kind == "ack" for x in f))
        assert [x.info["mode"] for x in acks if x.kind == "ack"] == ["passive"]
        time.sleep(0.05)
        port.reset_input_buffer()
        time.sleep(0.1)
        assert dec.feed(port.read(512)) == []
        n0 = len(emu.sent_values)
        port.write(pms5003.cmd_passive_read())
        got = values(read_frames(port, dec, lambda f: bool(_data(f))))
        assert got == [emu.sent_values[n0].values]
        port.write(pms5003.cmd_sleep())
        acks = read_frames(port, dec, lambda f: any(x.kind == "ack" for x in f))
        assert [x.info.get("working") for x in acks if x.kind == "ack"] == [False]
        port.write(pms5003.cmd_passive_read())  # asleep: no answer
        time.sleep(0.1)
        assert dec.feed(port.read(512)) == []
        port.write(pms5003.cmd_wake())
        port.write(pms5003.cmd_active_mode())
        frames = read_frames(port, dec, lambda f: len(_data(f)) >= 3)
        assert frames[0].kind == "ack" and frames[0].info["mode"] == "active"


@pytest.mark.parametrize("sensor", streaming())
def test_faults_are_counted_and_survived(emulator: Factory, sensor: str) -> None:
    emu = emulator(sensor)
    with open_port(emu) as port:
        dec = emu.descriptor.decoder()
        read_frames(port, dec, lambda f: len(_data(f)) >= 2)
        emu.inject_garbage(b"\x00\x01garbage\x13")
        read_frames(port, dec, lambda f: len(_data(f)) >= 2)
        emu.inject_bad_checksum()
        read_frames(port, dec, lambda f: len(_data(f)) >= 2)
        emu.inject_truncated()
        frames = read_frames(port, dec, lambda f: len(_data(f)) >= 3)
        assert dec.stats.bad["garbage"] >= 1
        assert dec.stats.bad["checksum"] >= 1
        assert sum(dec.stats.bad.values()) >= 3
        assert [f.kind for f in frames] and all(f.readings for f in _data(frames))
        kinds = [f.kind for f in emu.faults]
        assert kinds == ["garbage", "checksum", "truncated"]
        emu.silence(0.3)
        time.sleep(0.05)
        port.reset_input_buffer()
        t0 = time.monotonic()
        frames = read_frames(port, dec, lambda f: bool(_data(f)), timeout=2.0)
        assert frames and time.monotonic() - t0 >= 0.2


def test_unplug_replug_with_stable_link(emulator: Factory) -> None:
    emu = emulator("sds011")
    link = emu.port
    first = emu.path
    assert os.readlink(link) == first
    port = open_port(emu)
    dec = sds011.Sds011Decoder()
    read_frames(port, dec, lambda f: bool(f))
    emu.unplug()
    assert not os.path.lexists(link)
    with pytest.raises(serial.SerialException):
        for _ in range(50):  # bounded: the error comes on the first read after the close
            port.read(64)
    port.close()
    new = emu.replug()
    assert os.readlink(link) == new == emu.path
    with open_port(emu) as port2:
        dec.reset()
        frames = read_frames(port2, dec, lambda f: len(_data(f)) >= 2)
        assert len(_data(frames)) >= 2
    assert [f.kind for f in emu.faults] == ["unplug", "replug"]
    assert first  # path may or may not be reused by the kernel; the link always follows


async def test_asyncio_serial_reader(emulator: Factory) -> None:
    emu = emulator("pms5003")
    reader, writer = await serial_asyncio_fast.open_serial_connection(url=emu.port, baudrate=9600)
    try:
        dec = pms5003.Pms5003Decoder()
        frames: list = []
        async with asyncio.timeout(3):
            while len(_data(frames)) < 5:
                frames += dec.feed(await reader.read(256))
        writer.write(pms5003.cmd_sleep())
        async with asyncio.timeout(3):
            while not any(f.kind == "ack" for f in frames):
                frames += dec.feed(await reader.read(256))
        assert values(frames)[:5] == [s.values for s in emu.sent_values][:5]
        emu.unplug()
        async with asyncio.timeout(3):
            while await reader.read(256):  # EOF (b"") or an OSError after the unplug
                pass
    except OSError:
        pass
    finally:
        writer.close()


def test_rapid_unplug_replug_keeps_the_emulator_alive(emulator: Factory) -> None:
    emu = emulator("sds011", interval_s=0.005)
    for _ in range(15):
        with open_port(emu) as port:
            port.read(32)
        emu.unplug()
        time.sleep(0.01)
        emu.replug()
    with open_port(emu) as port:
        dec = sds011.Sds011Decoder()
        frames = read_frames(port, dec, lambda f: len(_data(f)) >= 5)
    assert len(_data(frames)) >= 5
    assert emu._thread is not None and emu._thread.is_alive()
