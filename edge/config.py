"""The gateway's configuration: one TOML file, validated as a whole before anything starts.

A wrong file gets one clear error per problem, naming the key, the bad value and what is
allowed (:class:`ConfigError`). The gateway never starts half-configured.

Capabilities declare their own settings models next to their code (calibration, quality,
the SensorThings uplink...); this module assembles them into :class:`GatewayConfig`.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_ID_HELP = "1-64 characters: letters, digits, '_', '.', '-', starting with a letter or digit"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySettings(Strict):
    id: str = Field(
        pattern=_ID_PATTERN, description="Gateway id, unique in the region; in topics and ids."
    )
    name: str = ""
    data_dir: Path = Field(Path("/var/lib/duet-edge"), description="Outbox and state directory.")
    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)


class DutyCycle(Strict):
    """Sleep/measure cycling to spare sensor hardware (SDS011 laser life ~8000 h)."""

    measure_s: float = Field(gt=0, description="Seconds measuring per cycle, warm-up included.")
    sleep_s: float = Field(ge=0, description="Seconds asleep per cycle.")


class SourceSettings(Strict):
    name: str = Field(pattern=_ID_PATTERN, description="Sensor id within this gateway.")
    type: str = Field(description="Sensor type, e.g. sds011, pms5003.")
    port: str | None = Field(
        None, description="Serial device, e.g. /dev/ttyUSB0 or /dev/serial/by-id/..."
    )
    usb_serial: str | None = Field(None, description="Match the USB adapter by serial number.")
    baudrate: int | None = Field(None, gt=0)
    interval_s: float = Field(1.0, gt=0, le=86400, description="Seconds between observations.")
    average: bool = Field(
        False, description="Average frames over interval_s (interval phenomenon time)."
    )
    duty_cycle: DutyCycle | None = None
    serial_number: str = Field(
        "", description="Sensor serial for provenance if the sensor can't tell."
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Type-specific options.")

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        supported = supported_source_types()
        if value not in supported:
            raise ValueError(f"unknown sensor type; supported: {', '.join(sorted(supported))}")
        return value

    @model_validator(mode="after")
    def _serial_needs_port(self) -> SourceSettings:
        if _is_serial_type(self.type) and not (self.port or self.usb_serial):
            raise ValueError("a serial sensor needs 'port' (e.g. /dev/ttyUSB0) or 'usb_serial'")
        return self

    @model_validator(mode="after")
    def _options_fit_the_type(self) -> SourceSettings:
        """Type-specific options are checked here, so a bad one is a config error, not a crash."""
        model, own = _option_model(self.type)
        if model is not None:
            rest = {k: v for k, v in self.options.items() if k not in own}
            try:
                model.model_validate(rest)
            except ValidationError as exc:
                problems = "; ".join(
                    f"options.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                    for e in exc.errors()
                )
                raise ValueError(problems) from None
        return self


class BufferSettings(Strict):
    path: Path | None = Field(None, description="Outbox file; default <data_dir>/outbox.db.")
    max_bytes: int = Field(
        256 * 1024 * 1024, ge=1024 * 1024, description="Size limit of the outbox file."
    )
    eviction: Literal["oldest", "newest"] = Field(
        "oldest",
        description="When full: 'oldest' deletes the oldest rows, 'newest' refuses new rows.",
    )
    ttl_s: float | None = Field(
        None, gt=0, description="Delete unsent rows older than this (off if unset)."
    )
    commit_interval_s: float = Field(1.0, gt=0, le=60)
    commit_rows: int = Field(500, ge=1, le=100_000)
    drain_order: Literal["oldest-first", "newest-first"] = "oldest-first"
    durability: Literal["normal", "full"] = Field(
        "normal",
        description="'normal': a kill -9 loses nothing committed, a power cut up to ~35 s; "
        "'full': a power cut loses nothing committed either (fdatasync each commit).",
    )
    spill_after_s: float = Field(
        60.0, gt=0, le=3600,
        description="Committed observations no uplink confirmed within this time are written "
        "to the database; confirmed sooner, they are never written there.",
    )
    memory_max_obs: int = Field(
        20_000, ge=100, le=1_000_000,
        description="Committed observations held in memory at most (beyond: spilled at once).",
    )
    disk_reserve_bytes: int = Field(
        32 * 1024 * 1024, ge=0,
        description="Free space to leave on the outbox's filesystem; below it the eviction "
        "policy runs ('disk full').",
    )


class TlsSettings(Strict):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = Field(False, description="Skip hostname verification (lab use only).")


class MqttSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, gt=0, lt=65536)
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = Field(
        None, description="File holding the password (never inline)."
    )
    tls: TlsSettings | None = None
    mode: Literal["compact", "sensorthings"] = "compact"
    topic_prefix: str = "duet/v1"
    qos: Literal[1] = 1
    batch_size: int = Field(2000, ge=1, le=20_000)
    max_inflight: int = Field(16, ge=1, le=1000)
    keepalive_s: int = Field(30, ge=5, le=3600)
    datastream_ids: dict[str, int | str] = Field(
        default_factory=dict,
        description="SensorThings mode: '<source>/<quantity>' → Datastream id.",
    )

    @model_validator(mode="after")
    def _window_bound(self) -> MqttSettings:
        if self.batch_size * self.max_inflight > 60_000 and self.mode == "sensorthings":
            raise ValueError("batch_size × max_inflight must stay under 60000 messages in flight")
        return self


def _optional_model(module: str, name: str) -> Any:
    """A capability's own settings model, or a plain mapping when it isn't installed."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ModuleNotFoundError, AttributeError):
        return dict[str, Any]


StaHttpSettings: Any = _optional_model(
    "edge.uplinks.sensorthings_settings", "SensorThingsHttpSettings"
)
CalibrationSettings: Any = _optional_model("calibration.settings", "CalibrationSettings")
QualitySettings: Any = _optional_model("edge.quality.settings", "QualitySettings")
SecuritySettings: Any = _optional_model("provisioning.settings", "SecuritySettings")
WebSettings: Any = _optional_model("edge.web.settings", "WebSettings")


class UplinkSettings(Strict):
    mqtt: MqttSettings | None = None
    sensorthings_http: StaHttpSettings | None = None


class RuntimeSettings(Strict):
    backoff_initial_s: float = Field(0.5, gt=0, le=60, description="First reconnect delay.")
    backoff_max_s: float = Field(30.0, gt=0, le=3600, description="Longest reconnect delay.")
    drain_timeout_s: float = Field(
        5.0, ge=0, le=300, description="At shutdown, time to upload what is committed."
    )


class LogSettings(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class GatewayConfig(Strict):
    gateway: GatewaySettings
    sources: Annotated[list[SourceSettings], Field(min_length=1)]
    buffer: BufferSettings = BufferSettings()
    uplinks: UplinkSettings = UplinkSettings()
    calibration: CalibrationSettings | None = None
    quality: QualitySettings | None = None
    security: SecuritySettings | None = None
    runtime: RuntimeSettings = RuntimeSettings()
    log: LogSettings = LogSettings()
    web: WebSettings | None = None

    @model_validator(mode="after")
    def _unique_source_names(self) -> GatewayConfig:
        seen: set[str] = set()
        for source in self.sources:
            if source.name in seen:
                raise ValueError(f"two sources are named {source.name!r}; names must be unique")
            seen.add(source.name)
        return self

    @property
    def outbox_path(self) -> Path:
        return self.buffer.path or self.gateway.data_dir / "outbox.db"


class ConfigError(Exception):
    """A configuration file that cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(
            f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in problems)
        )


def supported_source_types() -> set[str]:
    from edge.codecs.base import all_descriptors
    from edge.sources import SOURCE_FACTORIES, load_builtin_sources

    load_builtin_sources()
    ble_only = {
        d.name for d in all_descriptors() if d.interface == "ble"
    }  # read by the "ble" source
    return ({d.name for d in all_descriptors()} - ble_only) | set(SOURCE_FACTORIES)


_SERIAL_OPTIONS = {"silence_timeout_s", "warmup_s", "fan_cleaning_interval_s"}


class SerialOptions(Strict):
    """``options`` every serial sensor understands (type-specific sources add their own)."""

    silence_timeout_s: float | None = Field(
        None, gt=0, description="Reopen the port after this long without bytes."
    )
    warmup_s: float | None = Field(
        None, ge=0, description="Readings discarded after start/wake (default: the sensor's)."
    )
    fan_cleaning_interval_s: float | None = Field(
        None, ge=0, description="SPS30 fan cleaning period (0: off)."
    )


def _option_model(type_name: str) -> tuple[Any, set[str]]:
    """The pydantic model for a source type's ``options`` and the keys handled elsewhere."""
    if type_name == "ops243":
        from edge.traffic import TrafficSettings

        return TrafficSettings, _SERIAL_OPTIONS
    if type_name == "ble":
        try:
            from edge.ble.settings import BleSettings
        except ModuleNotFoundError:
            return None, set()
        return BleSettings, {"names", "replay", "replay_speed"}
    if type_name in ("node_serial", "node_ble"):
        try:
            from edge.node.settings import NodeBleOptions, NodeSerialOptions
        except ModuleNotFoundError:
            return None, set()
        return (NodeSerialOptions if type_name == "node_serial" else NodeBleOptions), set()
    if _is_serial_type(type_name):
        return SerialOptions, set()
    return None, set()


def _is_serial_type(type_name: str) -> bool:
    from edge.codecs.base import REGISTRY

    desc = REGISTRY.get(type_name)
    return desc is not None and desc.interface == "serial"


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a TOML file; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror}"]) from None
    return parse_config(text, source=str(path))


def parse_config(text: str, source: str = "<config>") -> GatewayConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(err, data) for err in exc.errors()]) from None


def _describe(err: Any, data: dict[str, Any]) -> str:
    """One line: key path, the bad value, and what is allowed."""
    key = _key_path(err["loc"], data)
    kind = err["type"]
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "extra_forbidden":
        return f"{key}: unknown key (check the spelling; see the example config for allowed keys)"
    value = err.get("input")
    message = str(err["msg"]).removeprefix("Value error, ")
    if kind == "string_pattern_mismatch":
        message = f"must be {_ID_HELP}"
    if isinstance(value, dict):  # a whole table: the message names the key inside it
        return f"{key}: {message}"
    return f"{key} = {_show(value)}: {message}"


def _key_path(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """Render a pydantic location as a TOML key, using the source's name for list items."""
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            label = ""
            if isinstance(node, list) and item < len(node) and isinstance(node[item], dict):
                name = node[item].get("name")
                label = f" (name = {name!r})" if isinstance(name, str) else ""
            parts[-1] = f"{parts[-1]}[{item}]{label}" if parts else f"[{item}]"
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            item_s = str(item)
            if re.fullmatch(r"function-after\[.*\]|function-before\[.*\]", item_s):
                continue
            parts.append(item_s)
            node = node.get(item_s) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
