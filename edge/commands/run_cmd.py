"""`duet-edge run CONFIG`: the gateway process (what systemd starts)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from edge.config import ConfigError, GatewayConfig, load_config
from edge.logs import setup_logging
from edge.runtime import run_gateway


def run(config: Path = typer.Argument(..., help="The gateway TOML file.")) -> None:
    """Run the gateway until SIGTERM/SIGINT, then flush and close cleanly."""
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    cfg = _active_bundle_config(cfg)
    setup_logging(cfg.log.level, cfg.log.format)
    if asyncio.run(run_gateway(cfg)):
        raise typer.Exit(RESTART_EXIT_CODE)  # systemd (Restart=on-failure) starts us again


RESTART_EXIT_CODE = 75  # EX_TEMPFAIL: "restart me", after a signed bundle was applied


def _active_bundle_config(cfg: GatewayConfig) -> GatewayConfig:
    """With signed bundles enabled, the newest verified config bundle wins over the boot file."""
    security = cfg.security
    if security is None or security.bundles is None:
        return cfg
    current = security.bundles.store_dir / "config" / "current" / "gateway.toml"
    if not current.exists():
        return cfg
    try:
        return load_config(current)
    except ConfigError as exc:  # cannot happen for a verified bundle; be safe anyway
        typer.echo(
            f"active config bundle unusable, using {cfg.gateway.id}'s boot file: {exc}", err=True
        )
        return cfg
