"""The `duet-edge` command: one entry point, sub-commands named after the user's task."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

# Sub-command groups that live with their capability: (module path, group name, help).
# A module exposes ``app: typer.Typer``. Missing modules are skipped so that a partial
# install (e.g. without the calibration extra) still has a working gateway CLI.
_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("edge.commands.config_cmd", "config", "Validate and inspect configuration files."),
    ("edge.commands.outbox_cmd", "outbox", "Inspect the durable outbox."),
    ("calibration.cli", "calibrate", "Fit, report and check calibrations."),
    ("edge.quality.cli", "quality", "Train and evaluate quality-control models."),
    ("provisioning.cli", "provision", "Provision gateways, nodes and credentials."),
    ("edge.node_cli", "node", "Firmware nodes: flash and inspect."),
)

# Single commands: (module path, function name, command name).
_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("edge.commands.run_cmd", "run", "run"),
    ("edge.commands.demo_cmd", "demo", "demo"),
    ("edge.commands.ingest_cmd", "ingest", "ingest"),
    ("edge.commands.fleet_cmd", "fleet", "fleet"),
    ("edge.commands.oslo_cmd", "oslo_export", "oslo-export"),
    ("edge.commands.scan_cmd", "scan", "scan"),
)

_KNOWN = {g for _, g, _ in _GROUPS} | {c for _, _, c in _COMMANDS}


def build_app(only: str | None = None) -> typer.Typer:
    """The CLI; with ``only``, just that sub-command is imported (a gateway started by
    systemd as ``duet-edge run`` should not pay the memory of numpy, cryptography, aiohttp)."""
    cli = typer.Typer(
        name="duet-edge",
        help="Edge gateway for the Flanders regional digital twin.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )

    @cli.callback()
    def _root() -> None:
        """Edge gateway for the Flanders regional digital twin."""  # keeps sub-command names

    for module_name, group, help_text in _GROUPS:
        if only is None or group == only:
            module = _optional_import(module_name)
            if module is not None:
                cli.add_typer(module.app, name=group, help=help_text)
    for module_name, func_name, command in _COMMANDS:
        if only is None or command == only:
            module = _optional_import(module_name)
            if module is not None:
                cli.command(command)(getattr(module, func_name))
    return cli


def _optional_import(module_name: str) -> Any:
    """The module, or None when it or a library it needs (an extra) is not installed."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            module_name.startswith(exc.name)
            or not exc.name.startswith(("edge", "calibration", "provisioning", "firmware", "hil"))
        ):
            return None
        raise


def main() -> None:
    wanted = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] in _KNOWN else None
    build_app(wanted)()


_full_app: typer.Typer | None = None


def __getattr__(name: str) -> Any:
    """``edge.cli.app``: the full CLI, built on first use (tests drive it with CliRunner)."""
    global _full_app
    if name == "app":
        if _full_app is None:
            _full_app = build_app()
        return _full_app
    raise AttributeError(name)
