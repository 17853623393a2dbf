"""`duet-edge ingest`: the twin-side receiver."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import typer

from edge.ingest.receiver import Receiver, ReceiverSettings
from edge.logs import setup_logging
from edge.tls import TlsSettings


def ingest(
    host: str = typer.Option("127.0.0.1", help="MQTT broker host."),
    port: int = typer.Option(1883, help="MQTT broker port."),
    store: Path = typer.Option(Path("twin.db"), help="SQLite store for received observations."),
    topic_prefix: str = typer.Option("duet/v1", help="Topic prefix the gateways publish under."),
    group: str = typer.Option(
        "duet-ingest", help="Shared-subscription group: instances split the load."
    ),
    client_id: str = typer.Option("duet-ingest-1", help="Unique per receiver instance."),
    forward_sta: str | None = typer.Option(
        None, help="Also forward to a SensorThings server (base URL, e.g. https://frost/v1.1)."
    ),
    gateway_locations: Path | None = typer.Option(
        None,
        help="JSON {gateway id: [lon, lat]} for --forward-sta: SensorThings servers derive "
        "each Observation's FeatureOfInterest from the gateway's Location.",
    ),
    ca_file: Path | None = typer.Option(None, help="TLS: CA that signed the broker's certificate."),
    cert_file: Path | None = typer.Option(
        None, help="TLS: this receiver's client certificate (its CN must start with 'receiver-')."
    ),
    key_file: Path | None = typer.Option(None, help="TLS: this receiver's private key."),
    log_format: str = typer.Option("json", help="json or text"),
) -> None:
    """Receive compact batches from gateways, validate, de-duplicate and store them."""
    setup_logging("INFO", log_format)
    tls = (
        TlsSettings(ca_file=ca_file, cert_file=cert_file, key_file=key_file)
        if ca_file or cert_file
        else None
    )
    settings = ReceiverSettings(
        tls=tls,
        host=host,
        port=port,
        topic_prefix=topic_prefix,
        share_group=group or None,
        client_id=client_id,
        store_path=store,
    )
    forward = None
    if forward_sta:
        from edge.ingest.sta_forward import StaForwarder

        forward = StaForwarder.from_url(forward_sta, store.parent, gateway_locations)
    asyncio.run(_serve(Receiver(settings, forward=forward)))


async def _serve(receiver: Receiver) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(receiver.run_forever(stop))
    await stop.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    receiver.store.close()
