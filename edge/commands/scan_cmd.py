"""`duet-edge scan`: find supported sensors on serial ports and over BLE, read-only."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import typer
from rich.table import Table

from edge.console import err, out
from edge.discovery import PortInfo, config_snippet, list_serial_ports, probe_port

BleFound = tuple[str, str, str | None]  # address, sensor type, advertised name


def scan(
    port: list[str] = typer.Option(
        [], "--port", help="Also probe this device (pty, link); repeatable."
    ),
    ble: bool = typer.Option(True, help="Scan for BLE sensors too."),
    ble_seconds: float = typer.Option(10.0, help="How long to listen for BLE advertisements."),
    listen_s: float = typer.Option(2.5, help="How long to listen on each port before probing."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """List serial ports (USB VID:PID, serial number) and BLE devices, recognise the sensors
    without changing any setting, and print a config snippet ready to paste.

    Progress goes to stderr; results to stdout. Exit status 0 (also when nothing is found).
    """
    ports = _probe_ports(list_serial_ports(port), listen_s)
    found_ble, ble_devices, ble_problem = _scan_ble(ble_seconds) if ble else ([], [], "")
    snippet = config_snippet(ports, found_ble)
    if as_json:
        report = {
            "serial": [dataclasses.asdict(p) for p in ports],
            "ble": ble_devices,
            "ble_problem": ble_problem,
            "snippet": snippet,
        }
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    _print_ports(ports)
    if ble_devices:
        _print_ble(ble_devices)
    if ble_problem:
        err.print(f"[yellow]![/yellow] {ble_problem}")
    if snippet:
        out.print("\n[bold]Config snippet[/bold] (paste into the gateway TOML):\n")
        typer.echo(snippet)
    else:
        out.print("\nNo supported sensor found.")


def _probe_ports(ports: list[PortInfo], listen_s: float) -> list[PortInfo]:
    probed = []
    with err.status("") as status:
        for i, info in enumerate(ports, 1):
            status.update(f"listening on {info.device} ({i}/{len(ports)}, {listen_s:g} s each)…")
            probed.append(probe_port(info, listen_s=listen_s))
    return probed


def _print_ports(ports: list[PortInfo]) -> None:
    table = Table("port", "USB VID:PID", "USB serial", "sensor", "preview", title="Serial ports")
    for p in ports:
        preview = ", ".join(f"{k}={v:g}" for k, v in list(p.preview.items())[:4])
        table.add_row(
            p.device, p.vid_pid, p.serial_number, p.sensor or f"[dim]{p.error}[/dim]", preview
        )
    out.print(table)


def _print_ble(devices: list[dict[str, object]]) -> None:
    table = Table("address", "name", "sensor", "RSSI", "adverts", title="BLE devices")
    for d in devices:
        table.add_row(*(str(d[k] or "") for k in ("address", "name", "sensor", "rssi", "adverts")))
    out.print(table)


def _scan_ble(seconds: float) -> tuple[list[BleFound], list[dict[str, object]], str]:
    """(sensors for the snippet, every device heard, why BLE could not be scanned or "")."""
    try:
        from edge.ble.scanner import discover
        from edge.ble.settings import BleSettings
    except ModuleNotFoundError:
        return [], [], "BLE not scanned: needs the 'ble' extra: pip install 'duet-edge[ble]'"
    try:
        with err.status(f"listening for BLE advertisements ({seconds:g} s)…"):
            devices = asyncio.run(discover(BleSettings(), seconds))
    except FileNotFoundError:
        return [], [], ("BLE not scanned: no D-Bus system bus (is BlueZ installed and "
                        "running? `apt install bluez`); use --no-ble to skip")
    except Exception as exc:  # no adapter, BlueZ refused: say so, the serial part still stands
        return [], [], f"BLE not scanned: {type(exc).__name__}: {exc}; use --no-ble to skip"
    heard: list[dict[str, object]] = [
        {"address": d.address, "name": d.name, "sensor": d.sensor, "rssi": d.rssi,
         "adverts": d.adverts}
        for d in devices
    ]
    return [(d.address, d.sensor, d.name) for d in devices if d.sensor], heard, ""
