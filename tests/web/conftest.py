"""A real gateway (emulated SDS011 + PMS5003 on ptys, real outbox, real Mosquitto) with its
status page, running on an event loop in a background thread, shared by the web tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.config import parse_config
from edge.runtime import Gateway, RuntimeOptions
from edge.sensors.pms5003.emulator import Pms5003Emulator
from edge.sensors.sds011.emulator import Sds011Emulator
from edge.web.settings import WebSettings
from tests.plugins.mosquitto import Broker, free_port

TOKEN = "tok-5ecret-Zq81-web-actions"
MQTT_PASSWORD = "pw-5ecret-Mx44-mqtt-broker"


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def write_config(work: Path, broker_port: int, sds: str, pms: str, web_port: int) -> str:
    (work / "web.token").write_text(TOKEN + "\n")
    (work / "mqtt.password").write_text(MQTT_PASSWORD + "\n")
    return f"""
[gateway]
id = "gw-web"
name = "web test gateway"
data_dir = "{work / "data"}"

[[sources]]
name = "sds"
type = "sds011"
port = "{sds}"
interval_s = 0.5
options = {{ warmup_s = 0 }}

[[sources]]
name = "pms"
type = "pms5003"
port = "{pms}"
interval_s = 0.5
options = {{ warmup_s = 0 }}

[buffer]
commit_interval_s = 0.2

[runtime]
backoff_initial_s = 0.2
backoff_max_s = 1.0
drain_timeout_s = 2

[uplinks.mqtt]
port = {broker_port}
username = "gw-web"
password_file = "{work / "mqtt.password"}"
keepalive_s = 5
confirm = "broker"  # no twin receiver here: the broker's PUBACK is the confirmation

[web]
port = {web_port}
token_file = "{work / "web.token"}"
healthz_grace_s = 2
healthz_missed_intervals = 6
"""


class LiveGateway:
    """Gateway.run on its own event loop thread; ``stop()`` shuts it down cleanly."""

    def __init__(self, work: Path, config_text: str) -> None:
        self.config = parse_config(config_text, source="web-test")
        web = self.config.settings(WebSettings)
        assert web is not None
        self.url = f"http://127.0.0.1:{web.port}"
        self.loop = asyncio.new_event_loop()
        self.gateway: Gateway | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._ready = threading.Event()
        self.error: BaseException | None = None

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._run())
        except BaseException as exc:  # surfaced by the tests
            self.error = exc
        finally:
            self._ready.set()
            self.loop.close()

    async def _run(self) -> None:
        options = RuntimeOptions(backoff_initial_s=0.2, backoff_max_s=1.0, drain_timeout_s=2)
        self.gateway = Gateway(self.config, options=options)
        self._stop = asyncio.Event()
        self._ready.set()
        await self.gateway.run(self._stop)

    def start(self) -> LiveGateway:
        self._thread.start()
        self._ready.wait(10)
        wait_until(self._answers, 10, "status page")
        return self

    def _answers(self) -> bool:
        try:
            return httpx.get(self.url + "/api/status", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the gateway's loop and return its result."""
        async def wrapper() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(5)

    def stop(self) -> None:
        if self._stop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("web")
    broker_dir = work / "mosquitto"
    broker_dir.mkdir()
    broker = Broker(broker_dir)
    broker.start()
    sds = Sds011Emulator(link_path=work / "ttySDS", interval_s=0.25, seed=3).start()
    pms = Pms5003Emulator(link_path=work / "ttyPMS", interval_s=0.25, seed=4).start()
    text = write_config(work, broker.port, sds.port, pms.port, free_port())
    gw = LiveGateway(work, text).start()
    try:
        yield {"gw": gw, "url": gw.url, "sds": sds, "pms": pms, "broker": broker, "work": work}
    finally:
        gw.stop()
        sds.stop()
        pms.stop()
        broker.stop()


def emit_stuck_values(gw: LiveGateway, sensor: str = "stuck") -> None:
    """Through the real pipeline: a PM10 value flagged by flat_line for the last two hours."""
    from edge.model import QC_SUSPECT, Datastream, Observation, Provenance, Quality

    now = time.time_ns() // 1_000_000
    stream = Datastream("gw-web", sensor, "pm10")

    def one(at_ms: int) -> Observation:
        q = Quality()
        q.set("flat_line", QC_SUSPECT)
        return Observation(stream, 12.5, at_ms, Provenance("SDS011"), quality=q)

    assert gw.gateway is not None
    gateway = gw.gateway
    gw.call(lambda: gateway.emit([one(now - 2 * 3600 * 1000), one(now)]))
