"""`duet-edge config check FILE` and `duet-edge config example`."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import typer
from rich.console import Console

from edge.config import ConfigError, GatewayConfig, load_config, preflight
from edge.console import PlainTyper

app = PlainTyper(no_args_is_help=True)
console = Console()
err = Console(stderr=True)


@app.command()
def check(
    path: Path = typer.Argument(..., help="The gateway TOML file."),
    offline: bool = typer.Option(
        False, "--offline", help="Only validate; skip the checks of this machine's files "
        "(for a config meant for another gateway)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Validate a config file exactly as the gateway does at start; list every problem.

    Exit status: 0 valid, 1 problems found (each on its own line on stderr).
    """
    try:
        config = load_config(path)
        problems = [] if offline else preflight(config)
    except ConfigError as exc:
        config, problems = None, exc.problems
    if as_json:
        typer.echo(json.dumps(_summary(path, config, problems), indent=2))
    elif problems:
        err.print(f"[red]✗ {path}[/red]: {len(problems)} problem(s)", soft_wrap=True)
        for problem in problems:
            err.print("  [red]-[/red] ", end="")
            err.print(problem, markup=False, highlight=False, soft_wrap=True)
    elif config is not None:
        console.print(
            f"[green]✓[/green] {path}: gateway {config.gateway.id!r}, "
            f"{len(config.sources)} source(s), uplinks: {', '.join(config.uplink_names()) or 'none'}",
            soft_wrap=True,
        )
    if problems:
        raise typer.Exit(1)


def _summary(path: Path, config: GatewayConfig | None, problems: list[str]) -> dict[str, object]:
    summary: dict[str, object] = {"file": str(path), "ok": not problems, "problems": problems}
    if config is not None:
        summary |= {
            "gateway": config.gateway.id,
            "sources": [s.name for s in config.sources],
            "uplinks": config.uplink_names(),
            "tables": [c.key for c in config.capabilities],
        }
    return summary


@app.command()
def example() -> None:
    """Print the annotated example configuration."""
    text = resources.files("edge").joinpath("example-config.toml").read_text(encoding="utf-8")
    typer.echo(text, nl=False)

