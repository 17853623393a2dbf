"""The host page as rendered HTML: names, the verdict, a dead sensor, plain words, both languages."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edge.config import parse_config
from edge.model import QC_FAIL, QC_SUSPECT, Datastream, Observation, Provenance, Quality
from edge.outbox import Outbox
from edge.seams import GatewayCounters as Counters
from edge.seams import SourceHealth
from edge.uplinks import UplinkHealth
from edge.web import eaqi, home, i18n
from edge.web.settings import WebSettings
from edge.web.state import LiveState
from edge.web.view import GatewayView

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "edge" / "web" / "templates"
APP_JS = ROOT / "edge" / "web" / "static" / "app.js"

# Words a host should never have to read (technical terms, raw codes, placeholders).
JARGON = re.compile(
    r"\b(buffer|outbox|uplink|frames?|qartod|flags?|token|gateway|config|json|mqtt|eaqi|api|"
    r"healthz|datastreams?|sensor_problem|not_uploading|suspect|not checked|checks passed|"
    r"niet gecontroleerd|controles geslaagd|null|none|nan|undefined|true|false|disconnected)\b|"
    r"\{\w+\}|[a-z]+_[a-z_]+",
    re.IGNORECASE,
)
CONFIG_IDS = re.compile(r"\b(pm|co2sensor|tags)\b")

CONFIG = """
[gateway]
id = "gw-home"
name = "Kerkstraat 12, Gent"
data_dir = "{data}"

[[sources]]
name = "pm"
type = "sds011"
port = "/dev/null"
label = "Fijnstof keuken"

[[sources]]
name = "co2sensor"
type = "scd30"
port = "/dev/null"

[[sources]]
name = "tags"
type = "ble"

[web]
contact_name = "Jan Peeters"
contact_email = "jan@example.org"
contact_phone = "+32 9 123 45 67"
"""


def observation(sensor: str, qty: str, value: float, ms: int, quality: Quality | None = None,
                model: str = "SDS011") -> Observation:
    return Observation(Datastream("gw-home", sensor, qty), value, ms, Provenance(model), quality=quality)


class Site:
    """A GatewayView over a stand-in gateway (real config, outbox, health objects)."""

    def __init__(self, tmp_path: Path, config: str = CONFIG, *, uplink: bool = True) -> None:
        self.config = parse_config(config.replace("{data}", str(tmp_path)))
        self.outbox = Outbox(tmp_path / "outbox.db", self.config.buffer, "gw-home")
        counters = Counters()
        counters.started_ms -= 3 * 3600 * 1000  # running for hours: past the start-up grace
        self.health = {s.name: SourceHealth(s.name, state="connected") for s in self.config.sources}
        uplinks = {"mqtt": UplinkHealth("mqtt", state="connected")} if uplink else {}
        self.gateway = SimpleNamespace(
            config=self.config, outbox=self.outbox, counters=counters, gateway_id="gw-home",
            source_health=self.health, uplink_health=uplinks, listeners=[],
        )
        web = self.config.settings(WebSettings)
        assert web is not None
        self.now = time.time_ns() // 1_000_000
        self.clock_s = self.now / 1000  # when the gateway received what is fed next
        self.view = GatewayView(self.gateway, web, LiveState(clock=lambda: self.clock_s))
        self.page = home.HomePage(web)

    def hour_of(self, sensor: str, levels: dict[str, float], *, until_s: float = 0, model: str = "SDS011",
                quality: Quality | None = None) -> None:
        end = self.now - int(until_s * 1000)
        batch = [observation(sensor, q, v, end - i * 10_000, quality if i == 0 else None, model)
                 for i in range(360, -1, -1) for q, v in levels.items()]
        self.clock_s = end / 1000
        self.view.live(batch)
        self.clock_s = self.now / 1000
        self.health[sensor].last_frame_ms = end

    def model(self, down_since: int | None = None) -> home.HomeModel:
        return home.build(self.view, self.now, down_since)

    def render(self, lang: str, down_since: int | None = None) -> str:
        return self.page.render(self.model(down_since), lang)

    def close(self) -> None:
        self.outbox.close()


@pytest.fixture
def site(tmp_path: Path) -> Any:
    s = Site(tmp_path)
    yield s
    s.close()


def visible_text(page: str) -> str:
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    page = re.sub(r"<[^>]+>", " ", page)
    return re.sub(r"\s+", " ", html.unescape(page))


def card(page: str, sensor: str) -> str:
    found = re.search(rf'<article class="sensor (\w+)" data-sensor="{sensor}".*?</article>', page, re.S)
    assert found, sensor
    return found.group(0)


def unplug(site: Site, sensor: str, minutes_ago: float) -> None:
    site.hour_of(sensor, {"co2": 640.0, "temperature": 21.5, "humidity": 48.0},
                 until_s=minutes_ago * 60, model="SCD30")
    site.health[sensor].state = "disconnected"


def test_a_dead_sensor_is_greyed_with_what_to_check_and_whom_to_call(site: Site) -> None:
    site.hour_of("pm", {"pm2_5": 12.0, "pm10": 18.0})
    site.health["tags"].last_frame_ms = site.now  # the BLE scanner hears its devices
    unplug(site, "co2sensor", 10)
    page = site.render("nl")
    dead = card(page, "co2sensor")
    assert dead.startswith('<article class="sensor down"')
    text = visible_text(dead)
    since = i18n.when(site.now - 600_000, "nl", seconds=True)
    assert f"Meet niet meer sinds {since}" in text and str(time.localtime().tm_year) in since
    assert "kabel" in text and "stopcontact" in text  # wired: cable and power
    assert "Jan Peeters" in text and 'href="mailto:jan@example.org"' in dead
    assert 'href="tel:+3291234567"' in dead
    assert "band" not in re.sub(r'class="sensor down"', "", dead), "a dead sensor shows no band"
    assert "640" in text  # its last values stay visible, greyed by the card's class
    status = re.search(r'<p id="status-line" class="status (\w+)"', page)
    assert status and status.group(1) == "warn"
    assert "Eén sensor meet niet: CO₂-meter (SCD30)." in visible_text(page)


def test_a_sensor_that_stopped_is_never_green(site: Site) -> None:
    """The old page kept a silent sensor's card green ("Fair · checks passed")."""
    site.hour_of("pm", {"pm2_5": 12.0}, until_s=3600)  # silent for an hour, still "connected"
    model = site.model()
    (pm,) = [c for c in model.cards if c.key == "pm"]
    assert pm.state == "down"
    assert model.verdict.band is None and model.verdict.state == "no_working_sensor"
    page = site.render("en")
    assert 'class="verdict no-band"' in page and 'data-band=""' in page
    assert " current" not in page and "band band-" not in page
    assert "No verdict possible" in visible_text(page)


def test_a_wireless_sensor_gets_battery_and_range_advice(site: Site) -> None:
    site.health["tags"].state = "disconnected"
    text = visible_text(card(site.render("en"), "tags"))
    assert "batteries" in text and "too far" in text and "No measurement has arrived yet." in text


def test_one_verdict_for_two_sensors_of_the_same_air(tmp_path: Path) -> None:
    two = CONFIG.replace('name = "co2sensor"\ntype = "scd30"', 'name = "pm2"\ntype = "pms5003"')
    site = Site(tmp_path, two)
    try:
        site.hour_of("pm", {"pm2_5": 8.0})
        site.hour_of("pm2", {"pm2_5": 22.0}, model="PMS5003")
        page = site.render("nl")
        assert page.count('<section id="verdict"') == 1
        assert 'data-band="moderate"' in page
        text = visible_text(page)
        assert "Matig" in text and "Bepaald door fijnstof PM2,5: 22,0 µg/m³ gemeten door Fijnstofmeter (PMS5003)" in text
        assert "Gemiddelde van het afgelopen uur" in text
    finally:
        site.close()


def test_sensor_names_come_from_labels_or_what_they_measure(tmp_path: Path) -> None:
    twins = CONFIG.replace('label = "Fijnstof keuken"\n', "").replace(
        'name = "co2sensor"\ntype = "scd30"', 'name = "pm2"\ntype = "sds011"')
    site = Site(tmp_path, twins)
    try:
        site.hour_of("pm", {"pm2_5": 8.0})
        site.hour_of("pm2", {"pm2_5": 9.0})
        names = home.display_names(site.model().cards, "nl")
        assert names["pm"] == "Fijnstofmeter (SDS011) 1" and names["pm2"] == "Fijnstofmeter (SDS011) 2"
        assert home.display_names(site.model().cards, "en")["pm"] == "Particulate sensor (SDS011) 1"
    finally:
        site.close()


def quality(test: str, flag: int) -> Quality:
    q = Quality()
    q.set(test, flag)
    return q


def pages_in_every_state(tmp_path: Path) -> dict[str, str]:
    """The host page in each state a host can meet, in both languages."""
    out: dict[str, str] = {}
    for lang in i18n.LANGUAGES:
        starting = Site(tmp_path / f"start-{lang}", CONFIG.replace("contact_", "# contact_"), uplink=False)
        starting.view.settings = starting.view.settings.model_copy(update={"healthz_grace_s": 1e9})
        out[f"starting {lang}"] = starting.render(lang)
        starting.close()
        busy = Site(tmp_path / f"busy-{lang}")
        busy.hour_of("pm", {"pm2_5": 31.0, "pm10": 60.0, "pm1": 20.0, "nc0_5": 900.0, "pm2_5_cf1": 40.0})
        unplug(busy, "co2sensor", 90)
        busy.health["tags"].state = "disconnected"
        busy.view.live([observation("pm", "pm10", 60.0, busy.now, quality("flat_line", QC_SUSPECT))])
        busy.view.live([observation("pm", "pm1", 20.0, busy.now, quality("gross_range", QC_FAIL))])
        out[f"busy {lang}"] = busy.render(lang, down_since=busy.now - 7200_000)
        out[f"fragment {lang}"] = busy.page.render(busy.model(), lang, fragment=True)
        busy.close()
    return out


def test_no_jargon_and_no_config_ids_on_the_host_page(tmp_path: Path) -> None:
    for state, page in pages_in_every_state(tmp_path).items():
        text = visible_text(page)
        assert not JARGON.search(text), f"{state}: {JARGON.search(text)!r} in …{text[:400]}"
        assert not CONFIG_IDS.search(text), f"{state}: {CONFIG_IDS.search(text)!r}"


def test_every_state_reads_as_intended(tmp_path: Path) -> None:
    pages = {k: visible_text(v) for k, v in pages_in_every_state(tmp_path).items()}
    assert "Het meetkastje start op" in pages["starting nl"]
    assert "Neem contact op met wie deze meter bij u geplaatst heeft." in pages["starting nl"]
    assert "Geen verbinding met het meetnet sinds" in pages["busy nl"]
    assert "2 sensoren meten niet: CO₂-meter (SCD30), Draadloze sensor." in pages["busy nl"]
    assert "Is your internet (Wi-Fi or cable) working? Unreliable measurements from:" in pages["busy en"]
    assert "Mogelijk onjuist: de waarde verandert niet meer" in pages["busy nl"]
    assert "Onbetrouwbaar, telt niet mee: buiten wat de sensor kan meten" in pages["busy nl"]
    assert "Slecht" in pages["busy nl"]  # PM10 60 and PM2.5 31 µg/m³: poor
    assert "Possibly wrong: the value has stopped changing" in pages["busy en"]
    assert "Particle" not in pages["busy en"]  # particle counts are for the technician
    assert pages["fragment nl"].strip().startswith("Luchtkwaliteit nu")


# ---------------------------------------------------------------------------------- texts
def template_keys() -> set[str]:
    keys: set[str] = set()
    for path in TEMPLATES.glob("*.html"):
        keys |= set(re.findall(r"""\bt\(\s*["'](\w+)["']""", path.read_text(encoding="utf-8")))
    return {key for key in keys if not key.endswith("_")}  # "band_" ~ band: in dynamic_keys()


def dynamic_keys() -> set[str]:
    """Keys the templates and home.py build from codes."""
    keys = {f"{p}{b}" for b in eaqi.BANDS for p in ("band_", "advice_", "advice_sensitive_")}
    keys |= {f"q_{q}" for q in home.HOST_QUANTITIES}
    keys |= {f"kind_{k}" for k, _ in home._KINDS} | {"kind_other", "kind_wireless"}
    keys |= {f"short_{q}" for q in eaqi.QUANTITIES}
    keys |= {f"verdict_{s}" for s in ("waiting", "no_working_sensor", "not_measured")}
    keys |= {f"home_{s}" for s in ("ok", "no_uplink", "starting", "not_uploading")}
    keys |= {f"value_{f}" for f in ("suspect", "fail", "missing")}
    keys |= {"test_other", "test_flat_line", "test_spike", "test_gross_range"}
    keys |= {"contact_who", "contact_fallback", "contact_then", "contact_installer"}  # contact()
    return keys


def test_every_text_exists_in_dutch_and_english() -> None:
    nl, en = i18n.TEXTS["nl"], i18n.TEXTS["en"]
    assert set(nl) == set(en)
    for key in nl:
        assert nl[key].strip() and en[key].strip(), key
        placeholders = set(re.findall(r"\{(\w+)\}", nl[key]))
        assert placeholders == set(re.findall(r"\{(\w+)\}", en[key])), key


def test_every_text_the_pages_use_is_defined() -> None:
    used = template_keys() | dynamic_keys()
    assert len(template_keys()) > 20
    missing = used - set(i18n.TEXTS["nl"])
    assert not missing, missing
    js = APP_JS.read_text(encoding="utf-8")
    js_keys = {k for k in re.findall(r'\bt\(\s*"(\w+)"', js) if not k.endswith("_")}
    js_keys |= {f"status_{c}" for c in ("ok", "starting", "no_uplink")}
    js_keys |= {f"clock_{c}" for c in ("synced", "unsynced", "unknown")}
    assert js_keys <= set(i18n.TECH_KEYS), js_keys - set(i18n.TECH_KEYS)


def test_dates_numbers_and_durations_per_language() -> None:
    ms = 1_764_930_720_000  # 2025-12-05 10:32 UTC
    nl, en = i18n.when(ms, "nl"), i18n.when(ms, "en")
    assert re.fullmatch(r"(ma|di|wo|do|vr|za|zo) \d{1,2} dec 2025, \d\d:\d\d", nl), nl
    assert re.fullmatch(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d{1,2} Dec 2025, \d\d:\d\d", en), en
    assert i18n.number(14.25, "nl") == "14,2" and i18n.number(14.26, "en") == "14.3"
    assert i18n.number(812.4, "nl") == "812"
    assert i18n.duration(7200, "nl") == "2 u" and i18n.duration(7200, "en") == "2 h"


def test_a_day_of_history_stays_a_small_chart(site: Site) -> None:
    day = [observation("pm", "pm2_5", 10.0 + (i % 7), site.now - i * 60_000) for i in range(1440, 0, -1)]
    site.view.live(day)
    stream = site.view.live.stream("pm", "pm2_5")
    assert stream is not None and len(stream.buckets) == 1440
    points = home.spark_points(stream).split()
    assert len(points) <= home.SPARK_POINTS + 1
    xs = [float(p.split(",")[0]) for p in points]
    assert xs[0] == 0 and xs[-1] == 100 and xs == sorted(xs)
    assert len(site.page.render(site.model(), "nl", fragment=True)) < 20_000
