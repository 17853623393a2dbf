"""The gateway's configuration: one TOML file, validated as a whole before anything starts.

A wrong file gets one clear error per problem, naming the key, the bad value and what is
allowed (:class:`ConfigError`). The gateway never starts half-configured.

This module knows only the core tables (``[gateway]``, ``[[sources]]``, ``[buffer]``,
``[runtime]``, ``[log]``). Every other table belongs to a capability that validates it
itself (:mod:`edge.plugins`), and ``[[sources]]`` options are checked by the model of the
sensor or source kind named by ``type``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from edge import plugins

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
    options: dict[str, object] = Field(
        default_factory=dict, description="Type-specific options."
    )
    label: str = Field(
        "",
        max_length=60,
        description="Name the host sees on the status page, e.g. 'Fijnstof woonkamer'.",
    )

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        types = plugins.source_types()
        found = types.get(value)
        if found is None:
            available = sorted(k for k, v in types.items() if not isinstance(v, str))
            raise ValueError(f"unknown sensor type; supported: {', '.join(available)}")
        if isinstance(found, str):
            raise ValueError(f"sensor type {value!r} is not available here: {found}")
        return value

    @model_validator(mode="after")
    def _fits_the_type(self) -> SourceSettings:
        """Port and type-specific options are checked here: a bad one is a config error."""
        kind = plugins.source_types().get(self.type)
        if kind is None or isinstance(kind, str):
            return self  # reported by _known_type
        if kind.needs_port and not (self.port or self.usb_serial):
            raise ValueError("a serial sensor needs 'port' (e.g. /dev/ttyUSB0) or 'usb_serial'")
        try:
            kind.options.model_validate(self.options)
        except ValidationError as exc:
            problems = "; ".join(
                f"options.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
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


class RuntimeSettings(Strict):
    backoff_initial_s: float = Field(0.5, gt=0, le=60, description="First reconnect delay.")
    backoff_max_s: float = Field(30.0, gt=0, le=3600, description="Longest reconnect delay.")
    drain_timeout_s: float = Field(
        5.0, ge=0, le=300, description="At shutdown, time to upload what is committed."
    )


class LogSettings(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


CORE_TABLES = ("gateway", "sources", "buffer", "runtime", "log")
UPLINKS = "uplinks"  # [uplinks.<name>] tables are capabilities keyed "uplinks.<name>"

_T = TypeVar("_T", bound=BaseModel)


class GatewayConfig(Strict):
    """A validated configuration: the core tables plus every configured capability."""

    gateway: GatewaySettings
    sources: Annotated[list[SourceSettings], Field(min_length=1)]
    buffer: BufferSettings = BufferSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    log: LogSettings = LogSettings()
    _capabilities: dict[str, plugins.Configured] = PrivateAttr(default_factory=dict)

    @property
    def capabilities(self) -> list[plugins.Configured]:
        """Configured capabilities, in table order of :func:`plugins.capabilities`."""
        return list(self._capabilities.values())

    def settings(self, model: type[_T]) -> _T | None:
        """The validated settings of the capability whose model is ``model`` (None: absent)."""
        for configured in self._capabilities.values():
            found = configured.settings
            if isinstance(found, model):
                return found
        return None

    def tables(self) -> dict[str, BaseModel]:
        """Every configured table by key: the core ones, then each capability's settings."""
        core: dict[str, BaseModel] = {"gateway": self.gateway, "buffer": self.buffer}
        core |= {"runtime": self.runtime, "log": self.log}
        core |= {f"sources[{i}]": s for i, s in enumerate(self.sources)}
        return core | {key: c.settings for key, c in self._capabilities.items()}

    def uplink_names(self) -> list[str]:
        """Names of the configured uplinks, sorted (the outbox keeps its books in this order)."""
        prefix = f"{UPLINKS}."
        return sorted(k.removeprefix(prefix) for k in self._capabilities if k.startswith(prefix))

    def has(self, key: str) -> bool:
        """True when the table ``key`` (``"web"``, ``"uplinks.mqtt"``…) is configured."""
        return key in self._capabilities

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


def preflight(config: GatewayConfig) -> list[str]:
    """What this machine lacks to run ``config`` (unwritable data_dir, unreadable TLS files…),
    one line per problem naming the key and the fix. Validation itself never touches files, so
    a config can be checked anywhere; `config check` and `run` call this as well."""
    problems = [
        f"{key} = {str(path)!r}: {why}"
        for key, path in (("gateway.data_dir", config.gateway.data_dir),
                          ("buffer.path", config.outbox_path.parent))
        if (why := _unwritable_dir(path))
    ]
    for capability in config.capabilities:
        problems += capability.preflight(config)
    return list(dict.fromkeys(problems))


def _unwritable_dir(path: Path) -> str:
    """Why the gateway could not create files in ``path`` (creating it if needed), or ""."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{str(existing)!r} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return (f"not writable by this user (fix the owner of {str(existing)!r}, e.g. "
                f"chown duet-edge {existing})")
    return ""


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
    core = {k: v for k, v in data.items() if k in CORE_TABLES}
    problems: list[str] = []
    config: GatewayConfig | None = None
    try:
        config = GatewayConfig.model_validate(core)
    except ValidationError as exc:
        problems += [_describe(err, core) for err in exc.errors()]
    configured: dict[str, plugins.Configured] = {}
    for key, table in _capability_tables(data, problems):
        bound = _bind(key, table, problems)
        if bound is not None:
            configured[key] = bound
    if problems or config is None:
        raise ConfigError(source, problems)
    config._capabilities = configured
    return config


def _capability_tables(
    data: Mapping[str, object], problems: list[str]
) -> list[tuple[str, object]]:
    """Every non-core table as (capability key, table), ``[uplinks.x]`` keyed ``uplinks.x``."""
    tables: list[tuple[str, object]] = []
    for key, value in data.items():
        if key in CORE_TABLES:
            continue
        if key == UPLINKS:
            if not isinstance(value, dict):
                problems.append(f"{UPLINKS}: must be a table of uplinks, e.g. [uplinks.mqtt]")
                continue
            tables += [(f"{UPLINKS}.{name}", table) for name, table in value.items()]
        else:
            tables.append((key, value))
    return tables


def _bind(key: str, table: object, problems: list[str]) -> plugins.Configured | None:
    """Validate one capability table; a problem (unknown table, missing extra) is reported."""
    capability = plugins.capabilities().get(key)
    if capability is None:
        known = sorted([*CORE_TABLES, *plugins.capabilities()])
        problems.append(f"{key}: unknown table (known tables: {', '.join(known)})")
        return None
    if isinstance(capability, str):
        problems.append(f"{key}: configured but not available: {capability}")
        return None
    missing = plugins.missing_modules(capability.requires)
    if missing:
        problems.append(
            f"{key}: needs the Python package {missing[0]!r}; "
            f"{plugins.install_hint(capability.extra)}"
        )
        return None
    try:
        return capability.bind(table)
    except ValidationError as exc:
        scope = table if isinstance(table, dict) else {}
        problems += [_describe(err, scope, prefix=key) for err in exc.errors()]
        return None


def _describe(err: ErrorDetails, data: Mapping[str, object], prefix: str = "") -> str:
    """One line: key path, the bad value, and what is allowed."""
    key = _key_path(err["loc"], data, prefix)
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


def _key_path(loc: tuple[int | str, ...], data: Mapping[str, object], prefix: str = "") -> str:
    """Render a pydantic location as a TOML key, using the source's name for list items."""
    parts: list[str] = [prefix] if prefix else []
    node: object = data
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


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
