"""`duet-edge run CONFIG`: the gateway process (what systemd starts)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from edge.config import ConfigError, load_config
from edge.logs import setup_logging
from edge.runtime import run_gateway


def run(config: Path = typer.Argument(..., help="The gateway TOML file.")) -> None:
    """Run the gateway until SIGTERM/SIGINT, then flush and close cleanly."""
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    setup_logging(cfg.log.level, cfg.log.format)
    asyncio.run(run_gateway(cfg))
