"""`duet-edge fleet`: what the twin knows about every gateway — silent ones first.

Reads the receiver's store (SQLite file or PostgreSQL URL): each gateway's last batch, its
retained status/heartbeat (state, software version, outbox backlog, oldest unsent
observation), its events of the last 24 h, and whether forwarding to SensorThings is parked.

Exit codes: 0 listed (even when gateways are silent: scripts read ``--json``); 2 the store
cannot be opened.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from edge.ingest.store import GatewayView, is_postgres_url, open_store
from edge.ingest.store_common import SILENT_AFTER_MS

EXIT_STORE = 2


def fleet(
    store: str = typer.Option("twin.db", help="The receiver's store: SQLite file or "
                              "postgresql:// URL (as given to `duet-edge ingest --store`)."),
    silent_after_min: float = typer.Option(
        SILENT_AFTER_MS / 60000, help="A gateway not heard from for this many minutes is "
        "silent."),
    only: str | None = typer.Option(
        None, help="Show only 'silent', 'offline', 'backlog' (backlog > 0) or 'parked' gateways."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List gateways: silent ones, backlogs, versions, last seen."""
    if only not in (None, "silent", "offline", "backlog", "parked"):
        typer.echo(f"fleet: --only {only!r}: choose silent, offline, backlog or parked",
                   err=True)
        raise typer.Exit(EXIT_STORE)
    if not is_postgres_url(store) and not Path(store).exists():
        typer.echo(f"fleet: {store}: no such store (give the receiver's --store)", err=True)
        raise typer.Exit(EXIT_STORE)
    now_ms = time.time_ns() // 1_000_000
    try:
        views = asyncio.run(_load(store, now_ms))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        typer.echo(f"fleet: cannot read the store: {first}", err=True)
        raise typer.Exit(EXIT_STORE) from None
    silent_ms = int(silent_after_min * 60000)
    rows = [FleetRow(v, _silent(v, now_ms, silent_ms), _parked(v, now_ms)) for v in views]
    rows = [r for r in rows if r.wanted(only)]
    rows.sort(key=lambda r: (not r.silent, r.view.state != "offline", r.view.gateway))
    summary = {
        "gateways": len(rows),
        "online": sum(1 for r in rows if r.view.state == "online"),
        "offline": sum(1 for r in rows if r.view.state == "offline"),
        "silent": sum(1 for r in rows if r.silent),
        "backlog": sum(r.view.backlog or 0 for r in rows),
        "forward_parked": sum(1 for r in rows if r.parked),
    }
    if as_json:
        typer.echo(json.dumps({"now_ms": now_ms, "summary": summary,
                               "gateways": [r.as_dict() for r in rows]}, indent=1))
        return
    _print_table(rows, summary, now_ms)


@dataclass(frozen=True, slots=True)
class FleetRow:
    view: GatewayView
    silent: bool
    parked: bool

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self.view), "last_seen_ms": self.view.last_seen_ms,
                "silent": self.silent, "forward_parked": self.parked}

    def wanted(self, only: str | None) -> bool:
        if only == "silent":
            return self.silent
        if only == "offline":
            return self.view.state == "offline"
        if only == "backlog":
            return bool(self.view.backlog)
        if only == "parked":
            return self.parked
        return True


def _silent(v: GatewayView, now_ms: int, silent_ms: int) -> bool:
    seen = v.last_seen_ms
    return seen is None or now_ms - seen > silent_ms


def _parked(v: GatewayView, now_ms: int) -> bool:
    return v.forward_parked_until_ms is not None and v.forward_parked_until_ms > now_ms


async def _load(store: str, now_ms: int) -> list[GatewayView]:
    s = open_store(store)
    await s.open()
    try:
        return await s.fleet(now_ms)
    finally:
        await s.close()


def age(ms: int | None, now_ms: int) -> str:
    """``42 s``, ``5 min``, ``3 h``, ``2 d`` ago; ``never`` for None."""
    if ms is None:
        return "never"
    s = max(0, now_ms - ms) / 1000
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.0f} h"
    return f"{s / 86400:.0f} d"


def _print_table(rows: list[FleetRow], summary: dict[str, int], now_ms: int) -> None:
    console = Console(soft_wrap=True)
    table = Table(title="Gateways as the twin sees them", expand=False)
    # gateway ids and versions are copied into other commands: never wrapped or cut
    table.add_column("gateway", no_wrap=True, min_width=max((len(r.view.gateway) for r in rows),
                                                            default=7))
    table.add_column("state", overflow="fold")
    table.add_column("version", no_wrap=True)
    for column in ("last seen", "stored", "backlog", "oldest unsent", "events 24 h",
                   "forwarding"):
        table.add_column(column, overflow="fold")
    for r in rows:
        v = r.view
        state = v.state
        if r.silent:
            state = f"[bold red]SILENT[/] ({state})"
        elif state == "offline":
            state = "[yellow]offline[/]"
        events = f"{v.events_24h}" + (f" ({v.last_event})" if v.last_event else "")
        forwarding = f"[red]parked[/]: {v.forward_error}" if r.parked else ""
        table.add_row(v.gateway, state, v.version or "?", age(v.last_seen_ms, now_ms),
                      str(v.observations), "?" if v.backlog is None else str(v.backlog),
                      age(v.oldest_unsent_ms, now_ms) if v.oldest_unsent_ms else "",
                      events, forwarding)
    console.print(table)
    console.print(
        f"{summary['gateways']} gateways: {summary['online']} online, {summary['offline']} "
        f"offline, {summary['silent']} silent; {summary['backlog']} observations waiting in "
        f"outboxes; forwarding parked for {summary['forward_parked']}.")
