"""`provision node add` against the real node firmware under MicroPython, over a real pty."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.emulation.pty_link import PtyLink
from hil.micropython_vm import MicroPythonVM, available
from provisioning.node_add import NodeAddError, onboard, source_snippet
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
    config = parse_config(base + source_snippet("node-1", "/dev/ttyUSB1"))
    assert config.sources[0].type == "node_serial"


def test_node_add_cli(node_on_pty: tuple[str, NodeOnPty], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from provisioning.cli import app

    port, _ = node_on_pty
    config = tmp_path / "gw.toml"
    config.write_text(f'[gateway]\nid = "gw-1"\ndata_dir = "{tmp_path}"\n\n[[sources]]\n'
                      'name = "pm"\ntype = "sds011"\nport = "/dev/ttyUSB0"\n')
    result = CliRunner().invoke(app, ["node", "add", port, "--config", str(config),
                                      "--calibration-id", "cal-7", "--timeout", "15"])
    assert result.exit_code == 0, result.output
    assert "node 240ac4123456 firmware 1.0.0" in result.output
    assert "calibration_id = 'cal-7' confirmed" in result.output
    text = config.read_text()
    if "node_serial" not in text:  # the lead has not registered the node_serial source yet
        assert 'type = "node_serial"' in result.output
    else:
        assert f'port = "{port}"' in text
