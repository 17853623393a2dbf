"""How capabilities plug into the gateway without the core naming them.

Three kinds of plug-in, all discovered at run time so that the core imports none of them:

* **sensors** — one folder per sensor, ``edge/sensors/<name>/``, whose package defines
  ``SENSOR: Sensor`` (codec descriptor, options model, optional own source). Built-in folders
  are found by scanning :mod:`edge.sensors`; a third-party package adds sensors through the
  entry-point group ``duet_edge.sensors`` (name → ``module:SENSOR``).
* **source kinds** that are not one sensor (the BLE scanner, firmware nodes): entry-point group
  ``duet_edge.sources`` (name → ``module:KIND``, a :class:`SourceKind`).
* **capabilities** with their own TOML table (``[calibration]``, ``[quality]``, ``[web]``,
  ``[security]``, ``[uplinks.mqtt]``…): entry-point group ``duet_edge.capabilities``
  (table key → ``module:CAPABILITY``, a :class:`Capability`). A capability validates its own
  table and builds what the runtime runs from it (pipeline stages, uplinks, services).

A plug-in that cannot be loaded (an optional extra is not installed) never switches its
validation off: the configuration error says which extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from abc import ABC
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from edge.codec import SensorDescriptor
from edge.seams import BundleSink, Source, Stage, Uplink

if TYPE_CHECKING:
    from edge.config import GatewayConfig, SourceSettings
    from edge.seams import GatewayHandle

SENSOR_PACKAGE = "edge.sensors"
SENSOR_GROUP = "duet_edge.sensors"
SOURCE_GROUP = "duet_edge.sources"
CAPABILITY_GROUP = "duet_edge.capabilities"


class SerialOptions(BaseModel):
    """``options`` every serial sensor understands; a sensor may extend this model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    silence_timeout_s: float | None = Field(
        None, gt=0, description="Reopen the port after this long without bytes."
    )
    warmup_s: float | None = Field(
        None, ge=0, description="Readings discarded after start/wake (default: the sensor's)."
    )


SourceFactory = Callable[["SourceSettings", str], Source]


@dataclass(frozen=True, slots=True)
class Sensor:
    """Everything the gateway needs to run one sensor type (defined in its folder).

    ``source`` builds a source of its own when the generic one does not fit (the OPS243 radar
    counts traffic); ``None`` means the generic serial source (serial sensors) or the BLE
    scanner (advertising sensors) reads it.
    """

    descriptor: SensorDescriptor
    options: type[BaseModel] = SerialOptions
    source: SourceFactory | None = None

    @property
    def name(self) -> str:
        return self.descriptor.name


@dataclass(frozen=True, slots=True)
class SourceKind:
    """A source type that is not a single sensor (a BLE scanner, a firmware node link)."""

    name: str
    summary: str
    options: type[BaseModel]
    factory: SourceFactory
    needs_port: bool = False
    requires: tuple[str, ...] = ()  # modules of an optional extra it needs to run
    extra: str = ""


@dataclass(frozen=True, slots=True)
class SourceType:
    """A value of ``type`` in a ``[[sources]]`` table, as config validation sees it."""

    name: str
    summary: str
    options: type[BaseModel]
    needs_port: bool


# ---------------------------------------------------------------------------- discovery
@cache
def sensors() -> dict[str, Sensor]:
    """Every sensor the gateway knows: built-in folders, then installed third-party ones."""
    found: dict[str, Sensor] = {}
    package = importlib.import_module(SENSOR_PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        if info.ispkg:
            _add_sensor(found, importlib.import_module(f"{SENSOR_PACKAGE}.{info.name}"))
    for ep in entry_points(group=SENSOR_GROUP):
        sensor = ep.load()
        if not isinstance(sensor, Sensor):
            raise TypeError(f"entry point {ep.value} is not an edge.plugins.Sensor")
        found.setdefault(sensor.name, sensor)
    return found


def _add_sensor(found: dict[str, Sensor], module: object) -> None:
    sensor = vars(module).get("SENSOR")
    if isinstance(sensor, Sensor):
        found[sensor.name] = sensor


def sensor(name: str) -> Sensor:
    """The sensor registered as ``name``; KeyError names the supported ones."""
    known = sensors()
    try:
        return known[name]
    except KeyError:
        raise KeyError(f"unknown sensor type {name!r}; supported: {', '.join(sorted(known))}") from None


@cache
def source_kinds() -> dict[str, SourceKind | str]:
    """Source kinds from entry points; a kind whose extra is missing maps to the reason."""
    kinds: dict[str, SourceKind | str] = {}
    for ep in entry_points(group=SOURCE_GROUP):
        try:
            kind = ep.load()
        except ModuleNotFoundError as exc:
            kinds[ep.name] = f"needs the Python package {exc.name!r} ({_extra_hint(ep.value)})"
            continue
        if not isinstance(kind, SourceKind):
            raise TypeError(f"entry point {ep.value} is not an edge.plugins.SourceKind")
        kinds[kind.name] = kind
    return kinds


def source_types() -> dict[str, SourceType | str]:
    """Every value ``type`` may take in ``[[sources]]``; unavailable ones map to the reason."""
    types: dict[str, SourceType | str] = {}
    for s in sensors().values():
        if s.descriptor.interface == "serial":
            types[s.name] = SourceType(
                s.name, f"{s.descriptor.manufacturer} {s.descriptor.model}", s.options, True
            )
    for name, kind in source_kinds().items():
        if isinstance(kind, str):
            types[name] = kind
        elif missing := missing_modules(kind.requires):
            types[name] = f"needs the Python package {missing[0]!r}; {install_hint(kind.extra)}"
        else:
            types[name] = SourceType(name, kind.summary, kind.options, kind.needs_port)
    return types


@cache
def capabilities() -> dict[str, AnyCapability | str]:
    """Capabilities by TOML key (``"quality"``, ``"uplinks.mqtt"``); unloadable → the reason."""
    found: dict[str, AnyCapability | str] = {}
    for ep in entry_points(group=CAPABILITY_GROUP):
        try:
            capability = ep.load()
        except ModuleNotFoundError as exc:
            found[ep.name] = f"needs the Python package {exc.name!r} ({_extra_hint(ep.value)})"
            continue
        if not isinstance(capability, Capability):
            raise TypeError(f"entry point {ep.value} is not an edge.plugins.Capability")
        found[capability.key] = capability
    return found


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    """The modules of ``modules`` that cannot be imported here (an extra not installed)."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(name)
    return missing


def install_hint(extra: str) -> str:
    """How to install an optional extra, as one phrase for an error message."""
    if not extra:
        return "install duet-edge with all extras: pip install 'duet-edge[all]'"
    return f"install the {extra!r} extra: pip install 'duet-edge[{extra}]'"


def _extra_hint(target: str) -> str:
    top = target.split(".", 1)[0].split(":", 1)[0]
    return "install duet-edge with the extra that provides it, e.g. pip install 'duet-edge[all]'" + (
        "" if top == "edge" else f" (module {target})"
    )


# ---------------------------------------------------------------------------- capabilities
S = TypeVar("S", bound=BaseModel)

Service = Callable[["GatewayHandle"], Coroutine[object, object, None]]


class Configured(Protocol):
    """A capability bound to its validated settings: what the runtime builds from it."""

    @property
    def key(self) -> str: ...

    @property
    def settings(self) -> BaseModel: ...

    def stages(self, config: GatewayConfig) -> list[Stage]: ...

    def uplinks(self, config: GatewayConfig) -> list[Uplink]: ...

    def services(self, config: GatewayConfig) -> list[Service]: ...

    def bundle_sink(self, config: GatewayConfig) -> BundleSink | None: ...

    def active_config(self, config: GatewayConfig) -> Path | None: ...

    def preflight(self, config: GatewayConfig) -> list[str]: ...

    @property
    def order(self) -> int: ...


class AnyCapability(Protocol):
    """What discovery needs of a capability, whatever its settings type."""

    @property
    def key(self) -> str: ...

    @property
    def requires(self) -> tuple[str, ...]: ...

    @property
    def extra(self) -> str: ...

    def bind(self, data: object) -> Configured: ...


class Capability(ABC, Generic[S]):
    """Base class of a capability: its TOML key, settings model and what it builds.

    Subclasses set ``key`` and ``model`` and override the hooks they need; each hook receives
    the validated settings with their own type. ``requires`` lists modules (from an optional
    extra) that must be importable for the capability to run: a missing one is a config error
    naming the extra, never a silently unchecked table.
    """

    key: ClassVar[str]
    model: type[S]
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str] = ""
    order: ClassVar[int] = 100  # stages run in ascending order

    def bind(self, data: object) -> Configured:
        """Validate ``data`` (raises pydantic's ValidationError) and bind the settings."""
        return _Bound(self, self.model.model_validate(data))

    def stages(self, settings: S, config: GatewayConfig) -> list[Stage]:
        del settings, config
        return []

    def uplinks(self, settings: S, config: GatewayConfig) -> list[Uplink]:
        del settings, config
        return []

    def services(self, settings: S, config: GatewayConfig) -> list[Service]:
        del settings, config
        return []

    def bundle_sink(self, settings: S, config: GatewayConfig) -> BundleSink | None:
        del settings, config
        return None

    def active_config(self, settings: S, config: GatewayConfig) -> Path | None:
        """A newer configuration file to run instead of the boot file (signed bundles)."""
        del settings, config
        return None

    def preflight(self, settings: S, config: GatewayConfig) -> list[str]:
        """Problems of this machine for these settings (files missing or unreadable...),
        one line each naming the key and the fix; checked by `config check` and at start."""
        del settings, config
        return []


@dataclass(frozen=True, slots=True)
class _Bound(Generic[S]):
    capability: Capability[S]
    typed_settings: S

    @property
    def key(self) -> str:
        return self.capability.key

    @property
    def order(self) -> int:
        return self.capability.order

    @property
    def settings(self) -> BaseModel:
        return self.typed_settings

    def stages(self, config: GatewayConfig) -> list[Stage]:
        return self.capability.stages(self.typed_settings, config)

    def uplinks(self, config: GatewayConfig) -> list[Uplink]:
        return self.capability.uplinks(self.typed_settings, config)

    def services(self, config: GatewayConfig) -> list[Service]:
        return self.capability.services(self.typed_settings, config)

    def bundle_sink(self, config: GatewayConfig) -> BundleSink | None:
        return self.capability.bundle_sink(self.typed_settings, config)

    def active_config(self, config: GatewayConfig) -> Path | None:
        return self.capability.active_config(self.typed_settings, config)

    def preflight(self, config: GatewayConfig) -> list[str]:
        return self.capability.preflight(self.typed_settings, config)
