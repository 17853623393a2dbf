"""Batches and row readers shared by the twin tests."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import psycopg

from edge.contract import decode_batch, encode_batch
from edge.ingest.rows import IngestBatch, from_decoded
from edge.ingest.store import is_postgres_url
from edge.model import Batch, Observation
from tests.sta.helpers import make_obs


def observations(gw: str, seqs: Sequence[int], **kw: object) -> list[Observation]:
    return [make_obs(gw, s, **kw) for s in seqs]  # type: ignore[arg-type]


def batch(gw: str, seqs: Sequence[int], **kw: object) -> IngestBatch:
    """Observations through the real wire codec, then into columns (as the receiver does)."""
    payload = encode_batch(Batch(gw, tuple(observations(gw, seqs, **kw))))
    return from_decoded(decode_batch(payload))


def stored_keys(target: str) -> list[tuple[str, int]]:
    """Every (gateway, seq) the store holds, duplicates included (so tests can see them)."""
    sql = "SELECT gateway, seq FROM observations ORDER BY gateway, seq"
    if is_postgres_url(target):
        with psycopg.connect(target) as conn:
            return [(str(g), int(s)) for g, s in conn.execute(sql)]
    db = sqlite3.connect(target)
    try:
        return [(str(g), int(s)) for g, s in db.execute(sql)]
    finally:
        db.close()


def query(target: str, sql: str) -> list[tuple[object, ...]]:
    if is_postgres_url(target):
        with psycopg.connect(target) as conn:
            return list(conn.execute(sql))  # type: ignore[arg-type]
    db = sqlite3.connect(target)
    try:
        return list(db.execute(sql))
    finally:
        db.close()


def execute(target: str, sql: str) -> None:
    """Run a statement that returns no rows (DDL) on either store."""
    if is_postgres_url(target):
        with psycopg.connect(target) as conn:
            conn.execute(sql)  # type: ignore[arg-type]
        return
    db = sqlite3.connect(target, isolation_level=None)
    try:
        db.execute(sql)
    finally:
        db.close()
