"""`provision register` against a real SensorThings server: idempotent, dry-run, sensor swap."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from edge.uplinks.mqtt_settings import MqttSettings
from provisioning.cli import app

runner = CliRunner()


def _config(path: Path, gateway_id: str, url: str, data_dir: Path, source: str = "pm",
            sensor: str = "sds011") -> Path:
    path.write_text(f"""
[gateway]
id = "{gateway_id}"
data_dir = "{data_dir}"

[[sources]]
name = "{source}"
type = "{sensor}"
port = "/dev/ttyUSB0"

[uplinks.sensorthings_http]
base_url = "{url}"
""")
    return path


def _run(*args: object, ok: bool = True) -> str:
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert (result.exit_code == 0) == ok, result.output
    return result.output


def _count(url: str, set_name: str, prefix: str) -> int:
    """Entities whose name starts with ``prefix`` (follows nextLink pages, bounded)."""
    count, next_url = 0, f"{url}/{set_name}?$top=100"
    for _ in range(100):
        response = httpx.get(next_url, timeout=10)
        response.raise_for_status()
        body = response.json()
        count += sum(1 for e in body["value"] if str(e.get("name", "")).startswith(prefix))
        next_url = body.get("@iot.nextLink")
        if not next_url:
            break
    return count


def test_register_is_idempotent_and_dry_run_creates_nothing(
    tmp_path: Path, sta_server: str
) -> None:
    gid = "gw-reg-1"
    data = tmp_path / "data"
    config = _config(tmp_path / "gw.toml", gid, sta_server, data)
    site = tmp_path / "site.toml"
    site.write_text("latitude = 51.05\nlongitude = 3.72\n")

    plan = _run("register", "--config", config, "--site", site, "--dry-run")
    assert "would create" in plan and "Datastream" in plan
    assert _count(sta_server, "Things", gid) == 0

    first = _run("register", "--config", config, "--site", site)
    assert f"{gid}" not in first or "→ Datastream" in first
    counts = {s: _count(sta_server, s, gid) for s in ("Things", "Sensors", "Datastreams")}
    assert counts["Things"] == 1 and counts["Sensors"] == 1 and counts["Datastreams"] >= 2
    thing = httpx.get(f"{sta_server}/Things", params={"$filter": f"name eq '{gid}'",
                                                       "$expand": "Locations"}, timeout=10)
    [entity] = thing.json()["value"]
    assert entity["Locations"][0]["location"]["coordinates"][:2] == [3.72, 51.05]
    ids_first = json.loads((data / "registration.json").read_text())["datastreams"]

    # Twice, and again with the local id cache gone: nothing new on the server.
    _run("register", "--config", config, "--site", site)
    (data / "sensorthings-ids.json").unlink()
    (data / "registration.json").unlink()
    _run("register", "--config", config)
    assert {s: _count(sta_server, s, gid) for s in counts} == counts
    assert json.loads((data / "registration.json").read_text())["datastreams"] == ids_first
    plan = _run("register", "--config", config, "--dry-run")
    assert "would create" not in plan


def test_changed_sensor_gets_new_datastreams_and_history_stays(tmp_path: Path, sta_server: str) -> None:
    gid = "gw-reg-2"
    data = tmp_path / "data"
    config = _config(tmp_path / "gw.toml", gid, sta_server, data)
    _run("register", "--config", config, "--latitude", "51", "--longitude", "4")
    first = json.loads((data / "registration.json").read_text())["datastreams"]
    old_id = first["pm/pm2_5"]
    # history on the old Datastream
    posted = httpx.post(f"{sta_server}/Observations", json={
        "phenomenonTime": "2026-01-01T00:00:00Z", "result": 12.5,
        "Datastream": {"@iot.id": old_id}}, timeout=10)
    assert posted.status_code in (200, 201), posted.text

    swapped = _config(tmp_path / "gw.toml", gid, sta_server, data, sensor="pms5003")
    _run("register", "--config", swapped)
    second = json.loads((data / "registration.json").read_text())["datastreams"]
    assert second["pm/pm2_5"] != old_id  # the new sensor writes into a new Datastream
    from edge.sensorthings import entity_path

    old = httpx.get(f"{sta_server}/{entity_path('Datastreams', old_id)}", timeout=10).json()
    assert "~retired-" in old["name"] and "~retired-" in old["properties"]["duetKey"]
    kept_url = f"{sta_server}/{entity_path('Datastreams', old_id)}/Observations"
    kept = httpx.get(kept_url, timeout=10).json()["value"]
    assert [o["result"] for o in kept] == [12.5]  # history untouched
    # running it again changes nothing
    _run("register", "--config", swapped)
    assert json.loads((data / "registration.json").read_text())["datastreams"] == second


def test_register_without_twin_section_is_explained(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('[gateway]\nid = "gw-x"\n\n[[sources]]\nname = "pm"\ntype = "sds011"\n'
                      'port = "/dev/ttyUSB0"\n')
    out = _run("register", "--config", config, ok=False)
    assert "[uplinks.sensorthings_http]" in out


def test_register_stores_ids_for_the_mqtt_sensorthings_mode(
    tmp_path: Path, sta_server: str
) -> None:
    from edge.config import load_config

    gid = "gw-reg-3"
    data = tmp_path / "data"
    config = _config(tmp_path / "gw.toml", gid, sta_server, data)
    config.write_text(config.read_text() + """
# the broker of the city
[uplinks.mqtt]
host = "127.0.0.1"
mode = "sensorthings"
""")
    _run("register", "--config", config, "--latitude", "51", "--longitude", "4")
    ids = json.loads((data / "registration.json").read_text())["datastreams"]
    mqtt = load_config(config).settings(MqttSettings)
    assert mqtt is not None
    stored = mqtt.datastream_ids
    assert stored == ids and set(stored) == {"pm/pm2_5", "pm/pm10"}
    _run("register", "--config", config)  # again: same table, written once
    text = config.read_text()
    assert text.count("[uplinks.mqtt.datastream_ids]") == 1
    assert "# the broker of the city" in text
    mqtt = load_config(config).settings(MqttSettings)
    assert mqtt is not None and mqtt.datastream_ids == ids


@pytest.mark.skipif(os.geteuid() != 0, reason="changes file owners")
def test_register_as_root_leaves_the_data_dir_files_to_the_service_user(
    tmp_path: Path, sta_server: str
) -> None:
    """The uplink (service user) rewrites the id cache register wrote: root must not own it."""
    nobody = pwd.getpwnam("nobody")
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, nobody.pw_uid, nobody.pw_gid)
    config = _config(tmp_path / "gw.toml", "gw-reg-own", sta_server, data)
    _run("register", "--config", config, "--latitude", "51", "--longitude", "4")
    for name in ("registration.json", "sensorthings-ids.json"):
        assert (data / name).stat().st_uid == nobody.pw_uid, name
