"""The technician flow end to end, through the CLI, against a real TLS Mosquitto.

CA → init → sign → install-cert → register at a real SensorThings server (dry-run, twice) →
doctor → the gateway's own MQTT uplink uploads over TLS → a receiver gets the batch → revoke → the broker refuses the gateway → label, inventory,
signed config bundle. Logging is captured at DEBUG for the whole run, and every byte of
output is scanned for private key material.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import time
from pathlib import Path

import aiomqtt
import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from edge.config import load_config
from edge.contract import decode_batch
from edge.model import Datastream, Observation, Provenance
from edge.outbox import Outbox
from edge.seams import UplinkHealth
from edge.uplinks import OutboxPort
from edge.uplinks.mqtt import MqttUplink
from edge.uplinks.mqtt_settings import MqttSettings
from provisioning.cli import app
from tests.plugins.tls_broker import TlsBroker

runner = CliRunner()


def invoke(*args: str, ok: bool = True) -> str:
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code != 0, result.output
    return result.output


async def _upload_through_gateway_uplink(
    config_path: Path, tmp_path: Path, broker: TlsBroker
) -> list[str]:
    """Run the lead's MqttUplink with the config `init` wrote; return what the receiver got."""
    config = load_config(config_path)
    mqtt = config.settings(MqttSettings)
    assert mqtt is not None
    gid = config.gateway.id
    outbox = Outbox(tmp_path / "outbox.db", config.buffer, gid, uplinks=("mqtt",))
    stream = Datastream(gid, "pm", "PM2_5")
    now = int(time.time() * 1000)
    prov = Provenance("SDS011")
    outbox.append(Observation(stream, 12.5 + i, now + i * 1000, prov) for i in range(5))
    outbox.commit()
    port = OutboxPort("mqtt", outbox, asyncio.Event(), UplinkHealth("mqtt"))
    rx = broker.client("receiver-twin", role="receiver")
    tls = aiomqtt.TLSParameters(ca_certs=str(rx.ca_file), certfile=str(rx.cert_file),
                                keyfile=str(rx.key_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    got: list[str] = []
    async with aiomqtt.Client(broker.host, broker.port, tls_params=tls, timeout=5) as receiver:
        await receiver.subscribe("duet/v1/+/obs", qos=1)
        task = asyncio.create_task(MqttUplink(mqtt, gid).run(port))
        try:
            async with asyncio.timeout(10):
                async for message in receiver.messages:
                    batch = decode_batch(bytes(message.payload))  # type: ignore[arg-type]
                    got.append(f"{message.topic}:{batch.observations[0].stream.gateway_id}:"
                               f"{len(batch.observations)}")
                    break
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            outbox.close()
    return got


def _secret_needles(paths: list[Path]) -> list[str]:
    """Strings that would reveal a private key: PEM body lines, raw scalar hex/base64."""
    needles: list[str] = []
    for path in paths:
        pem = path.read_bytes()
        body = [line for line in pem.decode().splitlines() if line and "-----" not in line]
        needles += [line for line in body if len(line) >= 16]
        key = serialization.load_pem_private_key(pem, password=None)
        raw = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        needles += [raw[-32:].hex(), base64.b64encode(raw[-32:]).decode()[:20]]
        private_numbers = getattr(key, "private_numbers", None)
        if private_numbers is not None:
            needles.append(format(private_numbers().private_value, "x"))
    return needles


@pytest.mark.timeout(90)
def test_technician_flow_end_to_end(
    tmp_path: Path, tls_broker: TlsBroker, sta_server: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    out: list[str] = []
    ca_dir = tls_broker.ca.directory  # the broker trusts this CA
    ident = tmp_path / "identity"
    config = tmp_path / "gateway.toml"
    records = tmp_path / "inventory"

    out.append(invoke("init", "--broker-host", "127.0.0.1", "--broker-port", tls_broker.port,
                      "--gateway-id", "gw-flow", "--identity-dir", ident, "--config", config,
                      "--data-dir", tmp_path / "data", "--source", "pm=sds011:/dev/null",
                      "--name", "Gent school", "--latitude", "51.04", "--longitude", "3.72",
                      "--inventory-dir", records, "--twin-url", sta_server))
    assert (ident / "gateway.key").stat().st_mode & 0o777 == 0o600
    out.append(invoke("init", "--broker-host", "x", "--gateway-id", "gw-flow",
                      "--identity-dir", ident, "--config", tmp_path / "other.toml", ok=False))
    out.append(invoke("ca", "sign", ident / "gateway.csr", "--ca-dir", ca_dir, "--days", "200"))
    out.append(invoke("install-cert", ident / "gateway.crt", "--ca", ca_dir / "ca.crt",
                      "--identity-dir", ident))
    out.append(invoke("expiry", ident / "gateway.crt"))
    assert "gw-flow" in out[-1]
    plan = invoke("register", "--config", config, "--dry-run")
    out.append(plan)
    assert "would create" in plan
    out.append(invoke("register", "--config", config, "--inventory-dir", records))
    out.append(invoke("register", "--config", config))  # idempotent
    assert "would create" not in invoke("register", "--config", config, "--dry-run")
    report = invoke("doctor", "--config", config, "--timeout", "3", "--json")
    out.append(report)
    results = {r["name"].split(" ")[0]: r for r in json.loads(report)}
    assert [r for r in results.values() if r["status"] == "fail"] == []
    assert "MQTT session accepted" in results["broker"]["detail"]
    assert results["twin"]["status"] == "pass" and "of " + sta_server in results["clock"]["detail"]

    got = asyncio.run(_upload_through_gateway_uplink(config, tmp_path, tls_broker))
    assert got == ["duet/v1/gw-flow/obs:gw-flow:5"]

    out.append(invoke("ca", "list", "--ca-dir", ca_dir))
    out.append(invoke("ca", "revoke", "gw-flow", "--ca-dir", ca_dir, "--reason", "stolen"))
    tls_broker.reload()  # what `systemctl reload mosquitto` does: SIGHUP re-reads the CRL
    report = invoke("doctor", "--config", config, "--timeout", "3", "--json", ok=False)
    out.append(report)
    failed = {r["name"].split(" ")[0]: r for r in json.loads(report) if r["status"] == "fail"}
    assert list(failed) == ["broker"] and "revoked" in failed["broker"]["fix"]

    out.append(invoke("label", "--out", tmp_path / "label.png", "--gateway-id", "gw-flow",
                      "--support", "support@example.org"))
    assert (tmp_path / "label.png").read_bytes()[:4] == b"\x89PNG"
    inv = invoke("inventory", "--ca-dir", ca_dir, "--records", records, "--format", "json")
    out.append(inv)
    [row] = [r for r in json.loads(inv) if r["gateway_id"] == "gw-flow"]
    assert row["state"] == "revoked" and row["name"] == "Gent school" and row["latitude"] == 51.04
    assert row["twin"] == sta_server

    keys = tmp_path / "signing"
    out.append(invoke("bundle", "keygen", "--out-dir", keys))
    out.append(invoke("bundle", "sign", config, "--key", keys / "bundle-signing.key",
                      "--kind", "config", "--version", "1", "--out", tmp_path / "b1.json",
                      "--gateway-id", "gw-flow"))
    out.append(invoke("bundle", "verify", tmp_path / "b1.json", "--trust", keys / "trust.pem"))
    out.append(invoke("bundle", "apply", tmp_path / "b1.json", "--trust", keys / "trust.pem",
                      "--store", tmp_path / "bundles", "--gateway-id", "gw-flow"))
    out.append(invoke("bundle", "apply", tmp_path / "b1.json", "--trust", keys / "trust.pem",
                      "--store", tmp_path / "bundles", "--gateway-id", "gw-flow", ok=False))

    # No secret in any output line or log record.
    secrets = [ident / "gateway.key", ca_dir / "ca.key", keys / "bundle-signing.key",
               tls_broker.directory / "server" / "server.key"]
    needles = _secret_needles(secrets)
    haystack = "\n".join(out) + "\n" + caplog.text + "\n" + "\n".join(
        f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for log_file in tls_broker.directory.rglob("*.log"):
        haystack += log_file.read_text(errors="replace")
    assert "PRIVATE KEY" not in haystack
    leaked = [n for n in needles if n in haystack]
    assert leaked == [], "secret material leaked into output or logs"
    assert any("gateway identity created" in r.getMessage() for r in caplog.records)


def test_secret_scan_would_catch_a_leak(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Control for the scan above: a key that does reach a log line is found."""
    from provisioning.identity import create_identity

    ident = create_identity(tmp_path / "id", "gw-leak")
    needles = _secret_needles([ident.key])
    assert len(needles) >= 4
    caplog.set_level(logging.DEBUG)
    logging.getLogger("careless").debug("loaded key %s", ident.key.read_text())
    assert all(n in caplog.text for n in needles[:3])
