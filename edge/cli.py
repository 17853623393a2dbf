"""The `duet-edge` command: one entry point, sub-commands named after the user's task.

The gateway's own commands are listed here; commands of other packages (calibration,
quality control, provisioning) plug in through the entry-point group ``duet_edge.commands``
(``name = "module:app [extra]"``). A command whose extra is not installed still exists and
says which extra to install (exit status 3), instead of vanishing.

Exit statuses shared by every command: 0 success, 1 the check or task failed, 2 usage or
configuration error, 3 an optional extra is missing; each command documents its own others.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import EntryPoint, entry_points

import typer

import edge
from edge.console import PlainTyper
from edge.plugins import install_hint

COMMAND_GROUP = "duet_edge.commands"
EXIT_EXTRA_MISSING = 3
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}

# Sub-command groups of the gateway itself: (module path, group name, help).
_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("edge.commands.config_cmd", "config", "Validate and inspect configuration files."),
    ("edge.commands.outbox_cmd", "outbox", "Inspect the durable outbox."),
    ("edge.node_cli", "node", "Firmware nodes: flash and inspect."),
)

# Single commands: (module path, command name; the function is the name with _ for -).
_COMMANDS: tuple[tuple[str, str], ...] = (
    ("edge.commands.run_cmd", "run"),
    ("edge.commands.demo_cmd", "demo"),
    ("edge.commands.ingest_cmd", "ingest"),
    ("edge.commands.fleet_cmd", "fleet"),
    ("edge.commands.oslo_cmd", "oslo-export"),
    ("edge.commands.scan_cmd", "scan"),
    ("edge.commands.sensors_cmd", "sensors"),
)


def _plugin_groups() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=COMMAND_GROUP)}


def _known() -> set[str]:
    return {g for _, g, _ in _GROUPS} | {c for _, c in _COMMANDS} | set(_plugin_groups())


def build_app(only: str | None = None) -> typer.Typer:
    """The CLI; with ``only``, just that sub-command is imported (a gateway started by
    systemd as ``duet-edge run`` should not pay the memory of numpy, cryptography, aiohttp)."""
    cli = PlainTyper(
        name="duet-edge",
        help="Edge gateway for the Flanders regional digital twin.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        context_settings=HELP_OPTIONS,
    )

    @cli.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", help="Print the version and exit.", is_eager=True,
            callback=_print_version,
        ),
    ) -> None:
        """Edge gateway for the Flanders regional digital twin."""  # keeps sub-command names

    for module_name, group, help_text in _GROUPS:
        if only is None or group == only:
            module = importlib.import_module(module_name)
            cli.add_typer(module.app, name=group, help=help_text)
    for module_name, command in _COMMANDS:
        if only is None or command == only:
            module = importlib.import_module(module_name)
            cli.command(command)(vars(module)[command.replace("-", "_")])
    for name, ep in _plugin_groups().items():
        if only is None or name == only:
            _mount(cli, ep)
    return cli


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"duet-edge {edge.version()}")
        raise typer.Exit(0)


def _mount(cli: typer.Typer, ep: EntryPoint) -> None:
    """Mount an entry point's command group, or a stand-in naming the extra it needs."""
    try:
        app = ep.load()
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in ("edge", "calibration", "provisioning"):
            raise  # our own code is broken: that is a bug, not a missing extra
        _mount_missing_extra(cli, ep, exc.name or "?")
        return
    if not isinstance(app, typer.Typer):
        raise TypeError(f"entry point {ep.value} is not a typer.Typer")
    cli.add_typer(app, name=ep.name)


def _mount_missing_extra(cli: typer.Typer, ep: EntryPoint, module: str) -> None:
    extra = ep.extras[0] if ep.extras else ""
    message = f"duet-edge {ep.name} needs the Python package {module!r}; {install_hint(extra)}"

    @cli.command(
        ep.name,
        help=f"(not installed: {install_hint(extra)})",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def _not_installed(ctx: typer.Context) -> None:
        del ctx
        typer.echo(message, err=True)
        raise typer.Exit(EXIT_EXTRA_MISSING)


def main() -> None:
    wanted = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] in _known() else None
    build_app(wanted)()


_full_app: typer.Typer | None = None


def __getattr__(name: str) -> typer.Typer:
    """``edge.cli.app``: the full CLI, built on first use (tests drive it with CliRunner)."""
    global _full_app
    if name == "app":
        if _full_app is None:
            _full_app = build_app()
        return _full_app
    raise AttributeError(name)
