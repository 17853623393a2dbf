"""In-place TOML edits (provisioning.config_edit): comments, layout, mode and owner survive."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edge.config import ConfigError, parse_config
from provisioning.config_edit import ConfigEdit, ConfigEditError

STARTER = """\
# duet-edge gateway configuration written by `duet-edge provision init`.
# Validate after editing with: duet-edge config check FILE

[gateway]
id = "gw-gent-0001"   # on the label
data_dir = "/var/lib/duet-edge"

# the PM sensor by the window
[[sources]]
name = "pm"
type = "sds011"
port = "/dev/ttyUSB0"

# the city broker
[uplinks.mqtt]
host = "mqtt.gent.example"
port = 8883
mode = "sensorthings"  # JSON per observation

# TLS with this gateway's own certificate
[uplinks.mqtt.tls]
ca_file = "/etc/duet-edge/identity/ca.crt"

# the twin
[uplinks.sensorthings_http]
base_url = "https://twin.example/v1.1"
"""

NODE = {"name": "node-240ac4123456", "type": "node_serial", "port": "/dev/ttyUSB1",
        "baudrate": 115200, "options": {"state_path": "/var/lib/duet-edge/nodes.db"}}


def _validate(text: str) -> None:
    parse_config(text)


def test_added_source_and_ids_keep_every_comment_in_place(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(STARTER)
    path.chmod(0o640)
    edit = ConfigEdit(path)
    edit.add_source(NODE)
    edit.merge_table(("uplinks", "mqtt", "datastream_ids"), {"pm/pm2_5": 7, "pm/pm10": "x8"},
                     "written by register")
    edit.save(_validate)
    assert path.read_text() == STARTER.replace(
        'port = "/dev/ttyUSB0"\n\n',
        'port = "/dev/ttyUSB0"\n\n[[sources]]\nname = "node-240ac4123456"\n'
        'type = "node_serial"\nport = "/dev/ttyUSB1"\nbaudrate = 115200\n'
        'options = {state_path = "/var/lib/duet-edge/nodes.db"}\n\n',
    ).replace(
        'ca_file = "/etc/duet-edge/identity/ca.crt"\n\n',
        'ca_file = "/etc/duet-edge/identity/ca.crt"\n\n[uplinks.mqtt.datastream_ids]\n'
        '# written by register\n"pm/pm2_5" = 7\n"pm/pm10" = "x8"\n\n',
    )
    assert path.stat().st_mode & 0o777 == 0o640
    data = tomllib.loads(path.read_text())
    assert data["uplinks"]["mqtt"]["datastream_ids"] == {"pm/pm2_5": 7, "pm/pm10": "x8"}


def test_ids_already_inline_are_updated_where_they_are(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(STARTER.replace('mode = "sensorthings"  # JSON per observation\n',
                                    'mode = "sensorthings"\ndatastream_ids = { "pm/pm2_5" = 1 }'
                                    "  # by hand\n"))
    edit = ConfigEdit(path)
    assert edit.merge_table(("uplinks", "mqtt", "datastream_ids"), {"pm/pm2_5": 5, "pm/pm10": 6})
    edit.save(_validate)
    text = path.read_text()
    assert text.count("datastream_ids") == 1 and "# by hand" in text
    assert tomllib.loads(text)["uplinks"]["mqtt"]["datastream_ids"] == {"pm/pm2_5": 5,
                                                                          "pm/pm10": 6}


def test_first_source_in_a_file_without_sources(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[gateway]\nid = "gw-1"\n# end of the gateway table\n')
    edit = ConfigEdit(path)
    edit.add_source({"name": "ble-nodes", "type": "node_ble"})
    edit.save(_validate)
    assert path.read_text() == ('[gateway]\nid = "gw-1"\n# end of the gateway table\n\n'
                                '[[sources]]\nname = "ble-nodes"\ntype = "node_ble"\n')


def test_an_invalid_result_leaves_the_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(STARTER)
    edit = ConfigEdit(path)
    edit.add_source({"name": "pm", "type": "sds011", "port": "/dev/ttyUSB9"})  # duplicate name
    with pytest.raises(ConfigError, match="two sources are named 'pm'"):
        edit.save(_validate)
    assert path.read_text() == STARTER
    assert [p.name for p in tmp_path.iterdir()] == ["gateway.toml"]  # no temporary left


def test_unparsable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("[gateway\n")
    with pytest.raises(ConfigEditError, match="cannot edit"):
        ConfigEdit(path)
