"""`duet-edge demo`: the whole chain on one machine, no hardware needed.

Emulated SDS011 and PMS5003 sensors speak their real protocols on pseudo-terminals → the
gateway reads them exactly as it would /dev/ttyUSB0 → durable outbox → MQTT (a Mosquitto
broker started for the demo on a free local port) → the twin receiver, whose latest
observations are shown in a live table.

Without a Mosquitto binary the demo says so and hands batches to the receiver in-process,
through the same contract codec (nothing else changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from edge.config import GatewayConfig, parse_config
from edge.contract import encode_batch
from edge.ingest.receiver import Receiver, ReceiverSettings
from edge.ingest.sqlite_store import count_rows, latest_rows
from edge.logs import setup_logging
from edge.model import Delivery
from edge.quantities import QUANTITIES
from edge.runtime import Gateway
from edge.seams import Uplink, UplinkPort

console = Console()


def demo(
    duration: float = typer.Option(0, help="Stop after this many seconds (0: run until Ctrl-C)."),
    workdir: Path | None = typer.Option(
        None, help="Where to keep the demo's files (default: a temp dir)."
    ),
    rate: float = typer.Option(1.0, help="Frames per second per emulated sensor."),
) -> None:
    """Emulated sensors → gateway → Mosquitto → twin receiver, with a live table."""
    setup_logging("WARNING", "text")
    work = workdir or Path(tempfile.mkdtemp(prefix="duet-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    exit_code = asyncio.run(_demo(work, duration, rate))
    raise typer.Exit(exit_code)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_mosquitto(work: Path) -> tuple[subprocess.Popen[bytes] | None, int]:
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if binary is None:
        return None, 0
    port = _free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest none\n")
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None, 0
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc, port
        time.sleep(0.05)
    proc.kill()
    return None, 0


def _config(
    work: Path, broker_port: int, sds_port: str, pms_port: str, web_port: int = 0
) -> GatewayConfig:
    uplink = f"[uplinks.mqtt]\nport = {broker_port}\n" if broker_port else ""
    web = f"[web]\nport = {web_port}\n" if web_port else ""
    return parse_config(
        f"""
[gateway]
id = "gw-demo"
name = "duet-edge demo"
data_dir = "{work / "gateway"}"

[[sources]]
name = "pm-sds011"
type = "sds011"
port = "{sds_port}"
options = {{ warmup_s = 0 }}  # emulated sensors need no fan spin-up

[[sources]]
name = "pm-pms5003"
type = "pms5003"
port = "{pms_port}"
options = {{ warmup_s = 0 }}

[buffer]
commit_interval_s = 0.5

[runtime]
backoff_max_s = 5
{uplink}{web}""",
        source="demo",
    )


class LoopbackUplink:
    """Used only when no broker can be started: batches go to the receiver in-process."""

    name = "loopback"

    def __init__(self, receiver: Receiver, gateway_id: str) -> None:
        self.receiver = receiver
        self.topic = f"duet/v1/{gateway_id}/obs"

    async def run(self, port: UplinkPort) -> None:
        port.health.state = "connected"
        port.rewind()
        while True:
            batch = port.next_batch(500)
            if not batch:
                await port.wait_for_data()
                continue
            await self.receiver.handle(
                self.topic, encode_batch(batch, sent_ms=time.time_ns() // 1_000_000)
            )
            port.settle(batch, Delivery(confirmed=batch.sequences), time.monotonic())


async def _demo(work: Path, duration: float, rate: float) -> int:
    from edge.emulation import emulator

    broker, broker_port = _start_mosquitto(work)
    if broker is None:
        console.print(
            "[yellow]Mosquitto is not installed or would not start: the demo runs without a broker "
            "and hands batches to the twin receiver in-process. Install it with "
            "`apt-get install mosquitto` for the real path.[/yellow]"
        )
    sds = emulator("sds011")(link_path=work / "ttySDS011", interval_s=1 / rate, seed=11).start()
    pms = emulator("pms5003")(link_path=work / "ttyPMS5003", interval_s=1 / rate, seed=12).start()
    receiver = Receiver(
        ReceiverSettings(port=broker_port, client_id="duet-demo-ingest", store_path=work / "twin.db")
    )
    web_port = _free_port() if importlib.util.find_spec("aiohttp") else 0  # the `web` extra
    config = _config(work, broker_port, sds.port, pms.port, web_port)
    uplinks: list[Uplink] | None = (
        None if broker else [LoopbackUplink(receiver, config.gateway.id)]
    )
    gateway = Gateway(config, uplinks=uplinks)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    console.print(f"[bold]duet-edge demo[/bold] — files in {work}")
    console.print(
        f"  sensors: SDS011 on {sds.port}, PMS5003 on {pms.port} (emulated, real protocol)"
    )
    if broker:
        console.print(
            f"  broker:  Mosquitto on 127.0.0.1:{broker_port}; receiver: MQTT 5 shared subscription"
        )
    if web_port:
        console.print(
            f"  status page: [bold]http://127.0.0.1:{web_port}/[/bold] (open it in a browser)"
        )
    console.print("  Ctrl-C to stop.\n")
    gateway_task = asyncio.create_task(gateway.run(stop))
    receiver_task = asyncio.create_task(receiver.run_forever(stop)) if broker else None
    started = time.monotonic()
    try:
        with Live(_view(gateway, receiver), console=console,
                  refresh_per_second=2) as live:
            while not stop.is_set():
                await asyncio.sleep(0.5)
                live.update(_view(gateway, receiver))
                if duration and time.monotonic() - started >= duration:
                    stop.set()
    finally:
        stop.set()
        await asyncio.gather(gateway_task, return_exceptions=True)
        if receiver_task is not None:
            await asyncio.sleep(0.5)  # let the last batches arrive
            receiver_task.cancel()
            await asyncio.gather(receiver_task, return_exceptions=True)
        sds.stop()
        pms.stop()
        if broker is not None:
            broker.terminate()
            broker.wait(5)
    received = count_rows(work / "twin.db")
    console.print(
        f"\nThe twin received {received} observations "
        f"({receiver.counters.duplicates} duplicates ignored, "
        f"{receiver.counters.rejected_messages} messages rejected)."
    )
    await receiver.close()
    return 0 if received > 0 else 1


def _view(gateway: Gateway, receiver: Receiver) -> Group:
    table = Table(title="Latest observations received by the twin", expand=False)
    for column in ("sensor", "quantity", "value", "unit", "seq", "quality", "age"):
        table.add_column(column)
    latest: dict[tuple[str, str], sqlite3.Row] = {}
    now_ms = time.time_ns() // 1_000_000
    for row in latest_rows(Path(receiver.settings.store_path), 200):
        latest.setdefault((row["sensor"], row["quantity"]), row)
    for (_sensor, quantity), row in sorted(latest.items()):
        if quantity.startswith("nc"):
            continue  # particle counts: in the store, not in the table
        q = QUANTITIES.get(quantity)
        table.add_row(
            row["sensor"],
            q.label if q else row["quantity"],
            f"{row['result']:.1f}",
            q.unit_symbol if q else row["unit"],
            str(row["seq"]),
            row["quality"] or "not evaluated",
            f"{(now_ms - row['phenomenon_ms']) / 1000:.1f} s",
        )
    status = gateway.status()
    uplink = ", ".join(f"{h.name}: {h.state}" for h in gateway.uplink_health.values()) or "none"
    line = (
        f"gateway: {status['received']} committed, buffer {status['buffer_depth']}, uplink {uplink} | "
        f"twin: {receiver.counters.observations_new} stored, {receiver.counters.duplicates} duplicates"
    )
    return Group(table, line)
