"""`duet-edge provision …` entry point, mounted by ``edge/cli.py``.

The commands live in :mod:`provisioning.commands`. They need the ``provisioning`` extra
(cryptography, qrcode, Pillow); on a gateway installed without it, ``duet-edge provision``
still exists and says how to install it instead of breaking the whole ``duet-edge`` command.
"""

from __future__ import annotations

import typer

from edge.console import EXIT_NOT_INSTALLED

_EXTRA_MODULES = {"cryptography", "qrcode", "PIL", "tomlkit"}

_COMMANDS = ("init", "install-cert", "expiry", "ca", "broker-config", "bundle", "node",
             "register", "doctor", "label", "inventory")

app: typer.Typer
try:
    from provisioning.commands import app
except ModuleNotFoundError as exc:
    if (exc.name or "").split(".")[0] not in _EXTRA_MODULES:
        raise
    _missing = exc.name
    app = typer.Typer(help="Provision gateways, nodes and credentials (not installed).")

    def _not_installed() -> None:
        typer.echo(f"duet-edge provision needs the 'provisioning' extra ({_missing} is missing): "
                   "pip install 'duet-edge[provisioning]'", err=True)
        raise typer.Exit(EXIT_NOT_INSTALLED)

    _ANY_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}
    for _name in _COMMANDS:
        app.command(_name, context_settings=_ANY_ARGS, add_help_option=False)(_not_installed)

__all__ = ["app"]
