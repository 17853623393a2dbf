"""`provision node add` against the real node firmware under MicroPython, over a real pty."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.emulation.pty_link import PtyLink
from hil.micropython_vm import MicroPythonVM, available
from provisioning.node_add import NodeAddError, onboard, source_entry, source_snippet
from tests.firmware.conftest import EmulatedNode

NODE_TICK_MS = 200


@pytest.fixture(scope="module")
def vm() -> Iterator[MicroPythonVM]:
    reason = available()
    if reason:
        pytest.fail(f"real MicroPython is required: {reason}")
    with MicroPythonVM() as machine:
        yield machine


class NodeOnPty:
    """The firmware node driven in node time, its link UART bridged to a pseudo-terminal."""

    def __init__(self, node: EmulatedNode, link: PtyLink) -> None:
        self.node, self.link = node, link
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._pump, daemon=True)

    def _pump(self) -> None:
        while not self.stop.is_set():
            self.link.wait_readable(0.02)
            rx = self.link.take() or b""
            tx = self.node.run(NODE_TICK_MS, rx)
            if tx and self.link.client_connected():
                self.link.write(tx)

    def __enter__(self) -> NodeOnPty:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt()

    def halt(self) -> None:
        """Stop driving the node (the VM is then free for direct inspection)."""
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def node_on_pty(vm: MicroPythonVM) -> Iterator[tuple[str, NodeOnPty]]:
    vm.exec("import os\nfor f in os.listdir():\n    os.remove(f)\n")  # fresh flash
    node = EmulatedNode(vm)
    node.setup(kind="air", cfg={"interval_s": 60, "pm_on_s": 60})
    with PtyLink() as link, NodeOnPty(node, link) as bridge:
        yield link.path, bridge


def test_node_add_reads_hello_pushes_config_and_confirms(
    node_on_pty: tuple[str, NodeOnPty]
) -> None:
    port, bridge = node_on_pty
    added = onboard(port, "gw-site", {"calibration_id": "cal-sds011-2026-11", "interval_s": 120},
                    timeout_s=15)
    assert added.info.node_id == "240ac4123456"
    assert added.info.firmware == "1.0.0"
    assert [s[0] for s in added.info.sensors] == ["sds011", "bme280"]
    assert added.config["calibration_id"] == "cal-sds011-2026-11"
    assert added.config["interval_s"] == 120
    # The node stored it on its flash: a reboot keeps the pushed config.
    bridge.halt()
    stored = bridge.node.eval("__import__('nodecfg').load()['calibration_id']")
    assert stored == "cal-sds011-2026-11"


def test_node_add_reports_a_refused_setting(node_on_pty: tuple[str, NodeOnPty]) -> None:
    port, _ = node_on_pty
    with pytest.raises(NodeAddError, match="refused the config: bad value for interval_s"):
        onboard(port, "gw-site", {"interval_s": 1}, timeout_s=15)


def test_node_add_on_a_silent_port(tmp_path: Path) -> None:
    with PtyLink() as link, pytest.raises(NodeAddError, match="no hello from the node within 1 s"):
        onboard(link.path, "gw-site", {"calibration_id": "x"}, timeout_s=1)


def test_source_snippet_is_valid_gateway_config() -> None:
    from edge.config import parse_config

    base = '[gateway]\nid = "gw-1"\n'
    port = '/dev/serial/by-id/usb-"odd"_name'  # quoted by tomlkit, not by string formatting
    config = parse_config(base + source_snippet(source_entry("node-1", port)))
    assert config.sources[0].type == "node_serial"
    assert config.sources[0].port == port


COMMENTED_CONFIG = """\
# Gent school gateway — edited by hand, keep these notes
[gateway]
id = "gw-1"   # the id on the label
data_dir = "{data}"

# the PM sensor by the window
[[sources]]
name = "pm"
type = "sds011"
port = "/dev/ttyUSB0"  # by-id would be better

# uploads go to the city broker
[uplinks.mqtt]
host = "127.0.0.1"
"""


def test_node_add_cli_keeps_comments_and_records_the_node(
    node_on_pty: tuple[str, NodeOnPty], tmp_path: Path
) -> None:
    import json

    from typer.testing import CliRunner

    from edge.config import load_config
    from provisioning.cli import app

    port, _ = node_on_pty
    config = tmp_path / "gw.toml"
    before = COMMENTED_CONFIG.format(data=tmp_path / "data")
    config.write_text(before)
    config.chmod(0o640)
    result = CliRunner().invoke(app, ["node", "add", port, "--config", str(config),
                                      "--calibration-id", "cal-7", "--timeout", "15"])
    assert result.exit_code == 0, result.output
    assert "node 240ac4123456 firmware 1.0.0" in result.stdout
    assert "calibration_id = 'cal-7' confirmed" in result.stdout
    text = config.read_text()
    # everything that was there is still there, byte for byte, in the same order
    assert text.startswith(before.split("# uploads go")[0])
    assert text.endswith("# uploads go to the city broker\n[uplinks.mqtt]\nhost = \"127.0.0.1\"\n")
    assert config.stat().st_mode & 0o777 == 0o640  # the file's mode is kept
    [_, node] = load_config(config).sources
    assert (node.name, node.type, node.port) == ("node-240ac4123456", "node_serial", port)
    records = json.loads((tmp_path / "gw.nodes.json").read_text())["sources"]
    [record] = records["node-240ac4123456"]
    assert record["node_id"] == "240ac4123456" and record["transport"] == "serial"
    assert [s[0] for s in record["sensors"]] == ["sds011", "bme280"]
    again = CliRunner().invoke(app, ["node", "add", port, "--config", str(config),
                                     "--timeout", "15"])
    assert again.exit_code == 0, again.output
    assert "already has a source on" in again.stdout
    assert config.read_text() == text


def test_node_add_on_a_silent_port_is_one_line_on_stderr(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from provisioning.cli import app

    config = tmp_path / "gw.toml"
    config.write_text('[gateway]\nid = "gw-1"\n\n[[sources]]\nname = "pm"\ntype = "sds011"\n'
                      'port = "/dev/ttyUSB0"\n')
    with PtyLink() as link:
        result = CliRunner().invoke(app, ["node", "add", link.path, "--config", str(config),
                                          "--timeout", "1"])
    assert result.exit_code == 1
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("✗ no hello from the node within 1 s")


def _names(url: str, set_name: str, prefix: str) -> set[str]:
    import httpx

    found: set[str] = set()
    next_url: str | None = f"{url}/{set_name}?$top=100"
    for _ in range(100):
        if next_url is None:
            break
        body = httpx.get(next_url, timeout=10).json()
        found |= {str(e["name"]) for e in body["value"] if str(e["name"]).startswith(prefix)}
        next_url = body.get("@iot.nextLink")
    return found


@pytest.mark.timeout(120)
def test_documented_workflow_node_add_then_register(
    node_on_pty: tuple[str, NodeOnPty], tmp_path: Path, sta_server: str
) -> None:
    """docs/provisioning.md steps 1, 3-7 as written: a gateway with a firmware node (serial)
    and a broadcast-only node (BLE) registers both at a real SensorThings server."""
    import json

    from typer.testing import CliRunner

    from provisioning.cli import app

    def run(*args: object, ok: bool = True) -> str:
        result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert (result.exit_code == 0) == ok, result.output
        return result.stdout if ok else result.stderr

    port, _ = node_on_pty
    gid, ident, config = "gw-nodes-1", tmp_path / "identity", tmp_path / "gateway.toml"
    run("ca", "create", "--ca-dir", tmp_path / "ca", "--name", "Test CA")
    run("init", "--broker-host", "127.0.0.1", "--gateway-id", gid, "--identity-dir", ident,
        "--config", config, "--data-dir", tmp_path / "data", "--twin-url", sta_server,
        "--source", "pm=sds011:/dev/ttyUSB0", "--latitude", "51.04", "--longitude", "3.72")
    run("ca", "sign", ident / "gateway.csr", "--ca-dir", tmp_path / "ca")
    run("install-cert", ident / "gateway.crt", "--ca", tmp_path / "ca" / "ca.crt",
        "--identity-dir", ident)
    run("node", "add", port, "--config", config, "--calibration-id", "cal-sds011-2026-11",
        "--interval-s", "120", "--timeout", "15")
    run("node", "add", port, "--config", config, "--ble-source", "ble-nodes", "--timeout", "15")

    plan = json.loads(run("register", "--config", config, "--dry-run", "--json"))
    planned = {(e["kind"], e["name"]) for e in plan["entities"]}
    serial = f"{gid}/node-240ac4123456.240ac4123456"
    assert ("Sensor", f"{serial}.sds011") in planned
    assert ("Datastream", f"{serial}.bme280/pressure") in planned
    assert ("Datastream", f"{gid}/ble-nodes.c4123456/pm2_5") in planned
    # (ObservedProperties are shared by every gateway on the server: they may exist)
    assert {e["action"] for e in plan["entities"] if e["kind"] != "ObservedProperty"} == {
        "create"}

    run("register", "--config", config)
    ids = json.loads((tmp_path / "data" / "registration.json").read_text())["datastreams"]
    node_streams = {k for k in ids if k.startswith("node-240ac4123456.")}
    assert node_streams == {
        f"node-240ac4123456.240ac4123456.{s}/{q}" for s, q in [
            ("sds011", "pm2_5"), ("sds011", "pm10"), ("bme280", "temperature"),
            ("bme280", "humidity"), ("bme280", "pressure")]}
    assert {k for k in ids if k.startswith("ble-nodes.")} == {
        f"ble-nodes.c4123456/{q}" for q in ("pm2_5", "pm10", "temperature", "humidity",
                                            "pressure")}
    assert {"pm/pm2_5", "pm/pm10"} <= set(ids)
    assert _names(sta_server, "Sensors", f"{serial}.") == {f"{serial}.sds011", f"{serial}.bme280"}
    # the same names the gateway's node session gives its observations
    from edge.node.session import NodeSession
    from edge.node.store import HwmStore
    from firmware import nodeproto as P

    session = NodeSession(gid, "node-240ac4123456", HwmStore(":memory:"), lambda: 0)
    session.feed(P.encode_message({"type": "hello", "node_id": "240ac4123456",
                                   "firmware": "1.0.0", "protocol": [1, 0],
                                   "sensors": [["sds011", "Nova Fitness SDS011", ["pm2_5"]]]}))
    batch = session.feed(P.encode_message({"type": "batch", "seq": 1, "age_ms": 0,
                                           "records": [[0, "pm2_5", 5.0, 0, 0]]}))
    assert batch.batches[0].observations[0].stream.key in ids

    before = {s: _names(sta_server, s, gid) for s in ("Sensors", "Datastreams")}
    run("register", "--config", config)  # idempotent
    assert {s: _names(sta_server, s, gid) for s in before} == before
    again = json.loads(run("register", "--config", config, "--dry-run", "--json"))
    assert {e["action"] for e in again["entities"]} == {"exists"}


def test_register_refuses_a_node_source_without_record(tmp_path: Path, sta_server: str) -> None:
    from typer.testing import CliRunner

    from provisioning.cli import app

    config = tmp_path / "gw.toml"
    config.write_text(f'[gateway]\nid = "gw-nodes-2"\ndata_dir = "{tmp_path}"\n\n'
                      '[[sources]]\nname = "air"\ntype = "node_serial"\nport = "/dev/ttyUSB3"\n\n'
                      '[[sources]]\nname = "ble"\ntype = "node_ble"\n\n'
                      f'[uplinks.sensorthings_http]\nbase_url = "{sta_server}"\n')
    result = CliRunner().invoke(app, ["register", "--config", str(config), "--dry-run"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "✗ source 'air' is a node_serial source without a node record: run "
        "`duet-edge provision node add /dev/ttyUSB3` first (it asks the node which sensors "
        "it has)"]
