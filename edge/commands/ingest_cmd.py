"""`duet-edge ingest`: the twin-side receiver.

Exit codes: 0 stopped by SIGTERM/SIGINT (or ``--check`` passed); 2 a setting is wrong (one line
on stderr says which and how to fix it: restarting cannot help); 3 the broker refused the
subscription (the receiver's identity may not read the topics).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import time
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edge.ingest.receiver import Receiver, ReceiverSettings, SubscriptionRefused
from edge.ingest.store import TwinStore, is_postgres_url, open_store
from edge.logs import setup_logging
from edge.tls import TlsSettings

if TYPE_CHECKING:
    from edge.ingest.sta_forward import StaForwarder
    from edge.sensorthings import GeoPoint

EXIT_CONFIG = 2
EXIT_REFUSED = 3
RECEIVER_CN_PREFIX = "receiver-"


class SettingError(Exception):
    """A wrong option or file; the text is the one line shown to the operator."""
STOP_TIMEOUT_S = 10.0  # for the group in hand to be answered and acknowledged


def ingest(
    host: str = typer.Option("127.0.0.1", help="MQTT broker host."),
    port: int | None = typer.Option(
        None, help="MQTT broker port (default 8883 with --ca-file, else 1883)."),
    store: str = typer.Option(
        "twin.db", help="Where to store: an SQLite file, or a postgresql://user@host/db URL "
        "(password from ~/.pgpass or PGPASSFILE, never in the URL)."),
    topic_prefix: str = typer.Option("duet/v1", help="Topic prefix the gateways publish under."),
    group: str = typer.Option(
        "duet-ingest", help="Shared-subscription group: instances split the load ('' = none)."
    ),
    client_id: str = typer.Option("duet-ingest-1", help="Unique per receiver instance."),
    forward_sta: str | None = typer.Option(
        None, help="Also forward to a SensorThings server (base URL, e.g. https://frost/v1.1)."
    ),
    forward_sta_config: Path | None = typer.Option(
        None, help="TOML file with the SensorThings server settings (base_url, auth, tls, "
        "headers), same keys as [uplinks.sensorthings_http]; see docs/twin.md."),
    gateway_locations: Path | None = typer.Option(
        None,
        help="JSON file mapping gateway ids to [lon, lat] for --forward-sta: SensorThings "
        "servers derive each Observation's FeatureOfInterest from the gateway's Location.",
    ),
    ca_file: Path | None = typer.Option(None, help="TLS: CA that signed the broker's certificate."),
    cert_file: Path | None = typer.Option(
        None, help="TLS: this receiver's client certificate (its CN must start with 'receiver-')."
    ),
    key_file: Path | None = typer.Option(None, help="TLS: this receiver's private key."),
    http: str | None = typer.Option(
        None, help="Serve /metrics and /healthz on HOST:PORT (e.g. 127.0.0.1:9310; web extra)."),
    group_max: int = typer.Option(500, min=1, max=10_000,
                                  help="Most messages stored in one transaction."),
    group_linger_ms: int = typer.Option(
        50, min=0, max=1000, help="When fewer messages wait, wait this long for more before "
        "storing (fewer commits, fewer disk writes; adds at most this much latency)."),
    dictionary_cache: int = typer.Option(
        32_768, min=1, max=10_000_000, help="Session dictionaries (contract v2) each worker "
        "keeps, about 6 KB each: set it above the number of gateways."),
    check: bool = typer.Option(False, "--check",
                               help="Check the settings and the store, then exit."),
    log_format: str = typer.Option("json", help="json or text"),
) -> None:
    """Receive compact batches from gateways, validate, de-duplicate and store them."""
    setup_logging("INFO", log_format)
    try:
        tls = _tls(ca_file, cert_file, key_file)
        settings = ReceiverSettings(
            tls=tls,
            host=host,
            port=port if port is not None else (8883 if tls else 1883),
            topic_prefix=topic_prefix,
            share_group=group or None,
            client_id=client_id,
            store_path=store if is_postgres_url(store) else Path(store),
            max_group=group_max,
            group_linger_s=group_linger_ms / 1000,
            dictionary_cache=dictionary_cache,
            forward=bool(forward_sta or forward_sta_config),
        )
        forwarder = _forwarder(forward_sta, forward_sta_config, gateway_locations, store)
        where = _where(gateway_locations)
        http_address = _address(http) if http else None
        if http_address is not None:
            _require_web_extra()
    except SettingError as exc:
        typer.echo(f"ingest: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    receiver = Receiver(settings)
    try:
        code = asyncio.run(_main(receiver, forwarder, http_address, check, where))
    except SettingError as exc:
        typer.echo(f"ingest: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    except SubscriptionRefused as exc:
        typer.echo(f"ingest: {exc}", err=True)
        raise typer.Exit(EXIT_REFUSED) from None
    if check:
        typer.echo("ingest: settings and store OK")
    raise typer.Exit(code)


# -- settings -------------------------------------------------------------------------------


def _tls(ca_file: Path | None, cert_file: Path | None, key_file: Path | None) -> TlsSettings | None:
    if not (ca_file or cert_file or key_file):
        return None
    for option, path in (("--ca-file", ca_file), ("--cert-file", cert_file),
                         ("--key-file", key_file)):
        if path is None:
            continue
        if not path.is_file():
            raise SettingError(f"{option} {path}: no such file")
        try:
            path.read_bytes()
        except OSError as exc:
            raise SettingError(f"{option} {path}: cannot read it ({exc.strerror}); the "
                               f"receiver's user needs read access") from None
    if cert_file is not None and key_file is None:
        raise SettingError("--cert-file needs --key-file (the certificate's private key)")
    if key_file is not None and cert_file is None:
        raise SettingError("--key-file needs --cert-file")
    tls = TlsSettings(ca_file=ca_file, cert_file=cert_file, key_file=key_file)
    try:
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if cert_file is not None:
            ctx.load_cert_chain(str(cert_file), str(key_file))
    except ssl.SSLError as exc:
        raise SettingError(f"TLS files unusable ({exc.reason or exc}): check that "
                           f"--cert-file {cert_file} and --key-file {key_file} belong together "
                           f"and --ca-file {ca_file} is a PEM CA") from None
    if cert_file is not None:
        _check_receiver_identity(cert_file)
    return tls


def _check_receiver_identity(cert_file: Path) -> None:
    """The broker ACL (provision broker-config) lets only CN receiver-… read every gateway."""
    try:
        from cryptography import x509
        from cryptography.x509.oid import NameOID
    except ModuleNotFoundError:  # provisioning extra absent: the broker will tell
        return
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except ValueError:
        raise SettingError(f"--cert-file {cert_file}: not a PEM certificate") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(names[0].value) if names else ""
    if not cn.startswith(RECEIVER_CN_PREFIX):
        raise SettingError(
            f"--cert-file {cert_file} is for {cn!r}, not a receiver: the broker's ACL lets only "
            f"CN {RECEIVER_CN_PREFIX}… read every gateway's topics (it would receive nothing); "
            f"issue one with `duet-edge provision ca issue receiver-<name> --role receiver`")


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingError(f"--http {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9310")
    return host, int(port)


def _require_web_extra() -> None:
    try:
        import aiohttp  # noqa: F401
        import prometheus_client  # noqa: F401
    except ModuleNotFoundError:
        raise SettingError("--http needs the web extra: pip install 'duet-edge[web]'") from None


def _where(path: Path | None) -> dict[str, GeoPoint]:
    if path is None:
        return {}
    from edge.ingest.sta_forward import load_locations

    try:
        return load_locations(path)
    except (OSError, ValueError) as exc:
        raise SettingError(f"--gateway-locations: {exc}") from None


def _forwarder(url: str | None, config: Path | None, locations: Path | None,
               store: str) -> StaForwarder | None:
    if not (url or config):
        return None
    from edge.ingest.sta_forward import StaForwarder, load_locations
    from edge.sensorthings.settings import SensorThingsHttpSettings

    try:
        where = load_locations(locations) if locations else None
    except (OSError, ValueError) as exc:
        raise SettingError(f"--gateway-locations: {exc}") from None
    # the SensorThings id cache: beside an SQLite store, else in the unit's StateDirectory
    data_dir = (Path(os.environ.get("STATE_DIRECTORY", ".")) if is_postgres_url(store)
                else Path(store).parent)
    if config is not None:
        try:
            raw = tomllib.loads(config.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingError(f"--forward-sta-config {config}: {exc}") from None
        section = raw.get("sensorthings", raw)
        if url:
            section = {**section, "base_url": url}
        try:
            settings = SensorThingsHttpSettings.model_validate(section)
        except ValueError as exc:
            first = str(exc).splitlines()
            raise SettingError(f"--forward-sta-config {config}: "
                               f"{' '.join(first[1:3]) if len(first) > 2 else exc}") from None
    else:
        assert url is not None
        try:
            settings = SensorThingsHttpSettings(base_url=url)
        except ValueError:
            raise SettingError(f"--forward-sta {url!r}: expected the service root, e.g. "
                               f"https://frost.example/FROST-Server/v1.1") from None
    return StaForwarder(settings, data_dir, where)


# -- running --------------------------------------------------------------------------------


async def _open_checked(receiver: Receiver, target: str) -> None:
    try:
        await receiver.open()
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SettingError(f"cannot open the store {_safe_target(target)}: {first}") from None


def _safe_target(target: str) -> str:
    """A store URL without a password, for messages."""
    if "@" in target and "://" in target:
        scheme, rest = target.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}@{host}"
    return target


async def _main(receiver: Receiver, forwarder: StaForwarder | None,
                http_address: tuple[str, int] | None, check: bool,
                where: dict[str, GeoPoint] | None = None) -> int:
    target = str(receiver.settings.store_path)
    await _open_checked(receiver, target)
    for gateway, point in (where or {}).items():  # PostGIS points for queries and exports
        await receiver.store.set_location(gateway, point.lon, point.lat, point.alt)
    if check:
        await receiver.close()
        return 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    tasks = [asyncio.create_task(receiver.run_forever(stop)),
             asyncio.create_task(receiver.log_progress(stop))]
    side_stores: list[TwinStore] = []
    if forwarder is not None:
        from edge.ingest.forwarding import ForwardLoop

        forward_store = open_store(receiver.settings.store_path)
        await forward_store.open()
        side_stores.append(forward_store)
        tasks.append(asyncio.create_task(ForwardLoop(forward_store, forwarder).run(stop)))
    if http_address is not None:
        from edge.ingest.metrics import ReceiverMetrics, serve_http

        metrics = ReceiverMetrics()
        receiver.observer = metrics
        fleet_store = open_store(receiver.settings.store_path)
        await fleet_store.open()
        side_stores.append(fleet_store)
        tasks.append(asyncio.create_task(
            serve_http(receiver, metrics, fleet_store, *http_address, stop)))
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            failure = None if task is stopper else task.exception()
            if failure is not None:
                raise failure
    finally:
        stop.set()
        # the receiver answers and acknowledges the group it is on, then disconnects cleanly;
        # if it is stuck (a broker that does not answer), what it did not acknowledge comes back
        with contextlib.suppress(TimeoutError, Exception):
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await asyncio.shield(tasks[0])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        receiver.log_summary(time.monotonic() - started)
        await receiver.close()
        for s in side_stores:
            await s.close()
    return 0

