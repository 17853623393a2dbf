"""`duet-edge sensors`: every sensor type and source kind this installation knows.

Everything shown comes from the registry (:mod:`edge.plugins`): a sensor folder added under
``edge/sensors/`` (or a third-party package on the ``duet_edge.sensors`` entry point) appears
here without an edit anywhere else. Exit status 0.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edge import plugins
from edge.codec import SensorDescriptor
from edge.emulation import emulators
from edge.quantities import QUANTITIES

console = Console()


@dataclass(frozen=True, slots=True)
class QuantityRow:
    code: str
    unit: str  # UCUM


@dataclass(frozen=True, slots=True)
class SensorRow:
    """One sensor type as `duet-edge sensors` shows it."""

    type: str
    manufacturer: str
    model: str
    interface: str
    quantities: list[QuantityRow]
    default_interval_s: float
    warmup_s: float
    probe: str  # hex bytes `scan` may send, "listen" (talks unprompted), "" (not serial)
    read_by: str  # "serial" (the generic serial source), "own" (its own source), "ble"...
    options_model: str
    options: dict[str, dict[str, object]]
    emulator: bool
    readme: str  # path of the folder's README.md ("" if it has none)


@dataclass(frozen=True, slots=True)
class SourceKindRow:
    """A source type that is not one sensor (BLE scanner, firmware nodes)."""

    type: str
    summary: str
    needs_port: bool
    options_model: str
    options: dict[str, dict[str, object]]
    available: bool
    unavailable_reason: str


def sensor_rows() -> list[SensorRow]:
    """Every registered sensor, sorted by type."""
    emulated = emulators()
    return [
        _sensor_row(sensor, sensor.name in emulated)
        for sensor in sorted(plugins.sensors().values(), key=lambda s: s.name)
    ]


def source_kind_rows() -> list[SourceKindRow]:
    """Every registered source kind, sorted by type; unavailable ones say why."""
    rows: list[SourceKindRow] = []
    types = plugins.source_types()
    for name, kind in sorted(plugins.source_kinds().items()):
        described = types.get(name)
        reason = described if isinstance(described, str) else ""
        if isinstance(kind, str):
            rows.append(SourceKindRow(name, "", False, "", {}, False, kind))
            continue
        rows.append(
            SourceKindRow(
                name, kind.summary, kind.needs_port, _qualified(kind.options),
                _option_fields(kind.options), not reason, reason,
            )
        )
    return rows


def _sensor_row(sensor: plugins.Sensor, emulated: bool) -> SensorRow:
    desc = sensor.descriptor
    # A sensor heard through a source kind (BLE advertisements) has no options of its own:
    # they are set on that source (``type = "ble"``).
    own_options = desc.interface == "serial"
    return SensorRow(
        type=desc.name,
        manufacturer=desc.manufacturer,
        model=desc.model,
        interface=_interface(desc),
        quantities=[QuantityRow(q, QUANTITIES[q].unit) for q in desc.quantities],
        default_interval_s=desc.default_interval_s,
        warmup_s=desc.warmup_s,
        probe=_probe(desc),
        read_by=_read_by(sensor),
        options_model=_qualified(sensor.options) if own_options else "",
        options=_option_fields(sensor.options) if own_options else {},
        emulator=emulated,
        readme=_readme(desc),
    )


def _interface(desc: SensorDescriptor) -> str:
    if desc.serial is None:
        return desc.interface
    s = desc.serial
    return f"{desc.interface} {s.baudrate} {s.bytesize}{s.parity}{s.stopbits}"


def _probe(desc: SensorDescriptor) -> str:
    if desc.interface != "serial":
        return ""
    return desc.probe.hex(" ") if desc.probe else "listen"


def _read_by(sensor: plugins.Sensor) -> str:
    """Which source reads it: the generic ``serial`` source, the sensor's ``own`` source, or
    the source kind of its interface (``ble``: the scanner)."""
    if sensor.source is not None:
        return "own"
    return sensor.descriptor.interface


def _package(desc: SensorDescriptor) -> str:
    """The sensor's folder as a package (its codec module's parent)."""
    return desc.decoder.__module__.rpartition(".")[0]


def _readme(desc: SensorDescriptor) -> str:
    try:
        readme = resources.files(_package(desc)).joinpath("README.md")
    except ModuleNotFoundError:
        return ""
    return str(readme) if readme.is_file() else ""


def _qualified(model: type[BaseModel]) -> str:
    return f"{model.__module__}.{model.__qualname__}"


def _option_fields(model: type[BaseModel]) -> dict[str, dict[str, object]]:
    """Each option key with its JSON-schema type, default and description (pydantic's own)."""
    properties = model.model_json_schema().get("properties", {})
    out: dict[str, dict[str, object]] = {}
    for key, schema in properties.items():
        out[key] = {k: v for k, v in schema.items() if k in ("type", "anyOf", "enum",
                                                              "default", "description")}
    return out


def _units(row: SensorRow) -> str:
    return ", ".join(f"{q.code} → {q.unit}" for q in row.quantities)


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _own_options(model: str, options: dict[str, dict[str, object]]) -> str:
    """A model's keys beyond the serial options every serial sensor shares."""
    shared = plugins.SerialOptions.model_fields
    own = [key for key in options if key not in shared]
    return f"{model.rsplit('.', 1)[-1]}: {', '.join(own)}" if own else ""


def _cells(*values: str) -> list[str]:
    return [escape(v) for v in values]  # units such as [ppm] are not Rich markup


def sensors(
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """List every sensor type and source kind: interface, quantities with UCUM units, default
    interval, warm-up, `scan` probe, options, and whether an emulator exists."""
    rows = sensor_rows()
    kinds = source_kind_rows()
    if as_json:
        typer.echo(json.dumps(
            {"sensors": [asdict(r) for r in rows], "source_kinds": [asdict(k) for k in kinds]},
            indent=2, default=str,
        ))
        return
    table = Table(title="Sensors", show_lines=True)
    for header in ("type", "sensor, interface (read by)", "quantities → UCUM unit",
                   "interval", "warm-up", "scan probe", "emulator"):
        table.add_column(header, overflow="fold")
    for r in rows:
        table.add_row(*_cells(
            r.type, f"{r.manufacturer} {r.model}\n{r.interface} ({r.read_by})", _units(r),
            _seconds(r.default_interval_s), _seconds(r.warmup_s), r.probe or "—",
            "yes" if r.emulator else "no",
        ))
    console.print(table)
    shared = ", ".join(plugins.SerialOptions.model_fields)
    console.print(f"Options of every serial sensor: {shared}; besides these:",
                  highlight=False, soft_wrap=True)
    for r in rows:
        if own := _own_options(r.options_model, r.options):
            console.print(f"  {r.type}: {own}", highlight=False, markup=False, soft_wrap=True)
    console.print("Each sensor's folder has a README (edge/sensors/<type>/README.md); "
                  "--json lists every option with its type, default and description.",
                  highlight=False, markup=False, soft_wrap=True)
    kind_table = Table(title="Source kinds", show_lines=True)
    for header in ("type", "what", "needs port", "options", "available"):
        kind_table.add_column(header, overflow="fold")
    for k in kinds:
        kind_table.add_row(*_cells(
            k.type, k.summary, "yes" if k.needs_port else "no",
            f"{k.options_model.rsplit('.', 1)[-1]}: {', '.join(k.options)}",
            "yes" if k.available else k.unavailable_reason,
        ))
    console.print(kind_table)
