"""Sources with their sensor lifecycle, against the emulators on real pseudo-terminals."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from edge import plugins
from edge.ble.replay import ReplayRadio, load_recording
from edge.ble.source import BleSource
from edge.config import DutyCycle, SourceSettings
from edge.model import Observation
from edge.seams import SourceContext, SourceHealth
from edge.sensors.ops243.source import RadarTrafficSource
from edge.sources.serial import SerialSource
from hil.emulators import EMULATORS
from tests.hil.registry import polled

pytestmark = pytest.mark.timeout(60)


async def run_for(source: object, seconds: float) -> tuple[list[Observation], SourceHealth]:
    got: list[Observation] = []
    health = SourceHealth("s")
    ctx = SourceContext("gw", got.extend, health)
    task = asyncio.create_task(source.run(ctx))  # type: ignore[attr-defined]
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return got, health


@pytest.mark.parametrize("sensor", polled())
async def test_polled_sensors_are_started_and_polled(tmp_path: Path, sensor: str) -> None:
    quantity = plugins.sensor(sensor).descriptor.quantities[0]
    emu = EMULATORS[sensor](tmp_path / "tty", interval_s=0.1).start()
    try:
        settings = SourceSettings(
            name="s", type=sensor, port=emu.port, interval_s=0.1, options={"warmup_s": 0}
        )
        src = SerialSource(settings, "gw")
        src.poll_interval_s = 0.1  # poll fast for the test (the default is the sensor's own rate)
        got, health = await run_for(src, 2.5)
    finally:
        emu.stop()
    values = [o.result for o in got if o.stream.quantity_code == quantity]
    assert len(values) >= 5, health.as_dict()
    assert emu.commands_seen, "the source sent its start and poll commands"
    sent = [s.values[quantity] for s in emu.sent_values if quantity in s.values]
    assert values == sent[: len(values)]


async def test_duty_cycle_sleeps_wakes_and_discards_warm_up(tmp_path: Path) -> None:
    emu = EMULATORS["sds011"](tmp_path / "tty", interval_s=0.05).start()
    try:
        settings = SourceSettings(
            name="s",
            type="sds011",
            port=emu.port,
            duty_cycle=DutyCycle(measure_s=1.0, sleep_s=1.0),
            options={"warmup_s": 0.3},
        )
        got, health = await run_for(SerialSource(settings, "gw"), 3.6)
    finally:
        emu.stop()
    sleeps = [c for c in emu.commands_seen if c[2] == 0x06 and c[3] == 0x01 and c[4] == 0x00]
    wakes = [c for c in emu.commands_seen if c[2] == 0x06 and c[3] == 0x01 and c[4] == 0x01]
    assert sleeps and wakes
    assert health.frames_skipped > 0  # warm-up readings after each wake were discarded
    assert got


async def test_radar_counts_traffic_per_interval(tmp_path: Path) -> None:
    emu = EMULATORS["ops243"](tmp_path / "tty", interval_s=0.05).start()
    try:
        settings = SourceSettings(
            name="radar", type="ops243", port=emu.port, options={"interval_s": 1.0, "warmup_s": 0}
        )
        got, _health = await run_for(RadarTrafficSource(settings, "gw"), 3.5)
    finally:
        emu.stop()
    codes = {o.stream.quantity_code for o in got}
    assert {"car", "car_lft", "car_rgt", "v85", "uptime", "car_speed_hist_0"} <= codes
    assert all(o.phenomenon_end_ms - o.phenomenon_ms == 1000 for o in got)  # type: ignore[operator]
    counted = sum(o.result for o in got if o.stream.quantity_code == "traffic_count")
    assert counted > 0


async def test_ble_source_names_devices_and_keeps_measurement_time() -> None:
    radio = ReplayRadio()
    settings = SourceSettings(
        name="ble",
        type="ble",
        options={"names": {"CB:B8:33:4C:88:4F": "ruuvi-garden"}, "stall_timeout_s": 30},
    )
    src = BleSource(settings, "gw", scanner_backend=radio.scanner_backend())
    records = load_recording(Path("hil/recordings/ble-vectors.jsonl"))

    async def play() -> None:
        await radio.wait_scanning(5)
        await radio.play(records, speed=0)

    player = asyncio.create_task(play())
    got, health = await run_for(src, 1.5)
    await player
    sensors = {o.stream.sensor_id for o in got}
    assert "ruuvi-garden" in sensors
    assert any(s.startswith("aranet4-") for s in sensors)
    temps = [
        o.result
        for o in got
        if o.stream.sensor_id == "ruuvi-garden" and o.stream.quantity_code == "temperature"
    ]
    assert 24.3 in temps
    assert health.frames_ok >= 2
    assert all(abs(o.phenomenon_ms / 1000 - time.time()) < 3600 for o in got)


async def test_sps30_fan_cleaning_is_scheduled(tmp_path: Path) -> None:
    from edge.sensors.sps30.codec import cmd_fan_cleaning

    emu = EMULATORS["sps30"](tmp_path / "tty", interval_s=0.1).start()
    try:
        settings = SourceSettings(
            name="s",
            type="sps30",
            port=emu.port,
            interval_s=0.1,
            options={"warmup_s": 0, "fan_cleaning_interval_s": 0.5},
        )
        _got, health = await run_for(SerialSource(settings, "gw"), 1.6)
    finally:
        emu.stop()
    assert cmd_fan_cleaning() in emu.commands_seen
    assert "last_fan_cleaning_ms" in health.device


def test_a_sensor_sending_bad_frames_turns_unhealthy_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="duet.source")
    health = SourceHealth("s")
    health.set_state("connected")
    for _ in range(10):
        health.frame_result(False, 5)
    health.frame_result(True, 40)
    changes = [r for r in caplog.records if getattr(r, "event", "") == "source_state"]
    assert [r.to for r in changes][-2:] == ["unhealthy", "connected"]  # type: ignore[attr-defined]
    assert len([r for r in changes if r.to == "unhealthy"]) == 1  # type: ignore[attr-defined]


def test_replayed_adverts_reach_the_twin_through_a_running_gateway(
    tmp_path: Path, mosquitto
) -> None:  # type: ignore[no-untyped-def]
    """edge/ble/replay.py's format fed to a real gateway process (no radio) → Mosquitto → receiver."""
    from tests.spine.harness import GatewayProcess, ReceiverThread, wait_until

    recording = Path("hil/recordings/ble-vectors.jsonl").resolve()
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        f'[gateway]\nid = "gw-ble"\ndata_dir = "{tmp_path / "data"}"\n'
        f"[buffer]\ncommit_interval_s = 0.2\n"
        f"[uplinks.mqtt]\nport = {mosquitto.port}\n"
        f'[[sources]]\nname = "ble"\ntype = "ble"\n'
        f'options = {{ replay = "{recording}", replay_speed = 0, '
        f'names = {{ "CB:B8:33:4C:88:4F" = "ruuvi-garden" }} }}\n'
    )
    gw = GatewayProcess(cfg, tmp_path / "gw.log")
    with ReceiverThread(mosquitto.port, tmp_path / "twin.db") as rx:
        gw.start()
        try:
            wait_until(lambda: any(r[1] == "ruuvi-garden" for r in rx.rows()), 30, "ruuvi rows")
        finally:
            gw.terminate()
        sensors = {r[1] for r in rx.rows()}
    assert "ruuvi-garden" in sensors and any(s.startswith("aranet4-") for s in sensors), gw.log()
