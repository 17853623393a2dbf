"""A gateway set up with `provision init` serves its host page on the home network, read-only."""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from typer.testing import CliRunner

from edge.config import load_config
from edge.outbox import Outbox
from edge.seams import GatewayCounters as Counters
from edge.seams import SourceHealth
from edge.web.server import StatusServer
from edge.web.settings import WebSettings
from provisioning.cli import app

pytestmark = pytest.mark.timeout(60)


def init(tmp_path: Path, *extra: str) -> tuple[int, str, Path]:
    config = tmp_path / "gateway.toml"
    result = CliRunner().invoke(app, [
        "init", "--broker-host", "mqtt.example", "--gateway-id", "gw-home-1",
        "--identity-dir", str(tmp_path / "id"), "--config", str(config),
        "--data-dir", str(tmp_path / "data"), "--source", "pm=sds011:/dev/ttyUSB0",
        "--name", "Kerkstraat 12, Gent", *extra])
    return result.exit_code, result.output, config


def test_init_writes_a_web_section_for_the_home_network(tmp_path: Path) -> None:
    code, output, path = init(tmp_path, "--contact-name", "Jan Peeters",
                              "--contact-email", "jan@example.org", "--contact-phone", "+32 9 123 45 67")
    assert code == 0, output
    assert f"http://{socket.gethostname()}.local:8080/" in output
    web = tomllib.loads(path.read_text())["web"]
    assert web == {"host": "0.0.0.0", "port": 8080, "contact_name": "Jan Peeters",
                   "contact_email": "jan@example.org", "contact_phone": "+32 9 123 45 67"}
    settings = load_config(path).settings(WebSettings)
    assert settings is not None and settings.token_file is None  # read-only
    assert "# contact_url" in path.read_text()  # the technician sees what else can be set


def test_init_refuses_a_bad_contact_before_writing_anything(tmp_path: Path) -> None:
    code, output, path = init(tmp_path, "--contact-email", "not-an-address")
    assert code == 1 and "contact_email" in output
    assert not path.exists() and not (tmp_path / "id" / "gateway.key").exists()


def test_a_hand_written_web_section_stays_on_this_machine() -> None:
    assert WebSettings().host == "127.0.0.1"


async def test_the_provisioned_page_listens_on_every_interface_and_refuses_actions(tmp_path: Path) -> None:
    code, output, path = init(tmp_path)
    assert code == 0, output
    config = load_config(path)
    settings = config.settings(WebSettings)
    assert settings is not None
    outbox = Outbox(tmp_path / "outbox.db", config.buffer, "gw-home-1")
    gateway = SimpleNamespace(
        config=config, outbox=outbox, counters=Counters(), gateway_id="gw-home-1",
        source_health={"pm": SourceHealth("pm")}, uplink_health={}, listeners=[],
    )
    server = StatusServer(gateway, settings.model_copy(update={"port": 0}))
    await server.start()
    try:
        assert server._runner is not None
        bound = {s.getsockname()[0] for site in server._runner.sites
                 for s in (getattr(site, "_server", None).sockets or [])}
        assert bound == {"0.0.0.0"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as client:
            page = await client.get("/", headers={"Accept-Language": "nl"})
            assert page.status_code == 200 and "Kerkstraat 12, Gent" in page.text
            assert (await client.post("/api/actions/upload")).status_code == 403
            tech = await client.get("/tech")
            assert 'id="actions"' not in tech.text and "actions_off" in tech.text
    finally:
        await server.close()
        outbox.close()
