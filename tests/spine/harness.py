"""End-to-end harness: a gateway process, a twin receiver thread, configs on disk."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.ingest.columns import ReceivedBatch
from edge.ingest.receiver import Receiver, ReceiverSettings
from edge.ingest.store import TwinStore


def gateway_config(
    tmp: Path,
    broker_port: int,
    sources: list[tuple[str, str, str]],
    extra: str = "",
    gateway_id: str = "gw-e2e",
    mqtt_extra: str = "",
) -> Path:
    """Write a gateway TOML; ``sources`` are (name, type, port) triples."""
    lines = [
        "[gateway]",
        f'id = "{gateway_id}"',
        f'data_dir = "{tmp / "data"}"',
        "",
        "[buffer]",
        "commit_interval_s = 0.2",
        "commit_rows = 200",
        "",
        "[runtime]",
        "backoff_initial_s = 0.2",
        "backoff_max_s = 1.0",
        "drain_timeout_s = 3",
        "",
        "[uplinks.mqtt]",
        f"port = {broker_port}",
        "batch_size = 200",
        "max_inflight = 4",
        "keepalive_s = 5",
        mqtt_extra,
        "",
        "[log]",
        'format = "json"',
        'level = "INFO"',
        "",
    ]
    for name, type_, port in sources:
        lines += [
            "[[sources]]",
            f'name = "{name}"',
            f'type = "{type_}"',
            f'port = "{port}"',
            "interval_s = 0.001",
            "options = { silence_timeout_s = 3, warmup_s = 0 }",
            "",
        ]
    path = tmp / "gateway.toml"
    path.write_text("\n".join(lines) + extra)
    return path


class GatewayProcess:
    """``duet-edge run CONFIG`` as a real process."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from edge.cli import main; main()",
                    "run",
                    str(self.config),
                ],
                stdout=logf,
                stderr=logf,
                env=env,
            )

    def terminate(self, timeout: float = 15) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class ReceiverThread:
    """A twin receiver running in its own event loop thread."""

    def __init__(
        self,
        broker_port: int,
        store: Path,
        on_batch: Callable[[ReceivedBatch, int], None] | None = None,
        share_group: str | None = "duet-ingest",
        client_id: str = "duet-ingest-1",
        twin_store: TwinStore | None = None,
        **options: Any,
    ):
        settings = ReceiverSettings(
            port=broker_port, store_path=store, share_group=share_group, client_id=client_id,
            **options,
        )
        self.receiver = Receiver(settings, on_batch=on_batch, store=twin_store)
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.stop_event = asyncio.Event()
            await self.receiver.run_forever(self.stop_event)

        task = self.loop.create_task(main())
        with contextlib.suppress(asyncio.CancelledError, RuntimeError):
            self.loop.run_until_complete(task)

    def __enter__(self) -> ReceiverThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.receiver.subscribed.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.receiver.subscribed.is_set(), "receiver did not subscribe"
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop as `duet-edge ingest` does on SIGTERM: finish the group, disconnect cleanly."""
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
            self.thread.join(5)

        def cancel() -> None:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()

        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(cancel)
            self.thread.join(10)

    def rows(self, sensor: str | None = None) -> list[tuple]:  # type: ignore[type-arg]
        import sqlite3

        db = sqlite3.connect(self.receiver.settings.store_path)
        sql = "SELECT seq, sensor, quantity, result, phenomenon_ms, provenance FROM observations"
        args: tuple[str, ...] = ()
        if sensor:
            sql += " WHERE sensor=?"
            args = (sensor,)
        return list(db.execute(sql + " ORDER BY seq", args))


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def outbox_depth(tmp: Path, gateway_id: str = "gw-e2e", uplinks: tuple[str, ...] = ("mqtt",)) -> int:
    """Unconfirmed observations left in a stopped gateway's outbox (config from gateway_config)."""
    from edge.config import BufferSettings
    from edge.outbox import Outbox

    box = Outbox(tmp / "data" / "outbox.db", BufferSettings(), gateway_id, uplinks=uplinks)
    try:
        return box.depth()
    finally:
        box.close()


def twin_sequences(store: Path, gateway_id: str = "gw-e2e") -> tuple[list[int], list[tuple[int, int]]]:
    """(stored sequence numbers in order, announced gap ranges) of one gateway at the twin."""
    import sqlite3

    db = sqlite3.connect(store, timeout=10)
    try:
        seqs = [r[0] for r in db.execute(
            "SELECT seq FROM observations WHERE gateway=? ORDER BY seq", (gateway_id,))]
        gaps = [(a, b) for a, b in db.execute(
            "SELECT g.first_seq, g.last_seq FROM gap g JOIN gateway w ON w.id = g.gateway_id "
            "WHERE w.name=?", (gateway_id,))]
        return seqs, gaps
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # the receiver has not created its schema yet
            return [], []
        raise
    finally:
        db.close()


def missing_sequences(seqs: list[int], gaps: list[tuple[int, int]]) -> list[int]:
    """Numbers in 1..max(seqs) neither stored nor announced as never coming."""
    held = set(seqs)
    top = max(seqs, default=0)
    return [s for s in range(1, top + 1)
            if s not in held and not any(a <= s <= b for a, b in gaps)]
