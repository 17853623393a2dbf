"""`duet-edge outbox …`: look inside a gateway's outbox (read-only unless told otherwise)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edge.config import ConfigError, GatewayConfig, load_config
from edge.console import EXIT_FAILED, EXIT_USAGE, PlainTyper, fail
from edge.console import out as console

app = PlainTyper(no_args_is_help=True)


def _config(config: Path) -> GatewayConfig:
    """The gateway's config, or one line on stderr naming the file's first problem (exit 2)."""
    try:
        return load_config(config)
    except ConfigError as exc:
        first = exc.problems[0] if exc.problems else str(exc)
        more = f" (and {len(exc.problems) - 1} more: duet-edge config check {config})" \
            if len(exc.problems) > 1 else ""
        raise fail(f"{config}: {first}{more}", EXIT_USAGE) from None


def _open(cfg: GatewayConfig) -> sqlite3.Connection:
    path = cfg.outbox_path
    if not path.exists():
        raise fail(f"no outbox at {path}: has the gateway run with this config? "
                   "([gateway] data_dir)", EXIT_FAILED)
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


@app.command()
def stats(
    config: Path,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Depth, oldest unsent observation, evictions and dead letters (read-only)."""
    from edge.outbox import summarize

    cfg = _config(config)
    _open(cfg).close()  # a clear message when there is no outbox yet
    uplinks = cfg.uplink_names() or ["none"]
    s = summarize(cfg.outbox_path, uplinks)
    if as_json:
        print(json.dumps({
            "unsent": s.unsent, "oldest_unsent_ms": s.oldest_unsent_ms,
            "groups": s.groups, "journal_groups": s.journal_groups, "last_seq": s.last_seq,
            "evicted": s.evicted, "gaps": s.gaps, "gap_observations": s.gap_observations,
            "dead_letters": s.dead_letters}))
        return
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
    db = _open(_config(config))
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

    cfg = _config(config)
    uplinks = cfg.uplink_names() or ["none"]
    outbox = Outbox(cfg.outbox_path, cfg.buffer, cfg.gateway.id, uplinks=uplinks)
    n = outbox.requeue_dead_letters()
    outbox.close()
    console.print(f"requeued {n} observation(s)")
