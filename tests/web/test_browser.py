"""A real browser (Debian's headless chromium via playwright-core) on the host and technician
pages of a gateway set up as a host would have it: a site name, labelled sensors, a contact,
an hour of measurements, no action token, and one sensor that was unplugged.

It always checks the layout (no sideways scrolling at 390 px, one verdict, the dead sensor
greyed out with what to do); with ``DUET_DOC_SCREENSHOTS=1`` it also writes the screenshots
shown in docs/status-page.md (otherwise they go to test-artifacts/).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.model import Datastream, Observation, Provenance
from edge.sensors.pms5003.emulator import Pms5003Emulator
from edge.sensors.scd30.emulator import Scd30Emulator
from edge.sensors.sds011.emulator import Sds011Emulator
from tests.plugins.mosquitto import Broker, free_port
from tests.web.conftest import LiveGateway, wait_until

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ARTIFACTS = ROOT / "test-artifacts"
DOC_IMAGES = ROOT / "docs" / "img"
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.timeout(180)

SITE = "Kerkstraat 12, Gent"
CONTACT = "Jan Peeters (meetnet Gent)"


def site_config(work: Path, broker_port: int, sds: str, pms: str, co2: str, web_port: int) -> str:
    return f"""
[gateway]
id = "gw-host"
name = "{SITE}"
data_dir = "{work / "data"}"

[[sources]]
name = "sds"
type = "sds011"
port = "{sds}"
interval_s = 0.5
label = "Fijnstof voorgevel"
options = {{ warmup_s = 0 }}

[[sources]]
name = "pms"
type = "pms5003"
port = "{pms}"
interval_s = 0.5
label = "Fijnstof tuin"
options = {{ warmup_s = 0 }}

[[sources]]
name = "co2"
type = "scd30"
port = "{co2}"
interval_s = 0.5
label = "CO₂ woonkamer"

[buffer]
commit_interval_s = 0.2

[uplinks.mqtt]
port = {broker_port}
username = "gw-host"
keepalive_s = 5

[web]
host = "127.0.0.1"
port = {web_port}
healthz_grace_s = 2
healthz_missed_intervals = 6
contact_name = "{CONTACT}"
contact_email = "meetnet@example.org"
contact_phone = "+32 9 123 45 67"
"""


def past_hour(gateway_id: str, sensor: str, model: str, levels: dict[str, float]) -> list[Observation]:
    """An hour of values every 10 s before now, as if the page had been watching all along."""
    now = time.time_ns() // 1_000_000
    out = []
    for i in range(360, 0, -1):
        at = now - i * 10_000
        wobble = 1 + 0.15 * ((i * 7919) % 13 - 6) / 6  # deterministic ±15 %
        for qty, level in levels.items():
            out.append(Observation(Datastream(gateway_id, sensor, qty), round(level * wobble, 1), at,
                                   Provenance(model)))
    return out


def state_of(url: str, sensor: str) -> str | None:
    sensors = httpx.get(url + "/api/home", timeout=5).json()["sensors"]
    return next((s["state"] for s in sensors if s["sensor"] == sensor), None)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("site")
    (work / "mosquitto").mkdir()
    broker = Broker(work / "mosquitto")
    broker.start()
    sds = Sds011Emulator(link_path=work / "ttySDS", interval_s=0.25, seed=3).start()
    pms = Pms5003Emulator(link_path=work / "ttyPMS", interval_s=0.25, seed=4).start()
    co2 = Scd30Emulator(link_path=work / "ttySCD", interval_s=0.5, seed=5).start()
    text = site_config(work, broker.port, sds.port, pms.port, co2.port, free_port())
    gw = LiveGateway(work, text).start()
    try:
        wait_until(lambda: all(s in httpx.get(gw.url + "/api/latest", timeout=5).text
                               for s in ('"sds"', '"pms"', '"co2"')), 30, "values from three sensors")
        gateway = gw.gateway
        assert gateway is not None
        history = past_hour("gw-host", "sds", "SDS011", {"pm2_5": 13.0, "pm10": 21.0})
        history += past_hour("gw-host", "pms", "PMS5003", {"pm2_5": 15.0, "pm10": 24.0, "pm1": 9.0})
        gw.call(lambda: gateway.emit(history))
        co2.unplug()  # the host pulled the CO2 sensor's cable
        wait_until(lambda: state_of(gw.url, "co2") == "down", 20, "the unplugged sensor to be down")
        yield {"url": gw.url, "gw": gw}
    finally:
        gw.stop()
        for emulator in (sds, pms, co2):
            emulator.stop()
        broker.stop()


def run_browser(url: str, out_dir: Path) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not CHROMIUM.exists() or not (HERE / "node_modules" / "playwright-core").is_dir():
        pytest.fail("needs node, /usr/bin/chromium and tests/web/node_modules: bash scripts/setup.sh test")
    out_dir.mkdir(parents=True, exist_ok=True)
    run = subprocess.run([node, str(HERE / "browser_check.mjs"), url, str(out_dir)],
                         capture_output=True, text=True, timeout=150, cwd=HERE)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def test_host_and_technician_pages_in_headless_chromium(site: dict[str, Any]) -> None:
    to_docs = os.environ.get("DUET_DOC_SCREENSHOTS") == "1"
    out_dir = DOC_IMAGES if to_docs else ARTIFACTS
    result = run_browser(site["url"], out_dir)
    phone, desktop, en, tech = result["phone_nl"], result["desktop_nl"], result["phone_en"], result["tech_phone"]
    for page in (phone, desktop, en, tech, result["tech_desktop"]):
        assert page["errors"] == [], page["errors"]
    # a phone: nothing sticks out sideways, on either page
    assert phone["overflow"] == [] and phone["scrollWidth"] <= 390, phone["overflow"]
    assert tech["overflow"] == [] and tech["scrollWidth"] <= 390, tech["overflow"]
    # the site, one verdict from the hourly mean, the legend
    assert phone["site"] == SITE and phone["lang"] == "nl"
    assert phone["verdicts"] == 1 and phone["verdictState"] == "final"
    assert phone["verdictBand"] in ("Goed", "Redelijk", "Matig"), phone["verdictBand"]
    assert phone["legendBands"] == 6 and phone["scaleBands"] == 6
    # sensors by their labels, never by config ids
    assert phone["sensorNames"] == ["Fijnstof voorgevel", "Fijnstof tuin", "CO₂ woonkamer"]
    # the unplugged sensor: greyed, no band, what to check, whom to call
    dead = phone["dead"]
    assert dead["state"] == "down" and dead["bands"] == 0
    assert dead["numColour"] == "rgb(112, 117, 122)", dead["numColour"]
    assert "Meet niet meer sinds" in dead["text"] and "kabel" in dead["text"]
    assert CONTACT in dead["text"] and "meetnet@example.org" in dead["text"]
    assert phone["status"].startswith("Eén sensor meet niet: CO₂ woonkamer.")
    # live values keep coming in through the refreshed part of the page
    assert phone["changed"], "values never changed"
    # English, and the switch back to Dutch
    assert en["lang"] == "en" and en["verdictBand"] in ("Good", "Fair", "Moderate")
    assert "Not measuring since" in en["dead"]["text"] and en["switchedTo"] == "nl"
    # the technician page: read-only without a token, so no actions
    assert tech["actions"] == 0 and "web.token_file" in tech["actionsOff"]
    assert "sds · Fijnstof voorgevel" in tech["text"] and "Frames ok" in result["tech_desktop"]["text"]
    shots = ["status-page-phone-nl.png", "status-page-desktop-nl.png", "status-page-tech-phone.png"]
    for name in shots:
        assert (out_dir / name).stat().st_size > 20_000, name
