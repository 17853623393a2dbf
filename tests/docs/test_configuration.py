"""docs/configuration.md lists exactly the keys of the settings models, and its examples validate."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from edge import config as cfg
from edge import plugins
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


def _table(key: str) -> type[BaseModel]:
    """The settings model of a capability's table, as the gateway's plug-in registry has it."""
    capability = plugins.capabilities()[key]
    assert not isinstance(capability, str), capability
    model = capability.model  # type: ignore[attr-defined]
    assert isinstance(model, type) and issubclass(model, BaseModel)
    return model


def _options(source_type: str) -> type[BaseModel]:
    """The ``options`` model of a source type, as config validation uses it."""
    found = plugins.source_types()[source_type]
    assert not isinstance(found, str), found
    return found.options


SensorThingsHttpSettings = _table("uplinks.sensorthings_http")
StaAuthSettings = _nested(SensorThingsHttpSettings, "auth")
StaTlsSettings = _nested(SensorThingsHttpSettings, "tls")
CalibrationSettings = _table("calibration")
CalibrationAssignment = _nested(CalibrationSettings, "assign")
QualitySettings = _table("quality")
QuantityThresholds = _nested(QualitySettings, "quantities")
ClimatologyRange = _nested(QuantityThresholds, "climatology")
ColocatedPair = _nested(QualitySettings, "colocated")
MlSettings = _nested(QualitySettings, "ml")
AnomalySettings = _nested(QualitySettings, "anomaly")
SecuritySettings = _table("security")
BundleSettings = _nested(SecuritySettings, "bundles")
WebSettings = _table("web")
MqttSettings = _table("uplinks.mqtt")
TlsSettings = _nested(MqttSettings, "tls")
TrafficSettings = next(
    base for base in _options("ops243").__mro__ if base.__name__ == "TrafficSettings"
)
BleSettings = _options("ble")
GattPollDevice = _nested(BleSettings, "gatt_poll")

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")

SECTIONS: dict[str, type[BaseModel]] = {
    "`[gateway]`": cfg.GatewaySettings,
    "`[[sources]]`": cfg.SourceSettings,
    "`[sources.duty_cycle]`": cfg.DutyCycle,
    "`[buffer]`": cfg.BufferSettings,
    "`[uplinks.mqtt]`": MqttSettings,
    "`[uplinks.mqtt.tls]`": TlsSettings,
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
    '`options` of a `type = "sps30"` source': _options("sps30"),
    '`options` of a `type = "ble"` source': BleSettings,
    '`gatt_poll` entries of a `type = "ble"` source': GattPollDevice,
    '`options` of a `type = "node_serial"` source': NodeSerialOptions,
    '`options` of a `type = "node_ble"` source': NodeBleOptions,
}
SERIAL_OPTIONS = "`options` of a serial sensor"
SECTIONS[SERIAL_OPTIONS] = plugins.SerialOptions


def _documented_sections() -> dict[str, list[str]]:
    """Heading (### `...` source) → keys of the table under it."""
    out: dict[str, list[str]] = {}
    for match in re.finditer(r"^### (.+?)\n(.*?)(?=^#|\Z)", DOC, re.M | re.S):
        out[match.group(1)] = re.findall(r"^\| `([a-z0-9_]+)` \|", match.group(2), re.M)
    return out


def test_every_section_is_documented_once() -> None:
    assert set(_documented_sections()) == set(SECTIONS)


def test_every_serial_sensor_understands_the_serial_options() -> None:
    for name, kind in plugins.source_types().items():
        if not isinstance(kind, str) and kind.needs_port and name != "node_serial":
            assert issubclass(kind.options, plugins.SerialOptions), name


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_documented_keys_are_exactly_the_model_fields(section: str) -> None:
    documented = _documented_sections()[section]
    assert len(documented) == len(set(documented)), "a key is listed twice"
    model = SECTIONS[section]
    own = [k for k in model.model_fields if section == SERIAL_OPTIONS
           or k not in plugins.SerialOptions.model_fields]
    assert documented == own, (
        f"{section}: docs/configuration.md and {SECTIONS[section].__name__} disagree"
    )


def test_top_level_sections_match_gateway_config() -> None:
    listed = re.findall(r"^\| `\[{1,2}([a-z_]+)\]{1,2}` +\|", DOC, re.M)
    tables = {key.split(".")[0] for key in plugins.capabilities()}
    assert set(listed) == set(cfg.CORE_TABLES) | tables
    assert sorted(k for k in plugins.capabilities() if k.startswith("uplinks.")) == [
        "uplinks.mqtt", "uplinks.sensorthings_http"]


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
    documented |= set(cfg.CORE_TABLES) | {k for key in plugins.capabilities() for k in key.split(".")}
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
    for table in ("uplinks.mqtt", "uplinks.sensorthings_http", "calibration", "quality", "web"):
        assert config.has(table), table
    data = tomllib.loads(text)
    tables = {key.split(".")[0] for key in plugins.capabilities()}
    assert set(data) == set(cfg.CORE_TABLES) | tables, "the full example misses a section"


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


def _check_options(text: str) -> int:
    """Every example source's options validate with the model of its type."""
    checked = 0
    for source in tomllib.loads(text)["sources"]:
        _options(source["type"]).model_validate(source.get("options", {}))
        checked += 1
    return checked


def test_source_options_in_the_examples_validate() -> None:
    block = re.search(r"<!-- config:full -->\n```toml\n(.*?)```", DOC, re.S)
    assert block
    assert _check_options(block.group(1)) == len(tomllib.loads(block.group(1))["sources"])
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
    uplinks = ", ".join(config.uplink_names())
    line = (f"✓ /etc/duet-edge/gateway.toml: gateway {config.gateway.id!r}, "
            f"{len(config.sources)} source(s), uplinks: {uplinks}")
    assert line in DOC
    assert line in (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
