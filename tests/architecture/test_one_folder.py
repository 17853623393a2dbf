"""Adding a sensor touches one folder: a sensor written into a temporary directory, and added
to nothing but ``edge.sensors.__path__``, is discovered, validated in config, listed by
`duet-edge sensors`, picked up by the generic tests and run by the real gateway into a real
outbox. No file of the repository is edited."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import edge.sensors
from edge import plugins
from edge.config import ConfigError, parse_config
from edge.emulation import emulators
from edge.outbox import iter_unsent
from edge.runtime import Gateway

pytestmark = pytest.mark.timeout(60)

NAME = "linepm_demo"

# A whole sensor: a text-line PM2.5 sensor ("PM25=12.3\n" about every interval).
FOLDER = {
    "__init__.py": '''
        """A demo line-protocol PM2.5 sensor that exists only in a test's temporary folder."""
        from edge.plugins import Sensor
        from edge.sensors.linepm_demo.codec import DESCRIPTOR

        SENSOR = Sensor(DESCRIPTOR)
    ''',
    "codec.py": '''
        from edge.codec import BufferedDecoder, Frame, Reading, SensorDescriptor, SerialSettings


        class LineDecoder(BufferedDecoder):
            def feed(self, data: bytes) -> list[Frame]:
                self._buf += data
                out = []
                while (end := self._buf.find(b"\\n")) >= 0:
                    line = bytes(self._buf[:end]).strip()
                    del self._buf[: end + 1]
                    try:
                        value = float(line.removeprefix(b"PM25="))
                    except ValueError:
                        self._discard(end + 1, "line")
                        continue
                    out.append(Frame("data", (Reading("pm2_5", value),)))
                    self.stats.frames_ok += 1
                if len(self._buf) > 64:
                    self._discard(len(self._buf), "overlong")
                    self._buf.clear()
                return out


        DESCRIPTOR = SensorDescriptor(
            name="linepm_demo", model="LinePM", manufacturer="Demo", interface="serial",
            quantities=("pm2_5",), decoder=LineDecoder, serial=SerialSettings(baudrate=9600),
            default_interval_s=1.0,
        )
    ''',
    "emulator.py": '''
        from edge.emulation.base import SensorEmulator
        from edge.sensors.linepm_demo.codec import DESCRIPTOR


        class LinePmEmulator(SensorEmulator):
            descriptor = DESCRIPTOR

            def sample(self, hour: float) -> dict[str, float]:
                return {"pm2_5": round(self.series.pm(hour)["pm2_5"], 1)}

            def make_frame(self, values: dict[str, float]) -> bytes:
                return f"PM25={values.get('pm2_5', 0.0):.1f}\\n".encode()

            def split_commands(self, buf: bytearray) -> list[bytes]:
                buf.clear()
                return []

            def handle_command(self, raw: bytes) -> bytes:
                return b""


        EMULATOR = LinePmEmulator
    ''',
    "README.md": "# `linepm_demo` — a sensor that lives in one folder\n",
}


def _forget() -> None:
    plugins.sensors.cache_clear()
    plugins.source_kinds.cache_clear()
    emulators.cache_clear()
    for module in [m for m in sys.modules if m.startswith(f"edge.sensors.{NAME}")]:
        del sys.modules[module]


@pytest.fixture
def third_sensor(tmp_path: Path) -> Iterator[Path]:
    """The folder above, written to ``tmp_path`` and put on ``edge.sensors.__path__`` only."""
    root = tmp_path / "sensors"
    folder = root / NAME
    folder.mkdir(parents=True)
    for filename, text in FOLDER.items():
        (folder / filename).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    assert NAME not in plugins.sensors()
    edge.sensors.__path__.append(str(root))
    _forget()
    try:
        yield folder
    finally:
        edge.sensors.__path__.remove(str(root))
        _forget()
    assert NAME not in plugins.sensors()


def test_a_folder_is_discovered_listed_and_picked_up_by_the_generic_tests(
    third_sensor: Path,
) -> None:
    from edge.commands.sensors_cmd import sensor_rows
    from tests.codecs.conftest import serial_sensors
    from tests.hil.registry import generic_serial, streaming

    assert plugins.sensor(NAME).descriptor.model == "LinePM"
    assert NAME in plugins.source_types() and NAME in emulators()
    (row,) = [r for r in sensor_rows() if r.type == NAME]
    assert row.emulator and Path(row.readme) == third_sensor / "README.md"
    assert [(q.code, q.unit) for q in row.quantities] == [("pm2_5", "ug/m3")]
    assert NAME in serial_sensors() and NAME in generic_serial() and NAME in streaming()


CONFIG = """
[gateway]
id = "gw-one-folder"
data_dir = "{data}"
[buffer]
commit_interval_s = 0.1
[[sources]]
name = "demo-1"
type = "linepm_demo"
port = "{port}"
{options}
"""


def test_the_new_type_is_validated_in_config(third_sensor: Path, tmp_path: Path) -> None:
    del third_sensor
    config = parse_config(CONFIG.format(data=tmp_path, port="/dev/ttyUSB9",
                                        options="options = { warmup_s = 0 }"))
    assert config.sources[0].type == NAME
    with pytest.raises(ConfigError, match=r"options\.colour: Extra inputs are not permitted"):
        parse_config(CONFIG.format(data=tmp_path, port="/dev/ttyUSB9",
                                   options="options = { colour = 1 }"))


def test_the_gateway_runs_the_new_sensor_into_its_outbox(third_sensor: Path,
                                                        tmp_path: Path) -> None:
    del third_sensor
    emu = emulators()[NAME](tmp_path / "tty", interval_s=0.05).start()
    try:
        config = parse_config(CONFIG.format(data=tmp_path / "data", port=emu.port,
                                            options="options = { warmup_s = 0 }"))
        gateway = Gateway(config, uplinks=[])

        async def main() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(gateway.run(stop))
            for _ in range(200):  # bounded: at most 10 s
                await asyncio.sleep(0.05)
                if gateway.counters.observations_in >= 5:
                    break
            stop.set()
            await asyncio.wait_for(task, 10)

        asyncio.run(main())
    finally:
        emu.stop()
    stored = list(iter_unsent(config.outbox_path))
    assert len(stored) >= 5
    assert {(o.stream.sensor_id, o.stream.quantity_code) for o in stored} == {("demo-1", "pm2_5")}
    assert all(o.provenance.sensor_model == "LinePM" for o in stored)
    sent = iter(s.values["pm2_5"] for s in emu.sent_values)
    assert all(any(o.result == s for s in sent) for o in stored)  # in order, as sent
