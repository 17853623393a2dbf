"""`duet-edge outbox …`: look inside a gateway's outbox (read-only unless told otherwise)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from edge.config import load_config
from edge.console import PlainTyper

app = PlainTyper(no_args_is_help=True)
console = Console()


def _open(config: Path) -> sqlite3.Connection:
    cfg = load_config(config)
    path = cfg.outbox_path
    if not path.exists():
        console.print(f"[red]no outbox at {path}[/red]")
        raise typer.Exit(1)
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


@app.command()
def stats(config: Path) -> None:
    """Depth, oldest unsent observation, evictions and dead letters (read-only)."""
    from edge.outbox import summarize

    cfg = load_config(config)
    _open(config).close()  # a clear message when there is no outbox yet
    uplinks = cfg.uplink_names() or ["none"]
    s = summarize(cfg.outbox_path, uplinks)
    table = Table("what", "value")
    table.add_row("unsent observations", str(s.unsent))
    age = "" if s.oldest_unsent_ms is None else f"{time.time() - s.oldest_unsent_ms / 1000:.0f} s"
    table.add_row("oldest unsent (age)", age)
    table.add_row("stored groups", f"{s.groups} in the database, {s.journal_groups} in the journal")
    table.add_row("last sequence", str(s.last_seq))
    table.add_row("evicted (total)", str(s.evicted))
    table.add_row("gaps not yet reported", f"{s.gaps} ({s.gap_observations} observations)")
    table.add_row("dead letters", str(s.dead_letters))
    console.print(table)


@app.command("dead-letters")
def dead_letters(config: Path, limit: int = 50) -> None:
    """List observations an uplink rejected, with the reason."""
    db = _open(config)
    table = Table("seq", "uplink", "reason")
    for seq, uplink, reason in db.execute(
        "SELECT seq, uplink, reason FROM dead_letter ORDER BY seq LIMIT ?", (limit,)
    ):
        table.add_row(str(seq), uplink, reason)
    console.print(table)


@app.command()
def requeue(config: Path) -> None:
    """Put every dead letter back in the outbox (stop the gateway first)."""
    from edge.outbox import Outbox

    cfg = load_config(config)
    uplinks = cfg.uplink_names() or ["none"]
    outbox = Outbox(cfg.outbox_path, cfg.buffer, cfg.gateway.id, uplinks=uplinks)
    n = outbox.requeue_dead_letters()
    outbox.close()
    console.print(f"requeued {n} observation(s)")
