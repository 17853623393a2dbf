"""The `duet-edge` command: one entry point, sub-commands named after the user's task."""

from __future__ import annotations

import importlib
from typing import Any

import typer

app = typer.Typer(
    name="duet-edge",
    help="Edge gateway for the Flanders regional digital twin.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

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
    ("edge.commands.scan_cmd", "scan", "scan"),
)


def _mount() -> None:
    for module_name, group, help_text in _GROUPS:
        module = _optional_import(module_name)
        if module is not None:
            app.add_typer(module.app, name=group, help=help_text)
    for module_name, func_name, command in _COMMANDS:
        module = _optional_import(module_name)
        if module is not None:
            app.command(command)(getattr(module, func_name))


def _optional_import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            return None
        raise


_mount()


def main() -> None:
    app()
