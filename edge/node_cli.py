"""``duet-edge node …``: deploy the MicroPython firmware to a board, decode node frames.

``duet-edge node flash PORT --config node.json`` copies the firmware modules and a config
file to the board with mpremote (one chained invocation) and resets it. ``--dry-run`` prints
the exact command instead; the tests check that command. Real flashing is a manual step
documented in docs/firmware.md.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from edge.console import PlainTyper
from firmware import nodeproto

FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware"
# Modules copied to the board's root, in dependency order; main.py runs at boot.
FIRMWARE_FILES: tuple[str, ...] = (
    "hw.py", "flashstore.py", "nodeproto.py", "nodecfg.py", "bme280.py", "pmsensor.py",
    "traffic.py", "nodelink.py", "nodeapp.py", "main.py",
)

app = PlainTyper(no_args_is_help=True, help="Firmware nodes: flash and inspect.")


def node_defaults() -> dict[str, Any]:
    """The firmware's own defaults (firmware/nodecfg.py), so the two never disagree."""
    sys.path.insert(0, str(FIRMWARE_DIR))
    try:
        import nodecfg
    finally:
        sys.path.remove(str(FIRMWARE_DIR))
    return dict(nodecfg.DEFAULTS)


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate a node config against the firmware defaults: known keys, same JSON types."""
    defaults = node_defaults()
    for key, value in config.items():
        if key not in defaults:
            allowed = ", ".join(sorted(defaults))
            raise ValueError(f"unknown node config key {key!r}; allowed: {allowed}")
        want = type(defaults[key])
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if type(value) is not want:
            raise ValueError(
                f"node config key {key!r}: {value!r} is {type(value).__name__}, "
                f"expected {want.__name__} (default {defaults[key]!r})")
    if config.get("kind", "air") not in ("air", "traffic"):
        raise ValueError(f"node config key 'kind': {config['kind']!r}; allowed: air, traffic")
    return config


def flash_command(port: str, config_file: Path | None, mpremote: str = "mpremote") -> list[str]:
    """The single chained mpremote command that deploys the firmware (and config) to ``port``."""
    cmd = [mpremote, "connect", port]
    for name in FIRMWARE_FILES:
        cmd += ["fs", "cp", str(FIRMWARE_DIR / name), f":{name}", "+"]
    if config_file is not None:
        cmd += ["fs", "cp", str(config_file), ":config.json", "+"]
    cmd += ["reset"]
    return cmd


EXIT_MISSING_TOOL = 3  # docs/firmware.md: mpremote (the `firmware` extra) is missing


def find_mpremote() -> str | None:
    """mpremote on PATH or beside this Python (a venv's bin), or None when not installed."""
    found = shutil.which("mpremote")
    if found:
        return found
    beside = Path(sys.executable).parent / "mpremote"
    return str(beside) if beside.is_file() else None


@app.command()
def flash(
    port: Annotated[str, typer.Argument(help="Serial port of the board, e.g. /dev/ttyUSB0.")],
    config: Annotated[Path | None, typer.Option(
        help="Node config (JSON) merged over the firmware defaults on the board.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the mpremote command, do nothing.")] = False,
) -> None:
    """Copy the firmware and a config to a MicroPython board with mpremote, then reset it."""
    config_file: Path | None = None
    if config is not None:
        try:
            data = check_config(json.loads(config.read_text()))
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--config") from exc
        tmp = Path(tempfile.mkdtemp(prefix="duet-node-")) / "config.json"
        tmp.write_text(json.dumps(data, sort_keys=True))
        config_file = tmp
    if dry_run:
        typer.echo(" ".join(flash_command(port, config_file)))
        return
    mpremote = find_mpremote()
    if mpremote is None:
        typer.echo("error: mpremote is not installed; install the firmware extra: "
                   "pip install 'duet-edge[firmware]'", err=True)
        raise typer.Exit(EXIT_MISSING_TOOL)
    result = subprocess.run(flash_command(port, config_file, mpremote), check=False)
    if result.returncode != 0:
        typer.echo(f"mpremote failed with exit code {result.returncode}", err=True)
        raise typer.Exit(result.returncode)
    typer.echo(f"flashed {len(FIRMWARE_FILES)} files to {port}")


@app.command()
def decode(
    frame_hex: Annotated[str, typer.Argument(help="A frame in hex, with or without 00.")],
) -> None:
    """Decode one node-protocol frame and print it as JSON (or the reason it is rejected)."""
    raw = bytes.fromhex(frame_hex.replace(" ", ""))
    blocks = nodeproto.FrameReader().feed(raw + b"\x00")
    if not blocks:
        typer.echo(json.dumps({"error": "empty"}))
        raise typer.Exit(1)
    try:
        typer.echo(json.dumps(nodeproto.decode_message(blocks[0])))
    except nodeproto.ProtocolError as exc:
        typer.echo(json.dumps({"error": exc.reason, "detail": exc.detail}))
        raise typer.Exit(1) from None
