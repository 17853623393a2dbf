"""API, metrics, health and actions against a running gateway fed by emulated sensors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.web import eaqi
from tests.web.conftest import MQTT_PASSWORD, TOKEN, wait_until

pytestmark = pytest.mark.timeout(90)


def get(live: dict[str, Any], path: str, **kw: Any) -> httpx.Response:
    return httpx.get(live["url"] + path, timeout=5, **kw)


def post(live: dict[str, Any], path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.post(live["url"] + path, headers=headers, timeout=5)


def values(live: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    doc = get(live, "/api/latest").json()
    return {(s["name"], v["quantity"]): v for s in doc["sensors"] for v in s["values"]}


def both_sensors(live: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]] | None:
    got = values(live)
    return got if ("sds", "pm2_5") in got and ("pms", "pm2_5") in got else None


def test_latest_values_with_units_and_eaqi_bands(live: dict[str, Any]) -> None:
    got = wait_until(lambda: both_sensors(live), 20, "values from both sensors")
    for (sensor, qty), v in got.items():
        assert v["time_ms"] > 0 and v["count"] >= 1, (sensor, qty)
        if qty in ("pm2_5", "pm10"):
            assert v["unit"] == "ug/m3" and v["unit_symbol"] == "µg/m³"
            assert v["band"] == eaqi.band(qty, v["value"]) and v["band"] in eaqi.BANDS
        elif qty.startswith("nc"):
            assert v["band"] is None
    first = got[("sds", "pm2_5")]
    later = wait_until(
        lambda: (v := values(live)[("sds", "pm2_5")])["count"] > first["count"] and v, 10, "new value"
    )
    assert later["time_ms"] > first["time_ms"]


def test_status_reports_sources_buffer_and_uplink(live: dict[str, Any]) -> None:
    wait_until(lambda: both_sensors(live), 20, "values")
    doc = wait_until(
        lambda: (d := get(live, "/api/status").json())["uplinks"][0]["last_confirmed_ms"] and d,
        20,
        "a confirmed upload",
    )
    assert doc["gateway"] == "gw-web"
    assert doc["overall"]["codes"] == ["ok"] and doc["overall"]["level"] == "ok"
    sources = {s["name"]: s for s in doc["sources"]}
    assert set(sources) == {"sds", "pms"}
    for s in sources.values():
        assert s["state"] == "connected" and s["frames_ok"] > 0 and s["last_frame_ms"]
        assert s["problem"] is False and s["interval_s"] == 0.5
    assert doc["uplinks"][0]["name"] == "mqtt" and doc["uplinks"][0]["state"] == "connected"
    buffer = doc["buffer"]
    assert buffer["max_bytes"] == 256 * 1024 * 1024 and buffer["size_bytes"] > 0
    assert buffer["ingest_per_s"] > 0 and buffer["holds_s"] > 0
    assert doc["counters"]["received"] > 0 and doc["counters"]["evicted"] == 0
    assert doc["clock"]["sync"] in ("synced", "unsynced", "unknown")
    assert doc["versions"]["runtime"]["duet-edge"]
    assert doc["versions"]["sensors"]["sds"]["sensorModel"] == "SDS011"


def test_history_has_buckets_per_stream(live: dict[str, Any]) -> None:
    wait_until(lambda: both_sensors(live), 20, "values")
    doc = get(live, "/api/history").json()
    assert doc["bucket_s"] == 60
    streams = {(s["sensor"], s["quantity"]): s["points"] for s in doc["streams"]}
    start, mean, low, high = streams[("sds", "pm2_5")][-1]
    assert start % 60_000 == 0 and low <= mean <= high


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_in_prometheus_format(live: dict[str, Any]) -> None:
    wait_until(lambda: both_sensors(live), 20, "values")
    r = get(live, "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    m = metric_samples(r.text)
    status = get(live, "/api/status").json()
    assert m[("duet_outbox_received_total", ())] >= 1
    assert m[("duet_observations_in_total", ())] >= m[("duet_outbox_received_total", ())]
    assert m[("duet_source_frames_ok_total", (("source", "sds"),))] >= 1
    assert m[("duet_source_up", (("source", "pms"),))] == 1.0
    assert m[("duet_uplink_up", (("uplink", "mqtt"),))] == 1.0
    assert m[("duet_buffer_max_bytes", ())] == status["buffer"]["max_bytes"]
    assert ("duet_observation_value", (("quantity", "pm2_5"), ("sensor", "sds"), ("unit", "ug/m3"))) in m
    assert m[("duet_outbox_evicted_total", ())] == 0


def test_pages_pick_the_browser_language(live: dict[str, Any]) -> None:
    nl = get(live, "/", headers={"Accept-Language": "nl-BE,nl;q=0.9,en;q=0.8"})
    assert nl.status_code == 200 and '<html lang="nl">' in nl.text
    assert "Luchtkwaliteit nu" in nl.text and nl.headers["Content-Language"] == "nl"
    assert "web test gateway" in nl.text  # the site name from [gateway] name
    en = get(live, "/", headers={"Accept-Language": "fr-FR,en;q=0.5"})
    assert '<html lang="en">' in en.text and "Air quality now" in en.text
    french = get(live, "/", headers={"Accept-Language": "fr-FR"})
    assert '<html lang="nl">' in french.text  # Dutch first
    tech = get(live, "/tech?lang=nl")
    assert "technische weergave" in tech.text
    assert "script-src 'self'" in tech.headers["Content-Security-Policy"]
    js = get(live, "/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert get(live, "/static/../settings.py").status_code == 404


def test_the_language_switch_is_remembered(live: dict[str, Any]) -> None:
    with httpx.Client(base_url=live["url"], timeout=5, headers={"Accept-Language": "nl"}) as browser:
        assert '<html lang="nl">' in browser.get("/").text
        switched = browser.get("/?lang=en")
        assert '<html lang="en">' in switched.text and "duet_lang=en" in switched.headers["set-cookie"]
        assert '<html lang="en">' in browser.get("/").text  # the cookie, not the browser's nl
        assert "Air quality now" in browser.get("/home/main").text
        assert "technician view" in browser.get("/tech").text


def test_actions_need_the_token(live: dict[str, Any]) -> None:
    wait_until(lambda: both_sensors(live), 20, "values")
    assert 'id="actions"' in get(live, "/tech").text  # a token is configured: the form is there
    assert post(live, "/api/actions/upload").status_code == 401
    assert post(live, "/api/actions/upload", "wrong").status_code == 401
    assert post(live, "/api/actions/restart/sds", "wrong").status_code == 401
    assert httpx.get(live["url"] + "/api/actions/upload").status_code == 405
    ok = post(live, "/api/actions/upload", TOKEN)
    assert ok.status_code == 200 and ok.json()["uplinks_woken"] == ["mqtt"]
    assert post(live, "/api/actions/restart/nope", TOKEN).status_code == 404


def test_restart_a_source_from_the_page(live: dict[str, Any]) -> None:
    wait_until(lambda: both_sensors(live), 20, "values")
    before = {s["name"]: s for s in get(live, "/api/status").json()["sources"]}["sds"]
    r = post(live, "/api/actions/restart/sds", TOKEN)
    assert r.status_code == 200 and r.json() == {"restarted": "sds"}

    def sds_back() -> dict[str, Any] | None:
        s = {s["name"]: s for s in get(live, "/api/status").json()["sources"]}["sds"]
        return s if s["state"] == "connected" and s["frames_ok"] > before["frames_ok"] + 2 else None

    after = wait_until(sds_back, 20, "sds running again")
    assert after["reconnects"] == before["reconnects"] + 1
    assert after["last_error"] in ("restarted from the status page", "") or "opened" in after["last_error"]
    tasks = live["gw"].call(
        lambda: [t.get_name() for t in __import__("asyncio").all_tasks() if not t.done()]
    )
    assert tasks.count("source:sds") == 1


def scan_all(live: dict[str, Any]) -> dict[str, str]:
    bodies = {}
    for path in ("/", "/tech", "/api/status", "/api/latest", "/api/history", "/metrics",
                 "/healthz", "/static/app.js", "/static/style.css", "/nope"):
        for lang in ("en", "nl"):
            bodies[f"GET {path} {lang}"] = get(live, path, headers={"Accept-Language": lang}).text
    for path in ("/api/actions/upload", "/api/actions/restart/sds"):
        bodies[f"POST {path}"] = post(live, path, "not-the-token").text
        bodies[f"POST {path} none"] = post(live, path).text
    return bodies


def test_no_secret_on_any_page(live: dict[str, Any]) -> None:
    wait_until(lambda: both_sensors(live), 20, "values")
    token_file = str(live["work"] / "web.token")
    for where, body in scan_all(live).items():
        assert TOKEN not in body, where
        assert MQTT_PASSWORD not in body, where
        assert "[redacted]" not in body, f"{where}: a page tried to show a secret"
        assert token_file not in body, where


def test_a_secret_that_leaks_into_state_is_redacted(live: dict[str, Any]) -> None:
    gw = live["gw"]
    gw.call(lambda: setattr(gw.gateway.uplink_health["mqtt"], "last_error", f"auth {MQTT_PASSWORD}"))
    try:
        body = get(live, "/api/status").text
        assert MQTT_PASSWORD not in body and "auth [redacted]" in body
    finally:
        gw.call(lambda: setattr(gw.gateway.uplink_health["mqtt"], "last_error", ""))


def test_healthz_fails_when_no_source_produces_data(live: dict[str, Any]) -> None:
    wait_until(lambda: both_sensors(live), 20, "values")
    assert get(live, "/healthz").status_code == 200
    live["sds"].silence(8)
    live["pms"].silence(8)  # 6 intervals of 0.5 s = 3 s
    bad = wait_until(lambda: (r := get(live, "/healthz")).status_code == 503 and r.json(), 10, "503")
    assert bad["problems"] == ["no source produced data"]
    assert {s["source"] for s in bad["silent_sources"]} == {"sds", "pms"}
    status = get(live, "/api/status").json()
    assert "sensor_problem" in status["overall"]["codes"]
    assert sorted(status["overall"]["sensors"]) == ["pms", "sds"]
    wait_until(lambda: get(live, "/healthz").status_code == 200, 15, "healthy again")


def test_status_line_says_not_uploading_while_the_broker_is_down(live: dict[str, Any]) -> None:
    wait_until(lambda: both_sensors(live), 20, "values")
    broker = live["broker"]
    broker.stop()
    try:
        doc = wait_until(
            lambda: "not_uploading" in (d := get(live, "/api/status").json())["overall"]["codes"] and d,
            20,
            "not uploading",
        )
        assert doc["overall"]["not_uploading_since_ms"] <= doc["now_ms"]
        assert doc["overall"]["level"] == "warn"
        health = get(live, "/healthz")
        assert health.status_code == 200  # the buffer holds hours at this rate
        assert health.json()["uplink_down_s"] is not None
    finally:
        broker.start()
    wait_until(lambda: get(live, "/api/status").json()["overall"]["codes"] == ["ok"], 30, "ok again")


def test_quality_flags_with_their_duration(live: dict[str, Any]) -> None:
    from tests.web.conftest import emit_stuck_values

    emit_stuck_values(live["gw"])
    v = values(live)[("stuck", "pm10")]
    assert v["quality"] == "suspect" and v["band"] == "good"
    assert [(f["test"], f["flag"]) for f in v["flags"]] == [("flat_line", "suspect")]
    assert v["flags"][0]["for_s"] == pytest.approx(7200, abs=5)
