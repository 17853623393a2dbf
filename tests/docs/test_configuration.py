"""docs/configuration.md lists exactly the keys of the settings models, and its examples validate."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from edge import config as cfg
from edge.node.settings import NodeBleOptions, NodeSerialOptions


def _nested(model: Any, field: str) -> Any:
    """The settings model of a field (unwrapping optional, list and dict), found through the
    models the gateway really uses, so that moving a model to another module changes nothing."""
    stack = [model.model_fields[field].annotation]
    while stack:
        kind = stack.pop()
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind
        stack.extend(get_args(kind))
    raise AssertionError(f"{model.__name__}.{field} has no settings model")


SensorThingsHttpSettings = cfg.StaHttpSettings
StaAuthSettings = _nested(SensorThingsHttpSettings, "auth")
StaTlsSettings = _nested(SensorThingsHttpSettings, "tls")
CalibrationSettings = cfg.CalibrationSettings
CalibrationAssignment = _nested(CalibrationSettings, "assign")
QualitySettings = cfg.QualitySettings
QuantityThresholds = _nested(QualitySettings, "quantities")
ClimatologyRange = _nested(QuantityThresholds, "climatology")
ColocatedPair = _nested(QualitySettings, "colocated")
MlSettings = _nested(QualitySettings, "ml")
AnomalySettings = _nested(QualitySettings, "anomaly")
SecuritySettings = cfg.SecuritySettings
BundleSettings = _nested(SecuritySettings, "bundles")
WebSettings = cfg.WebSettings
TrafficSettings = cfg._option_model("ops243")[0]
BleSettings = cfg._option_model("ble")[0]
GattPollDevice = _nested(BleSettings, "gatt_poll")

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")

SECTIONS: dict[str, type[BaseModel]] = {
    "`[gateway]`": cfg.GatewaySettings,
    "`[[sources]]`": cfg.SourceSettings,
    "`[sources.duty_cycle]`": cfg.DutyCycle,
    "`[buffer]`": cfg.BufferSettings,
    "`[uplinks.mqtt]`": cfg.MqttSettings,
    "`[uplinks.mqtt.tls]`": cfg.TlsSettings,
    "`[uplinks.sensorthings_http]`": SensorThingsHttpSettings,
    "`[uplinks.sensorthings_http.auth]`": StaAuthSettings,
    "`[uplinks.sensorthings_http.tls]`": StaTlsSettings,
    "`[calibration]`": CalibrationSettings,
    "`[[calibration.assign]]`": CalibrationAssignment,
    "`[quality]`": QualitySettings,
    "`[quality.quantities.<code>]`": QuantityThresholds,
    "`[[quality.quantities.<code>.climatology]]`": ClimatologyRange,
    "`[[quality.colocated]]`": ColocatedPair,
    "`[quality.anomaly]`": AnomalySettings,
    "`[quality.ml]`": MlSettings,
    "`[security]`": SecuritySettings,
    "`[security.bundles]`": BundleSettings,
    "`[runtime]`": cfg.RuntimeSettings,
    "`[log]`": cfg.LogSettings,
    "`[web]`": WebSettings,
    '`options` of a `type = "ops243"` source': TrafficSettings,
    '`options` of a `type = "ble"` source': BleSettings,
    '`gatt_poll` entries of a `type = "ble"` source': GattPollDevice,
    '`options` of a `type = "node_serial"` source': NodeSerialOptions,
    '`options` of a `type = "node_ble"` source': NodeBleOptions,
}
# Documented keys a source reads itself, next to its settings model.
EXTRA_KEYS = {'`options` of a `type = "ble"` source': ["names", "replay", "replay_speed"]}
SERIAL_OPTIONS = "`options` of a serial sensor"


def _documented_sections() -> dict[str, list[str]]:
    """Heading (### `...` source) → keys of the table under it."""
    out: dict[str, list[str]] = {}
    for match in re.finditer(r"^### (.+?)\n(.*?)(?=^#|\Z)", DOC, re.M | re.S):
        out[match.group(1)] = re.findall(r"^\| `([a-z0-9_]+)` \|", match.group(2), re.M)
    return out


def test_every_section_is_documented_once() -> None:
    assert set(_documented_sections()) == set(SECTIONS) | {SERIAL_OPTIONS}


def test_serial_options_are_the_ones_the_serial_source_reads() -> None:
    source = (ROOT / "edge" / "sources" / "serial.py").read_text(encoding="utf-8")
    read = set(re.findall(r"options\.get\(\"(\w+)\"", source))
    assert set(_documented_sections()[SERIAL_OPTIONS]) == read


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_documented_keys_are_exactly_the_model_fields(section: str) -> None:
    documented = _documented_sections()[section]
    assert len(documented) == len(set(documented)), "a key is listed twice"
    assert documented == list(SECTIONS[section].model_fields) + EXTRA_KEYS.get(section, []), (
        f"{section}: docs/configuration.md and {SECTIONS[section].__name__} disagree"
    )


def test_top_level_sections_match_gateway_config() -> None:
    listed = re.findall(r"^\| `\[{1,2}([a-z_]+)\]{1,2}` +\|", DOC, re.M)
    assert listed == list(cfg.GatewayConfig.model_fields)
    assert list(cfg.UplinkSettings.model_fields) == ["mqtt", "sensorthings_http"]


def test_section_models_are_installed() -> None:
    """Sections declared by capabilities resolve to their models (not a plain table)."""
    for model in (SensorThingsHttpSettings, CalibrationSettings, QualitySettings,
                  SecuritySettings, WebSettings, TrafficSettings, BleSettings):
        assert isinstance(model, type) and issubclass(model, BaseModel), model


def test_documented_defaults_of_core_sections() -> None:
    sections = _documented_sections()
    for section in ("`[gateway]`", "`[buffer]`", "`[uplinks.mqtt]`", "`[runtime]`", "`[log]`",
                    "`[web]`"):
        model = SECTIONS[section]
        for key in sections[section]:
            field = model.model_fields[key]
            row = re.search(rf"^\| `{key}` \| [^|]+ \| ([^|]+) \|", _section_text(section), re.M)
            assert row, key
            shown = row.group(1).strip()
            if field.is_required():
                assert shown == "**required**", key
            elif field.default is None:
                assert shown.startswith("unset") or "type" in shown, key
            elif isinstance(field.default, bool):
                assert shown == f"`{str(field.default).lower()}`", key
            elif isinstance(field.default, int | float | str | Path):
                assert shown.split()[0].strip("`\"") == str(field.default), key


def _section_text(section: str) -> str:
    found = re.search(rf"^### {re.escape(section)}\n(.*?)(?=^#|\Z)", DOC, re.M | re.S)
    assert found
    return found.group(1)


def test_example_config_file_validates() -> None:
    config = cfg.load_config(ROOT / "edge" / "example-config.toml")
    assert config.gateway.id == "gw-gent-0001"


def test_every_key_of_the_example_config_is_documented() -> None:
    data = tomllib.loads((ROOT / "edge" / "example-config.toml").read_text(encoding="utf-8"))
    documented = {key for keys in _documented_sections().values() for key in keys}
    documented |= set(cfg.GatewayConfig.model_fields) | set(cfg.UplinkSettings.model_fields)
    for key in _keys(data):
        assert key in documented, key


# Tables whose keys are chosen by the user (or documented per source type), not schema keys.
_FREE_TABLES = {"options", "datastream_ids", "quantities", "co_inputs"}


def _keys(data: Any) -> set[str]:
    if isinstance(data, list):
        return set().union(*(_keys(item) for item in data)) if data else set()
    if isinstance(data, dict):
        nested = [_keys(v) for k, v in data.items() if k not in _FREE_TABLES]
        return set(data) | set().union(*nested) if data else set()
    return set()


def test_full_example_in_the_doc_validates(tmp_path: Path) -> None:
    block = re.search(r"<!-- config:full -->\n```toml\n(.*?)```", DOC, re.S)
    assert block
    artefacts = tmp_path / "calibrations"
    artefacts.mkdir()
    text = block.group(1).replace("/etc/duet-edge/calibrations", str(artefacts))
    config = cfg.parse_config(text)
    assert config.uplinks.mqtt is not None and config.uplinks.sensorthings_http is not None
    assert config.calibration is not None and config.quality is not None
    assert config.web is not None
    data = tomllib.loads(text)
    assert set(data) == set(cfg.GatewayConfig.model_fields), "the full example misses a section"


def test_documented_error_output_is_what_the_code_says() -> None:
    block = re.search(r"```toml\n(\[gateway\]\nid = \"gw gent 01\".*?)```", DOC, re.S)
    assert block
    with pytest.raises(cfg.ConfigError) as err:
        cfg.parse_config(block.group(1), source="broken.toml")
    # The list of supported types grows with new source kinds; the rest must match exactly.
    doc = _SUPPORTED.sub("supported: …", DOC)
    text = _SUPPORTED.sub("supported: …", str(err.value))
    assert "$ .venv/bin/duet-edge run broken.toml\n" + text + "\n```" in doc
    lines = [f"  - {_SUPPORTED.sub('supported: …', p)}" for p in err.value.problems]
    check = "$ .venv/bin/duet-edge config check broken.toml\n✗ broken.toml: 6 problem(s)\n"
    assert check + "\n".join(lines) + "\n```" in doc


_SUPPORTED = re.compile(r"supported: [a-z0-9_, ]+")


_OPTION_MODELS: dict[str, type[BaseModel]] = {
    "ops243": TrafficSettings,
    "ble": BleSettings,
    "node_serial": NodeSerialOptions,
    "node_ble": NodeBleOptions,
}
_SOURCE_READS = {"warmup_s", "silence_timeout_s", "fan_cleaning_interval_s", "names", "replay",
                 "replay_speed"}  # read by the source, not the model


def _check_options(text: str) -> int:
    checked = 0
    for source in tomllib.loads(text)["sources"]:
        model = _OPTION_MODELS.get(source["type"])
        options = {k: v for k, v in source.get("options", {}).items() if k not in _SOURCE_READS}
        if model is not None:
            model.model_validate(options)
            checked += 1
        else:
            assert not options, f"{source['name']}: options {sorted(options)} not documented"
    return checked


def test_source_options_in_the_examples_validate() -> None:
    block = re.search(r"<!-- config:full -->\n```toml\n(.*?)```", DOC, re.S)
    assert block
    assert _check_options(block.group(1)) == 3
    assert _check_options((ROOT / "edge" / "example-config.toml").read_text(encoding="utf-8"))


def test_documented_option_error_is_what_the_code_says() -> None:
    found = re.search(r"e\.g\.\n?`(sources\[0\] \(name = 'traffic-radar'\): options\.[^`]+)`",
                      DOC.replace("\n", " ").replace("e.g. ", "e.g.\n"))
    assert found
    text = ('[gateway]\nid = "gw-1"\n[[sources]]\nname = "traffic-radar"\ntype = "ops243"\n'
            'port = "/dev/ttyACM0"\noptions = { inbound_side = "left" }\n')
    with pytest.raises(cfg.ConfigError) as err:
        cfg.parse_config(text)
    assert err.value.problems == [found.group(1)]


def test_documented_check_of_the_example_matches() -> None:
    config = cfg.load_config(ROOT / "edge" / "example-config.toml")
    uplinks = ", ".join(k for k, v in config.uplinks if v is not None)
    line = (f"✓ /etc/duet-edge/gateway.toml: gateway {config.gateway.id!r}, "
            f"{len(config.sources)} source(s), uplinks: {uplinks}")
    assert line in DOC
    assert line in (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
