"""EAQI bands, language choice, bounded history, and the /healthz buffer-capacity estimate."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.config import BufferSettings, parse_config
from edge.model import QC_PASS, QC_SUSPECT, Datastream, Observation, Provenance, Quality
from edge.outbox import Outbox
from edge.seams import GatewayCounters as Counters
from edge.seams import SourceHealth, UplinkHealth
from edge.web import eaqi, i18n
from edge.web.settings import WebSettings
from edge.web.state import LiveState
from edge.web.view import GatewayView


@pytest.mark.parametrize(
    ("qty", "value", "band"),
    [
        ("pm2_5", 0, "good"), ("pm2_5", 10, "good"), ("pm2_5", 10.1, "fair"),
        ("pm2_5", 24.9, "moderate"), ("pm2_5", 49, "poor"), ("pm2_5", 60, "very_poor"),
        ("pm2_5", 80, "extremely_poor"), ("pm10", 45, "moderate"), ("pm10", 151, "extremely_poor"),
        ("no2", 40, "good"), ("no2", 100, "moderate"), ("no2", 300, "very_poor"),
        ("pm1", 50, None), ("temperature", 20, None),
    ],
)
def test_eaqi_bands(qty: str, value: float, band: str | None) -> None:
    assert eaqi.band(qty, value) == band


@given(st.floats(0, 2000), st.floats(0, 2000))
def test_eaqi_band_never_improves_with_more_pollution(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    for qty in ("pm2_5", "pm10", "no2"):
        low_band, high_band = eaqi.band(qty, lo), eaqi.band(qty, hi)
        assert low_band is not None and high_band is not None
        assert eaqi.band_level(low_band) <= eaqi.band_level(high_band)


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        ("nl-BE,nl;q=0.9,en;q=0.8", "nl"), ("en-GB,en;q=0.9,nl;q=0.8", "en"),
        ("fr-FR,fr;q=0.9", "nl"), ("fr;q=1,nl;q=0.5,en;q=0.4", "nl"), ("", "nl"),
        (None, "nl"), ("nl;q=0, en", "en"), ("*", "nl"), ("nl;q=abc,en;q=0.1", "en"),
        ("fr;q=1,en;q=0.5", "en"),
    ],
)
def test_language_from_accept_language(header: str | None, lang: str) -> None:
    assert i18n.pick_language(header) == lang


def test_every_text_exists_in_both_languages() -> None:
    assert set(i18n.TEXTS["en"]) == set(i18n.TEXTS["nl"])


def obs(sensor: str, qty: str, value: float, ms: int, quality: Quality | None = None) -> Observation:
    return Observation(Datastream("gw", sensor, qty), value, ms, Provenance("SDS011"), quality=quality)


def test_history_is_bounded_to_24h_of_buckets() -> None:
    clock = [1_000_000.0]
    live = LiveState(bucket_s=60, history_s=3600, max_streams=2, clock=lambda: clock[0])
    for i in range(3 * 3600):  # three hours, one value a second
        clock[0] += 1
        live([obs("a", "pm2_5", float(i % 7), int(clock[0] * 1000))])
    st_a = live.stream("a", "pm2_5")
    assert st_a is not None and len(st_a.buckets) == 60
    assert st_a.buckets[-1].start_ms - st_a.buckets[0].start_ms == 59 * 60_000
    live([obs("b", "pm10", 1, 0), obs("c", "pm10", 1, 0)])
    assert len(live.streams) == 2 and live.dropped_streams == 1
    assert 0.9 < live.rate.per_second() < 1.1


def test_flag_duration_is_tracked_until_it_clears() -> None:
    live = LiveState(sample_s=0)
    stuck = Quality()
    stuck.set("flat_line", QC_SUSPECT)
    live([obs("a", "pm2_5", 5, 1_000)])
    live([obs("a", "pm2_5", 5, 2_000, stuck)])
    live([obs("a", "pm2_5", 5, 7_202_000, stuck)])
    st_a = live.stream("a", "pm2_5")
    assert st_a is not None and st_a.flagged_since == {"flat_line": 2_000}
    ok = Quality()
    ok.set("flat_line", QC_PASS)
    live([obs("a", "pm2_5", 6, 7_203_000, ok)])
    assert st_a.flagged_since == {}


def fake_gateway(tmp_path: Path, *, rate_obs: int, silent: bool) -> SimpleNamespace:
    config = parse_config(
        f"""
[gateway]
id = "gw"
data_dir = "{tmp_path}"
[[sources]]
name = "a"
type = "sds011"
port = "/dev/null"
[buffer]
max_bytes = 1048576
""")
    outbox = Outbox(tmp_path / "o.db", BufferSettings(max_bytes=1024 * 1024), "gw")
    health = SourceHealth("a")
    counters = Counters()
    counters.started_ms -= 10_000_000
    health.last_frame_ms = None if silent else counters.started_ms + 10_000_000
    uplink = UplinkHealth("mqtt", state="disconnected")
    uplink.last_confirmed_ms = counters.started_ms  # down for ~10 000 s
    return SimpleNamespace(
        config=config, outbox=outbox, counters=counters, gateway_id="gw",
        source_health={"a": health}, uplink_health={"mqtt": uplink}, listeners=[],
    )


@pytest.mark.parametrize(("rate", "healthy"), [(1, True), (20, False)])
def test_healthz_uplink_down_longer_than_the_buffer_holds(tmp_path: Path, rate: int, healthy: bool) -> None:
    """1 MiB at 64 B/observation: 1/s holds ~4.5 h (ok after 2.8 h down), 20/s ~14 min (not)."""
    gw = fake_gateway(tmp_path, rate_obs=rate, silent=False)
    live = LiveState()
    live.rate.started -= 600
    for _ in range(rate * 300):
        live.rate.add(1)
    view = GatewayView(gw, WebSettings(), live)
    ok, doc = asyncio.run(view.health())
    gw.outbox.close()
    assert ok is healthy, doc
    assert doc["uplink_down_s"] == pytest.approx(10_000, abs=5)
    if not healthy:
        assert doc["problems"] == ["uplink down longer than the buffer can hold"]
        assert doc["buffer"]["holds_s"] < doc["uplink_down_s"]


def test_healthz_fails_when_every_source_is_silent(tmp_path: Path) -> None:
    gw = fake_gateway(tmp_path, rate_obs=0, silent=True)
    gw.uplink_health = {}
    view = GatewayView(gw, WebSettings(), LiveState())
    ok, doc = asyncio.run(view.health())
    gw.outbox.close()
    assert not ok and doc["problems"] == ["no source produced data"]


def test_certificate_expiry_and_secrets_from_the_config(tmp_path: Path) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from edge.web import system

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw-cert")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "gw.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "gw.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot shown\n")
    (tmp_path / "pw").write_text("hunter2-secret\n")
    config = parse_config(f"""
[gateway]
id = "gw"
data_dir = "{tmp_path}"
[[sources]]
name = "a"
type = "sds011"
port = "/dev/null"
[uplinks.mqtt]
username = "gw"
password_file = "{tmp_path / "pw"}"
[uplinks.mqtt.tls]
cert_file = "{tmp_path / "gw.crt"}"
key_file = "{tmp_path / "gw.key"}"
ca_file = "{tmp_path / "missing-ca.crt"}"
""")
    certs = {c["setting"]: c for c in system.certificates(config)}
    mine = certs["uplinks.mqtt.tls.cert_file"]
    assert mine["subject_cn"] == "gw-cert" and 29.9 < mine["days_left"] <= 30
    assert certs["uplinks.mqtt.tls.ca_file"] == {
        "setting": "uplinks.mqtt.tls.ca_file", "error": "FileNotFoundError"
    }
    assert not any("key" in setting for setting in certs)
    assert system.secret_values(config, ["web-token-value", None]) == [
        "web-token-value", "hunter2-secret"
    ]


async def test_a_port_in_use_is_logged_and_ingest_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    from edge.web.server import StatusServer

    gw = fake_gateway(tmp_path, rate_obs=0, silent=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = StatusServer(gw, WebSettings(port=busy.getsockname()[1]))
        assert gw.listeners == [server.live]
        await asyncio.wait_for(server.serve_forever(), 5)  # returns instead of raising
    gw.outbox.close()
    assert "status page could not start" in caplog.text
    assert gw.listeners == []


def test_not_uploading_needs_no_progress_not_just_old_data(tmp_path: Path) -> None:
    from edge.web.view import BufferFacts

    gw = fake_gateway(tmp_path, rate_obs=0, silent=False)
    view = GatewayView(gw, WebSettings(), LiveState())
    uplink = gw.uplink_health["mqtt"]
    at = 10_000_000_000
    old = BufferFacts(depth=5, oldest_ms=at - 3600_000)  # e.g. a node replaying stored data
    uplink.state, uplink.last_confirmed_ms = "connected", at - 1_000
    assert view._uplink_down_since(old, at) is None
    uplink.last_confirmed_ms = at - 600_000  # connected, but nothing confirmed for 10 min
    assert view._uplink_down_since(old, at) == at - 600_000
    assert view._uplink_down_since(BufferFacts(depth=0), at) is None
    uplink.state = "disconnected"
    assert view._uplink_down_since(BufferFacts(depth=0), at) == at - 600_000
    gw.outbox.close()


def test_a_duty_cycled_sensor_asleep_is_not_silent(tmp_path: Path) -> None:
    """Silence limit = missed intervals × interval + the sleep of its duty cycle."""
    gw = fake_gateway(tmp_path, rate_obs=0, silent=False)
    gw.config = parse_config(f"""
[gateway]
id = "gw"
data_dir = "{tmp_path}"
[[sources]]
name = "a"
type = "sds011"
port = "/dev/null"
duty_cycle = {{ measure_s = 30, sleep_s = 270 }}
""")
    view = GatewayView(gw, WebSettings(healthz_missed_intervals=10), LiveState())
    last = gw.source_health["a"].last_frame_ms
    assert not view.sensor_down("a", last + 279_000)  # 10 × 1 s + 270 s asleep
    assert view.sensor_down("a", last + 281_000)
    assert view.silent_sources(last + 281_000) == [{"source": "a", "silent_s": 281.0}]
    gw.source_health["a"].state = "disconnected"
    assert view.sensor_down("a", last + 1_000)
    gw.outbox.close()


@given(st.lists(st.integers(0, 4 * 3600), min_size=1, max_size=300))
def test_history_stays_bounded_and_ordered_whatever_the_arrival_order(seconds: list[int]) -> None:
    live = LiveState(bucket_s=60, history_s=3600, sample_s=0, clock=lambda: 1_000_000.0 + 4 * 3600)
    live([obs("a", "pm2_5", 1.0, 1_000_000_000 + s * 1000) for s in seconds])
    stream = live.stream("a", "pm2_5")
    assert stream is not None
    starts = [b.start_ms for b in stream.buckets]
    assert starts == sorted(set(starts)) and len(starts) <= live.max_buckets
