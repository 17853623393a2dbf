"""`duet-edge outbox …`: look inside a gateway's outbox (read-only unless told otherwise)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from edge.config import load_config

app = typer.Typer(no_args_is_help=True)
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
    from edge.outbox import covers, intersect, merge

    db = _open(config)
    cfg = load_config(config)
    uplinks = cfg.uplink_names() or ["none"]
    groups = db.execute(
        "SELECT first_seq, last_seq, n, t_min FROM grp ORDER BY first_seq"
    ).fetchall()
    done: list[tuple[int, int]] | None = None
    for index in range(len(uplinks)):
        mine = merge(db.execute("SELECT lo, hi FROM done WHERE uplink=?", (index,)).fetchall())
        done = mine if done is None else intersect(done, mine)
    spans = merge((first, last) for first, last, _n, _t in groups)
    confirmed = sum(b - a + 1 for a, b in intersect(done or [], spans))
    depth = sum(n for *_x, n, _t in groups) - confirmed
    oldest = next((t for first, last, _n, t in groups if not covers(done or [], first, last)), None)
    meta = dict(db.execute("SELECT key, value FROM meta"))
    dead = db.execute("SELECT count(*) FROM dead_letter").fetchone()[0]
    gaps = db.execute("SELECT count(*), coalesce(sum(count), 0) FROM gap").fetchone()
    table = Table("what", "value")
    table.add_row("unsent observations", str(max(depth, 0)))
    age = "" if oldest is None else f"{time.time() - oldest / 1000:.0f} s"
    table.add_row("oldest unsent (age)", age)
    table.add_row("stored groups", str(len(groups)))
    table.add_row(
        "last sequence", str(max([int(meta.get("last_seq", 0))] + [g[1] for g in groups]))
    )
    table.add_row("evicted (total)", str(meta.get("evicted", 0)))
    table.add_row("gaps not yet reported", f"{gaps[0]} ({gaps[1]} observations)")
    table.add_row("dead letters", str(dead))
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
