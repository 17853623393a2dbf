"""Signed config bundles pushed over MQTT to a running gateway: applied and loaded, or refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import paho.mqtt.publish as publish
import pytest

from provisioning.bundles import generate_signing_key, load_signing_key, sign_bundle
from tests.plugins.mosquitto import Broker
from tests.spine.harness import GatewayProcess, wait_until

pytestmark = pytest.mark.timeout(90)


def config_text(tmp: Path, port: int, name: str, anchor: Path) -> str:
    return (
        f'[gateway]\nid = "gw-b"\nname = "{name}"\ndata_dir = "{tmp / "data"}"\n'
        f'[[sources]]\nname = "ble"\ntype = "ble"\n'
        f'options = {{ replay = "{Path("hil/recordings/ble-vectors.jsonl").resolve()}" }}\n'
        f"[uplinks.mqtt]\nport = {port}\n"
        f'[security]\nidentity_dir = "{tmp / "id"}"\n'
        f'[security.bundles]\ntrust_anchor = "{anchor}"\nstore_dir = "{tmp / "bundles"}"\n'
    )


def test_signed_config_bundle_is_applied_and_a_forged_one_refused(
    tmp_path: Path, mosquitto: Broker
) -> None:
    anchor = tmp_path / "anchor.pem"
    generate_signing_key(tmp_path / "signing.key", anchor)
    key = load_signing_key(tmp_path / "signing.key")
    boot = tmp_path / "gateway.toml"
    boot.write_text(config_text(tmp_path, mosquitto.port, "boot", anchor))
    gw = GatewayProcess(boot, tmp_path / "gw.log")
    gw.start()
    try:
        wait_until(lambda: '"uplink_connected"' in gw.log(), 20, "gateway connected")
        topic = "duet/v1/gw-b/config/bundle"
        # a bundle signed by somebody else: refused, the gateway keeps running
        other = tmp_path / "other.pem"
        generate_signing_key(tmp_path / "other.key", other)
        forged = sign_bundle(
            "config", 1, {"gateway.toml": b"x"}, load_signing_key(tmp_path / "other.key")
        )
        publish.single(topic, forged, qos=1, hostname="127.0.0.1", port=mosquitto.port)
        wait_until(lambda: '"bundle_refused"' in gw.log(), 20, "forged bundle refused")
        assert gw.proc is not None and gw.proc.poll() is None
        # a good one: applied, and the gateway restarts to load it (exit code 75 for systemd)
        new = config_text(tmp_path, mosquitto.port, "from-bundle", anchor).encode()
        good = sign_bundle("config", 2, {"gateway.toml": new}, key, gateway_id="gw-b")
        publish.single(topic, good, qos=1, hostname="127.0.0.1", port=mosquitto.port)
        assert gw.proc is not None
        assert gw.proc.wait(30) == 75, gw.log()
        gw.proc = None
    finally:
        if gw.proc is not None:
            gw.terminate()
    assert '"bundle_applied"' in gw.log()
    active = tmp_path / "bundles" / "config" / "current" / "gateway.toml"
    assert b"from-bundle" in active.read_bytes()
    # the next start uses the verified bundle, not the boot file
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from edge.commands.run_cmd import _active_bundle_config;"
            "from edge.config import load_config; import sys;"
            f"print(_active_bundle_config(load_config({str(boot)!r})).gateway.name)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "from-bundle"
