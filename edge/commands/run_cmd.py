"""`duet-edge run CONFIG`: the gateway process (what systemd starts)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from edge.config import ConfigError, GatewayConfig, load_config, preflight
from edge.logs import setup_logging
from edge.runtime import run_gateway


def run(config: Path = typer.Argument(..., help="The gateway TOML file.")) -> None:
    """Run the gateway until SIGTERM/SIGINT, then flush and close cleanly."""
    try:
        cfg = _active_bundle_config(load_config(config))
        problems = preflight(cfg)
        if problems:
            raise ConfigError(str(config), problems)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(CONFIG_EXIT_CODE) from None
    setup_logging(cfg.log.level, cfg.log.format)
    if asyncio.run(run_gateway(cfg)):
        raise typer.Exit(RESTART_EXIT_CODE)  # systemd (Restart=on-failure) starts us again


RESTART_EXIT_CODE = 75  # EX_TEMPFAIL: "restart me", after a signed bundle was applied
CONFIG_EXIT_CODE = 2  # the configuration or this machine's files are unusable: fix, then start


def _active_bundle_config(cfg: GatewayConfig) -> GatewayConfig:
    """With signed bundles enabled, the newest verified config bundle wins over the boot file."""
    overrides = [p for c in cfg.capabilities if (p := c.active_config(cfg)) is not None]
    if not overrides:
        return cfg
    current = overrides[0]
    try:
        return load_config(current)
    except ConfigError as exc:  # cannot happen for a verified bundle; be safe anyway
        typer.echo(
            f"active config bundle unusable, using {cfg.gateway.id}'s boot file: {exc}", err=True
        )
        return cfg
