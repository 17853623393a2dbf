"""[uplinks.sensorthings_http] settings: valid examples and errors that name the problem."""

from __future__ import annotations

import tomllib

import pytest
from pydantic import ValidationError

from edge.sensorthings.settings import SensorThingsHttpSettings

EXAMPLE = """
base_url = "https://sta.example.org/FROST-Server/v1.1/"
batch_size = 1000
phenomenon_interval = "end_instant"

[auth]
type = "bearer"
token_file = "/etc/duet-edge/sta-token"

[tls]
ca_file = "/etc/duet-edge/ca.pem"
"""


def test_example_section_parses() -> None:
    s = SensorThingsHttpSettings.model_validate(tomllib.loads(EXAMPLE))
    assert s.base_url == "https://sta.example.org/FROST-Server/v1.1"  # trailing / dropped
    assert s.auth.type == "bearer" and s.tls is not None
    assert s.phenomenon_interval == "end_instant"


def test_defaults() -> None:
    s = SensorThingsHttpSettings(base_url="http://127.0.0.1:8080/v1.1")
    assert (s.batch_size, s.phenomenon_interval, s.create_observations) == (500, "auto", True)
    assert s.auth.type == "none" and s.tls is None


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"base_url": "ftp://x/v1.1"}, "http:// or https://"),
        ({"base_url": "https://x/v1.1?a=1"}, "query"),
        ({"base_url": "https://x", "batch_size": 0}, "greater than or equal to 1"),
        ({"base_url": "https://x", "phenomenon_interval": "start"}, "'interval', 'end_instant'"),
        ({"base_url": "https://x", "auth": {"type": "bearer"}}, "exactly one of token_file"),
        ({"base_url": "https://x", "auth": {"type": "basic", "password_env": "P"}},
         "needs username"),
        ({"base_url": "https://x", "auth": {"token_env": "T"}}, "type = 'none' takes no"),
        ({"base_url": "https://x", "auth": {"type": "bearer", "token": "inline"}},
         "Extra inputs are not permitted"),
        ({"base_url": "https://x", "tls": {"key_file": "k.pem"}}, "key_file needs cert_file"),
        ({"base_url": "https://x", "bogus": 1}, "Extra inputs"),
    ],
)
def test_invalid_settings_are_explained(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError) as err:
        SensorThingsHttpSettings.model_validate(data)
    assert fragment in str(err.value)


def test_gateway_config_validates_the_section_with_this_model() -> None:
    from edge.plugins import capabilities

    capability = capabilities()["uplinks.sensorthings_http"]
    assert getattr(capability, "model", None) is SensorThingsHttpSettings


GATEWAY = """
[gateway]
id = "gw-1"
[[sources]]
name = "pm"
type = "sds011"
port = "/dev/ttyUSB0"
[uplinks.sensorthings_http]
"""


def test_errors_through_the_gateway_config_name_the_key() -> None:
    config = pytest.importorskip("edge.config")
    bad = GATEWAY + 'base_url = "ftp://x"\ntokn = 1\n[uplinks.sensorthings_http.auth]\n' \
        'type = "bearer"\n'
    with pytest.raises(config.ConfigError) as err:
        config.parse_config(bad)
    text = str(err.value)
    assert "uplinks.sensorthings_http.base_url = 'ftp://x': must be an http://" in text
    assert "uplinks.sensorthings_http.tokn: unknown key" in text
    assert "uplinks.sensorthings_http.auth: type = 'bearer' needs" in text


def test_runtime_builds_the_uplink_from_the_section(tmp_path: object) -> None:
    config = pytest.importorskip("edge.config")
    runtime = pytest.importorskip("edge.runtime")
    cfg = config.parse_config(GATEWAY + 'base_url = "https://sta.example.org/v1.1"\n'
                              'batch_size = 250\n')
    (runner,) = runtime.build_uplinks(cfg)
    assert runner.name == "sensorthings_http" and runner.batch_size == 250
    assert runner.uplink.gateway_id == "gw-1"
