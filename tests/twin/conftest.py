"""Fixtures for the twin-side tests: both stores (real SQLite, real PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
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
