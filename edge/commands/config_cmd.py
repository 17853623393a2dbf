"""`duet-edge config check FILE` and `duet-edge config example`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import typer
from rich.console import Console

from edge.config import ConfigError, load_config

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command()
def check(path: Path = typer.Argument(..., help="The gateway TOML file.")) -> None:
    """Validate a config file exactly as the gateway does at start; list every problem."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        console.print(f"[red]✗ {exc.source}[/red]: {len(exc.problems)} problem(s)")
        for problem in exc.problems:
            console.print("  [red]-[/red] ", end="")
            console.print(problem, markup=False, highlight=False)
        raise typer.Exit(1) from None
    console.print(
        f"[green]✓[/green] {path}: gateway {config.gateway.id!r}, {len(config.sources)} source(s), "
        f"uplinks: {', '.join(k for k, v in config.uplinks if v is not None) or 'none'}"
    )


@app.command()
def example() -> None:
    """Print the annotated example configuration."""
    text = resources.files("edge").joinpath("example-config.toml").read_text(encoding="utf-8")
    typer.echo(text, nl=False)
