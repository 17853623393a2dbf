"""Fixtures for the twin-side tests: both stores (real SQLite, real PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edge.ingest.store import TwinStore, open_store
from tests.plugins.postgres import pg_dsn, pg_private, pg_server  # noqa: F401
from tests.plugins.sta_server import sta_server  # noqa: F401


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "twin.db")
    return str(request.getfixturevalue("pg_dsn"))


@pytest.fixture
async def store(store_target: str) -> AsyncIterator[TwinStore]:
    s = open_store(store_target)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`duet-edge ingest` run in-process configures the root logger: undo it after each test,
    so later tests' command output is not mixed with log lines."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
