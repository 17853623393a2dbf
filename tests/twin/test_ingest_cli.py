"""`duet-edge ingest` as an operator runs it: one-line errors, /metrics, /healthz, a summary."""

from __future__ import annotations

import inspect
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.contract import encode_batch
from edge.model import Batch
from provisioning.broker import render_broker_config
from tests.plugins.mosquitto import Broker, free_port
from tests.sta.helpers import make_obs
from tests.sta.tls_proxy import make_pki

pytestmark = pytest.mark.timeout(60)
UNIT = Path(__file__).resolve().parents[2] / "provisioning/systemd/duet-edge-ingest.service"


def test_missing_tls_file_is_one_line_naming_it(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["ingest", "--ca-file", str(tmp_path / "ca.pem"),
                                   "--store", str(tmp_path / "twin.db"), "--check"])
    assert res.exit_code == 2
    assert res.output.strip() == f"ingest: --ca-file {tmp_path / 'ca.pem'}: no such file"


def test_a_gateway_certificate_is_refused_before_it_receives_nothing(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")  # its client certificate is CN gw-tls
    res = CliRunner().invoke(app, ["ingest", "--ca-file", str(pki.ca_file), "--cert-file",
                                   str(pki.client_cert), "--key-file", str(pki.client_key),
                                   "--store", str(tmp_path / "twin.db"), "--check"])
    assert res.exit_code == 2
    line = res.output.strip()
    assert "\n" not in line and "is for 'gw-tls', not a receiver" in line
    assert "CN receiver-" in line


def test_check_opens_the_store(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["ingest", "--store", str(tmp_path / "twin.db"), "--check"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "twin.db").exists()
    res = CliRunner().invoke(app, ["ingest", "--store", "postgresql://nobody@127.0.0.1:1/x",
                                   "--check"])
    assert res.exit_code == 2
    assert res.output.startswith("ingest: cannot open the store postgresql://nobody@127.0.0.1")


def test_shipped_unit_speaks_tls_on_the_port_broker_config_renders() -> None:
    cmd = re.search(r"^ExecStart=(.*?)(?<!\\)$", UNIT.read_text(), re.M | re.S)
    assert cmd is not None
    text = cmd.group(1)
    assert "--ca-file" in text and "--cert-file" in text and "--key-file" in text
    assert "--port" not in text  # 8883 is the default with --ca-file
    assert inspect.signature(render_broker_config).parameters["port"].default == 8883


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_healthz_and_summary(tmp_path: Path, mosquitto: Broker) -> None:
    http = free_port()
    log = tmp_path / "ingest.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from edge.cli import main; main()", "ingest", "--port",
             str(mosquitto.port), "--store", str(tmp_path / "twin.db"), "--http",
             f"127.0.0.1:{http}", "--client-id", "rx-metrics"],
            stdout=out, stderr=out, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        deadline = time.monotonic() + 20
        status = 0
        while time.monotonic() < deadline and status != 200:
            time.sleep(0.2)
            try:
                status, body = get(f"http://127.0.0.1:{http}/healthz")
            except OSError:
                continue
        assert status == 200, log.read_text()
        assert json.loads(body)["status"] == "ok"
        pub = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        pub.connect("127.0.0.1", mosquitto.port)
        pub.loop_start()
        gw = "gw-metrics"
        now = int(time.time() * 1000)
        batch = Batch(gw, tuple(make_obs(gw, s, t_ms=now - 1000) for s in range(1, 6)))
        pub.publish(f"duet/v1/{gw}/obs", encode_batch(batch, sent_ms=now), qos=1).wait_for_publish()
        pub.publish(f"duet/v1/{gw}/obs", b"garbage", qos=1).wait_for_publish()
        pub.publish(f"duet/v1/{gw}/status", json.dumps(
            {"state": "online", "version": "9.9.9", "backlog": 3}), qos=1,
            retain=True).wait_for_publish()
        pub.loop_stop()
        pub.disconnect()
        deadline = time.monotonic() + 20
        metrics = ""
        while time.monotonic() < deadline:
            _, metrics = get(f"http://127.0.0.1:{http}/metrics")
            if "duet_ingest_observations_stored_total 5.0" in metrics and \
                    'duet_ingest_messages_total{kind="status"} 1.0' in metrics:
                break
            time.sleep(0.3)
        assert "duet_ingest_observations_stored_total 5.0" in metrics
        assert "duet_ingest_rejected_messages_total 1.0" in metrics
        assert "duet_ingest_connected 1.0" in metrics
        assert "duet_ingest_end_to_end_seconds_count 1.0" in metrics
        # JSON-LD of what is stored, same server
        status, doc = get(f"http://127.0.0.1:{http}/oslo?gateway={gw}")
        assert status == 200 and len(json.loads(doc)["@graph"]) > 5
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "ingest summary: 3 messages, 5 observations stored, 0 duplicates, 1 rejected" in text
    res = CliRunner().invoke(app, ["fleet", "--store", str(tmp_path / "twin.db"), "--json"])
    row = json.loads(res.output)["gateways"][0]
    assert (row["gateway"], row["version"], row["backlog"], row["observations"]) == (
        "gw-metrics", "9.9.9", 3, 5)


def test_forward_config_errors_are_one_line(tmp_path: Path) -> None:
    config = tmp_path / "sta.toml"
    config.write_text('[sensorthings]\nbase_url = "https://frost.example/v1.1"\n'
                      '[sensorthings.auth]\ntype = "oauth2"\nclient_id = "duet"\n')
    res = CliRunner().invoke(app, ["ingest", "--store", str(tmp_path / "twin.db"),
                                   "--forward-sta-config", str(config), "--check"])
    assert res.exit_code == 2
    line = res.output.strip()
    assert "\n" not in line and line.startswith(f"ingest: --forward-sta-config {config}:")
    assert "token_url" in line
    config.write_text('[sensorthings]\nbase_url = "https://frost.example/v1.1"\n'
                      'headers = { Authorization = "Bearer x" }\n')
    res = CliRunner().invoke(app, ["ingest", "--store", str(tmp_path / "twin.db"),
                                   "--forward-sta-config", str(config), "--check"])
    assert res.exit_code == 2 and "carries a credential" in res.output
    config.write_text('[sensorthings]\nbase_url = "https://frost.example/v1.1"\n'
                      'headers = { commit-message = "duet-edge" }\n')
    res = CliRunner().invoke(app, ["ingest", "--store", str(tmp_path / "twin.db"),
                                   "--forward-sta-config", str(config), "--check"])
    assert res.exit_code == 0, res.output
