"""`duet-edge oslo-export`: the twin store's Things, Sensors, Datastreams and Observations as
JSON-LD in the Flemish OSLO terms (SOSA/SSN; OSLO Verkeersmetingen for traffic counts).

Exit codes: 0 written; 2 a wrong option or the store cannot be read (one line on stderr).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import typer

from edge.ingest.oslo import DEFAULT_BASE, export
from edge.ingest.store import StoredObservation, is_postgres_url, open_store
from edge.sensorthings import GeoPoint

EXIT_USAGE = 2


def oslo_export(
    store: str = typer.Option("twin.db", help="The receiver's store: SQLite file or "
                              "postgresql:// URL."),
    gateway: str | None = typer.Option(None, help="Only this gateway."),
    since: str | None = typer.Option(None, help="Phenomenon time from (ISO 8601, UTC if no "
                                     "zone), e.g. 2026-12-05T00:00Z."),
    until: str | None = typer.Option(None, help="Phenomenon time until (exclusive)."),
    limit: int = typer.Option(10_000, min=1, max=1_000_000, help="Most observations."),
    gateway_locations: Path | None = typer.Option(
        None, help="JSON {gateway id: [lon, lat]}: gateway positions (as for ingest)."),
    base_iri: str = typer.Option(DEFAULT_BASE, help="Base of the IRIs minted for gateways, "
                                 "sensors and datastreams."),
    out: Path | None = typer.Option(None, help="Write here instead of standard output."),
) -> None:
    """Export stored observations as OSLO / SOSA JSON-LD."""
    try:
        since_ms = parse_time(since, "--since")
        until_ms = parse_time(until, "--until")
        locations = _locations(gateway_locations)
    except ValueError as exc:
        typer.echo(f"oslo-export: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    if not is_postgres_url(store) and not Path(store).exists():
        typer.echo(f"oslo-export: {store}: no such store (give the receiver's --store)",
                   err=True)
        raise typer.Exit(EXIT_USAGE)
    try:
        rows, known = asyncio.run(_read(store, gateway, since_ms, until_ms, limit))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        typer.echo(f"oslo-export: cannot read the store: {first}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    where = {gw: GeoPoint(*p) for gw, p in known.items()} | locations  # the file wins
    text = json.dumps(export(rows, where, base_iri), ensure_ascii=False, indent=1)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"{len(rows)} observations written to {out}", err=True)


def parse_time(text: str | None, option: str) -> int | None:
    """ISO 8601 → ms since the epoch (UTC when no zone is given)."""
    if text is None:
        return None
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{option} {text!r}: expected ISO 8601, e.g. 2026-12-05T00:00Z"
                         ) from None
    if stamp.tzinfo is None:
        from datetime import UTC

        stamp = stamp.replace(tzinfo=UTC)
    return int(stamp.timestamp() * 1000)


def _locations(path: Path | None) -> dict[str, GeoPoint]:
    if path is None:
        return {}
    from edge.ingest.sta_forward import load_locations

    try:
        return load_locations(path)
    except OSError as exc:
        raise ValueError(f"--gateway-locations {path}: {exc.strerror}") from None


async def _read(store: str, gateway: str | None, since_ms: int | None, until_ms: int | None,
                limit: int) -> tuple[list[StoredObservation],
                                     dict[str, tuple[float, float, float | None]]]:
    s = open_store(store)
    await s.open()
    try:
        return (await s.read_observations(gateway, since_ms, until_ms, limit),
                await s.locations())
    finally:
        await s.close()
