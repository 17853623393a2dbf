"""`duet-edge scan`: find supported sensors on serial ports and over BLE, read-only."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console
from rich.table import Table

from edge.discovery import config_snippet, list_serial_ports, probe_port

console = Console()


def scan(
    port: list[str] = typer.Option(
        [], "--port", help="Also probe this device (pty, link); repeatable."
    ),
    ble: bool = typer.Option(True, help="Scan for BLE sensors too."),
    ble_seconds: float = typer.Option(10.0, help="How long to listen for BLE advertisements."),
    listen_s: float = typer.Option(2.5, help="How long to listen on each port before probing."),
) -> None:
    """List serial ports (USB VID:PID, serial number) and BLE devices, recognise the sensors
    without changing any setting, and print a config snippet ready to paste."""
    ports = [probe_port(p, listen_s=listen_s) for p in list_serial_ports(port)]
    table = Table("port", "USB VID:PID", "USB serial", "sensor", "preview", title="Serial ports")
    for p in ports:
        preview = ", ".join(f"{k}={v:g}" for k, v in list(p.preview.items())[:4])
        table.add_row(
            p.device, p.vid_pid, p.serial_number, p.sensor or f"[dim]{p.error}[/dim]", preview
        )
    console.print(table)
    found_ble: list[tuple[str, str, str | None]] = []
    if ble:
        found_ble = _scan_ble(ble_seconds)
    snippet = config_snippet(ports, found_ble)
    if snippet:
        console.print("\n[bold]Config snippet[/bold] (paste into the gateway TOML):\n")
        typer.echo(snippet)
    else:
        console.print("\nNo supported sensor found.")


def _scan_ble(seconds: float) -> list[tuple[str, str, str | None]]:
    try:
        from edge.ble.scanner import discover
        from edge.ble.settings import BleSettings
    except ModuleNotFoundError:
        console.print("[yellow]BLE scanning needs the 'ble' extra (bleak).[/yellow]")
        return []
    try:
        devices = asyncio.run(discover(BleSettings(), seconds))
    except Exception as exc:  # no adapter, no BlueZ: say so, the serial part still stands
        console.print(f"[yellow]BLE scan not possible here: {exc}[/yellow]")
        return []
    table = Table("address", "name", "sensor", "RSSI", "adverts", title="BLE devices")
    for d in devices:
        table.add_row(d.address, d.name or "", d.sensor or "", str(d.rssi), str(d.adverts))
    console.print(table)
    return [(d.address, d.sensor or "ble", d.name) for d in devices if d.sensor]
