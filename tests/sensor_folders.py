"""Sensor folders that exist only for a test: written to a temporary directory and added to
nothing but ``edge.sensors.__path__``, so the registry finds them as it finds the built-in
ones. No file of the repository is edited. Also: running the real gateway until it took in
so many observations."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import edge.sensors
from edge import plugins
from edge.runtime import Gateway


def _forget(names: list[str]) -> None:
    plugins.sensors.cache_clear()
    plugins.source_kinds.cache_clear()
    prefixes = tuple(f"edge.sensors.{name}" for name in names)
    for module in [m for m in sys.modules if m.startswith(prefixes)]:
        del sys.modules[module]


@contextmanager
def sensor_folders(root: Path, folders: dict[str, dict[str, str]]) -> Iterator[dict[str, Path]]:
    """Write ``folders`` (sensor name → file name → text, dedented) under ``root`` and put
    ``root`` on ``edge.sensors.__path__`` for the duration; yields name → folder."""
    names = list(folders)
    assert not set(names) & set(plugins.sensors()), "a test sensor shadows a real one"
    paths = {}
    for name, files in folders.items():
        folder = root / name
        folder.mkdir(parents=True)
        for filename, text in files.items():
            (folder / filename).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        paths[name] = folder
    edge.sensors.__path__.append(str(root))
    _forget(names)
    try:
        yield paths
    finally:
        edge.sensors.__path__.remove(str(root))
        _forget(names)
    assert not set(names) & set(plugins.sensors())


def run_gateway_until(gateway: Gateway, observations: int, timeout_s: float = 10.0) -> None:
    """Run ``gateway`` until it took in ``observations`` (or ``timeout_s`` passed), then stop
    it the way a signal does and wait for it to finish."""

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(gateway.run(stop))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while gateway.counters.observations_in < observations and loop.time() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(main())
